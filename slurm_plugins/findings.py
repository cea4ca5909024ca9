"""What a check found, how bad it is, and what should happen to the node.

Severity says how bad; action says what to do. The XID table follows the resolution buckets
of NVIDIA's XID catalog: hardware faults drain the node (79 needs a reboot), application
faults are the job's problem and leave the node in service, and informational XIDs are
recorded but ignored. Sites override single XIDs in the [xid] section of health.conf.
"""

from __future__ import annotations

FATAL, WARNING, INFO = "fatal", "warning", "info"
SEVERITIES = (FATAL, WARNING, INFO)
DRAIN, REBOOT, RESTART_APP, NONE, IGNORE = "drain", "reboot", "restart_app", "none", "ignore"
ACTIONS = (DRAIN, REBOOT, RESTART_APP, NONE, IGNORE)
# Actions that take the node out of service; a prolog fails only for these.
NODE_ACTIONS = (DRAIN, REBOOT)
DETAIL_MAX = 300


class Finding:
    """One problem on one node (optionally one GPU), as reported to the portal."""

    __slots__ = ("action", "check", "detail", "gpu", "severity", "xid")

    def __init__(self, check: str, severity: str, action: str, detail: str, *,
                 gpu: int | None = None, xid: int | None = None) -> None:
        if severity not in SEVERITIES or action not in ACTIONS:
            raise ValueError(f"bad severity/action {severity}/{action}")
        self.check, self.severity, self.action = check, severity, action
        self.detail = detail[:DETAIL_MAX]
        self.gpu, self.xid = gpu, xid

    @property
    def takes_node_out(self) -> bool:
        return self.severity == FATAL and self.action in NODE_ACTIONS

    def as_dict(self) -> dict:
        return {"check": self.check, "severity": self.severity, "action": self.action,
                "gpu": self.gpu, "xid": self.xid, "detail": self.detail}

    def __repr__(self) -> str:
        return f"Finding({self.check!r}, {self.severity!r}, {self.action!r}, gpu={self.gpu}, xid={self.xid})"


# XID -> (severity, action, short description). From NVIDIA's XID catalog and its
# resolution buckets (RESET_GPU / RESTART_BM / RESTART_APP / IGNORE / app-caused).
XID_TABLE: dict[int, tuple[str, str, str]] = {
    # Application errors: the job's fault; the node stays in service.
    13: (WARNING, NONE, "graphics engine exception (application error)"),
    31: (WARNING, NONE, "GPU memory page fault (application error)"),
    43: (WARNING, NONE, "GPU stopped processing (application error)"),
    45: (WARNING, NONE, "preemptive cleanup after a previous error"),
    68: (WARNING, NONE, "video decoder exception (application error)"),
    # Recorded for the history, nothing to do.
    63: (INFO, IGNORE, "ECC page retirement / row remap recorded"),
    92: (INFO, IGNORE, "high single-bit ECC error rate"),
    # Contained error: the driver killed the affected application only.
    94: (WARNING, RESTART_APP, "contained ECC error: restart the application"),
    # Hardware faults: take the node out of service.
    48: (FATAL, DRAIN, "double-bit ECC error"),
    61: (FATAL, DRAIN, "internal micro-controller breakpoint"),
    62: (FATAL, DRAIN, "internal micro-controller halt"),
    64: (FATAL, DRAIN, "ECC page retirement / row remapper recording failure"),
    74: (FATAL, DRAIN, "NVLink error"),
    79: (FATAL, REBOOT, "GPU has fallen off the bus"),
    95: (FATAL, DRAIN, "uncontained ECC error"),
    119: (FATAL, DRAIN, "GSP RPC timeout"),
    120: (FATAL, DRAIN, "GSP error"),
    140: (FATAL, DRAIN, "unrecovered ECC error"),
}
# An XID nobody classified: a human should look, but it is no reason to drain on its own.
UNKNOWN_XID = (WARNING, NONE, "unclassified XID")


def classify_xid(xid: int, overrides: dict[int, tuple[str, str]] | None = None) -> tuple[str, str, str]:
    """(severity, action, description) for an XID, with the site's overrides applied."""
    severity, action, text = XID_TABLE.get(xid, UNKNOWN_XID)
    if overrides and xid in overrides:
        severity, action = overrides[xid]
    return severity, action, text


def xid_finding(xid: int, gpu: int | None, overrides: dict[int, tuple[str, str]] | None = None,
                extra: str = "") -> Finding:
    severity, action, text = classify_xid(xid, overrides)
    where = f"GPU {gpu}" if gpu is not None else "unknown GPU"
    detail = f"Xid {xid} on {where}: {text}" + (f" ({extra})" if extra else "")
    return Finding("xid", severity, action, detail, gpu=gpu, xid=xid)


def parse_override(value: str) -> tuple[str, str]:
    """'fatal drain' -> ('fatal', 'drain'), for the [xid] section of health.conf."""
    parts = value.replace(",", " ").split()
    if len(parts) != 2 or parts[0] not in SEVERITIES or parts[1] not in ACTIONS:
        raise ValueError(f"expected '<{'|'.join(SEVERITIES)}> <{'|'.join(ACTIONS)}>', got {value!r}")
    return parts[0], parts[1]

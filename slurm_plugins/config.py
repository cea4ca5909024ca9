"""health.conf: where the portal is, where to spool, what counts as healthy.

Found, in order, at $PORTAL_HEALTH_CONF, then next to slurm.conf (the directory of
$SLURM_CONF, then of /etc/slurm/slurm.conf, symlinks resolved), like gres.conf. Without a
file the built-in defaults apply. `%n` in a path becomes the node name, as in slurm.conf, so
one file serves every node (and every slurmd of a multi-slurmd host).
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import socket

from slurm_plugins.findings import parse_override

ENV_VAR = "PORTAL_HEALTH_CONF"
DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"
# A slow portal must not stall a prolog for long: the timeout is capped whatever the file says.
# A down one costs nothing like it: a refused or unroutable connection fails at connect time
# (report.CONNECT_TIMEOUT_S), and the report is spooled.
MAX_TIMEOUT_S = 5.0

DEFAULTS = {
    "portal": {"url": "http://127.0.0.1:8000", "timeout": "2.5", "key_file": "/etc/slurm/health.key"},
    "sensor": {"state_dir": "/var/spool/portal-health/%n", "spool_max": "200", "replay_budget_ms": "100",
               "clean_report_interval": "0", "scontrol": "/usr/bin/scontrol", "kill_stray": "true",
               "spread_s": "0"},
    "gpu": {"backend": "auto", "emulated_state_dir": "", "pynvml_path": "", "kmsg": "/dev/kmsg",
            "nvidia_device": "/dev/nvidiactl"},
    "expected_gpus": {"default": "0"},
    "thresholds": {
        "temperature_warning_c": "85", "temperature_critical_c": "92",
        "power_over_limit_ratio": "1.05",
        "ecc_uncorrected_max": "0", "ecc_corrected_warning": "1000",
        "retired_pages_max": "60",
        "nvlink_replay_warning": "1000", "nvlink_recovery_warning": "10", "nvlink_crc_warning": "1000",
        "nvlink_down_is_fatal": "true",
    },
}


class ConfigError(Exception):
    pass


class Config:
    """The settings one sensor run needs, already resolved for this node."""

    def __init__(self, parser: configparser.ConfigParser, node: str, path: str | None) -> None:
        self.node, self.path = node, path
        get = parser.get
        self.portal_url = get("portal", "url").rstrip("/")
        self.timeout = min(_float(parser, "portal", "timeout"), MAX_TIMEOUT_S)
        self.key_file = self._expand(get("portal", "key_file"))
        self.state_dir = self._expand(get("sensor", "state_dir"))
        self.spool_dir = os.path.join(self.state_dir, "spool")
        self.spool_max = _int(parser, "sensor", "spool_max")
        self.replay_budget_s = _int(parser, "sensor", "replay_budget_ms") / 1000
        self.clean_report_interval = _float(parser, "sensor", "clean_report_interval")
        self.scontrol = get("sensor", "scontrol")
        self.kill_stray = _bool(parser, "sensor", "kill_stray")
        self.spread_s = max(0.0, _float(parser, "sensor", "spread_s"))
        self.backend = get("gpu", "backend")
        if self.backend not in ("auto", "nvml", "emulated"):
            raise ConfigError(f"[gpu] backend = {self.backend!r}; expected auto, nvml or emulated")
        self.emulated_state_dir = self._expand(get("gpu", "emulated_state_dir"))
        self.pynvml_path = get("gpu", "pynvml_path")
        self.kmsg = get("gpu", "kmsg")
        self.nvidia_device = get("gpu", "nvidia_device")
        self.expected_gpus = _expected_gpus(parser, node)
        self.thresholds = {k: _float(parser, "thresholds", k) for k in parser.options("thresholds")
                           if k != "nvlink_down_is_fatal"}
        self.nvlink_down_is_fatal = _bool(parser, "thresholds", "nvlink_down_is_fatal")
        self.xid_overrides = _xid_overrides(parser)

    def _expand(self, value: str) -> str:
        return value.replace("%n", self.node)


def _float(parser: configparser.ConfigParser, section: str, key: str) -> float:
    try:
        return parser.getfloat(section, key)
    except ValueError:
        raise ConfigError(f"[{section}] {key} = {parser.get(section, key)!r} is not a number") from None


def _int(parser: configparser.ConfigParser, section: str, key: str) -> int:
    try:
        return parser.getint(section, key)
    except ValueError:
        raise ConfigError(f"[{section}] {key} = {parser.get(section, key)!r} is not an integer") from None


def _bool(parser: configparser.ConfigParser, section: str, key: str) -> bool:
    try:
        return parser.getboolean(section, key)
    except ValueError:
        raise ConfigError(f"[{section}] {key} = {parser.get(section, key)!r} is not true/false") from None


def _expected_gpus(parser: configparser.ConfigParser, node: str) -> int:
    """The node's own entry, else the first matching glob (`gpu* = 8`), else `default`."""
    section = parser["expected_gpus"]
    if node in section and node != "default":
        return _int(parser, "expected_gpus", node)
    for pattern in section:
        if pattern != "default" and fnmatch.fnmatchcase(node, pattern):
            return _int(parser, "expected_gpus", pattern)
    return _int(parser, "expected_gpus", "default")


def _xid_overrides(parser: configparser.ConfigParser) -> dict[int, tuple[str, str]]:
    if not parser.has_section("xid"):
        return {}
    overrides = {}
    for key, value in parser.items("xid"):
        try:
            overrides[int(key)] = parse_override(value)
        except ValueError as exc:
            raise ConfigError(f"[xid] {key} = {value!r}: {exc}") from None
    return overrides


def find_config_file(environ: dict[str, str]) -> str | None:
    """$PORTAL_HEALTH_CONF, else health.conf beside $SLURM_CONF (set for prolog and epilog),
    else beside /etc/slurm/slurm.conf (the health check gets no SLURM_CONF; symlinks resolved)."""
    if environ.get(ENV_VAR):
        return environ[ENV_VAR]
    for slurm_conf in (environ.get("SLURM_CONF"), DEFAULT_SLURM_CONF):
        if slurm_conf:
            candidate = os.path.join(os.path.dirname(os.path.realpath(slurm_conf)), "health.conf")
            if os.path.isfile(candidate):
                return candidate
    return None


def node_name(environ: dict[str, str]) -> str:
    """slurmd passes SLURMD_NODENAME to prolog, epilog and health check (verified on 22.05);
    with several slurmd on one host the hostname would be wrong, so it comes first."""
    return environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


def load(environ: dict[str, str] | None = None, path: str | None = None) -> Config:
    environ = dict(os.environ) if environ is None else environ
    path = path or find_config_file(environ)
    # Keys are case-sensitive: node names and globs in [expected_gpus] are.
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_dict(DEFAULTS)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return Config(parser, node_name(environ), path)

"""XID events from the kernel log.

NVML's event API only reports XIDs that happen while a process is waiting on it, which a
sensor that runs for 100 ms every few seconds would miss. The driver also logs every XID to
the kernel ring buffer ("NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the
bus."), so that is where "XIDs since the last run" come from: /dev/kmsg records carry a
sequence number, and the cursor remembers the last one seen (per boot).
"""

from __future__ import annotations

import os
import re

XID_RE = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+)(?:\.[0-9A-Fa-f])?\): (\d+),?\s*(.*)")
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def pci_key(bus_id: str | bytes) -> tuple[int, int, int]:
    """(domain, bus, device) from '0000:3b:00' (kernel) or '00000000:3B:00.0' (NVML)."""
    text = bus_id.decode() if isinstance(bus_id, bytes) else bus_id
    domain, bus, device = text.split(".")[0].split(":")[-3:]
    return int(domain, 16), int(bus, 16), int(device, 16)


def _boot_id() -> str:
    try:
        with open(BOOT_ID, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _records(path: str) -> list[str]:
    """Every record in the ring buffer. /dev/kmsg returns one record per read() and EAGAIN at
    the end; a regular file (recorded kernel log, for tests) is read line by line."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    records = []
    try:
        if not os.path.isfile(path):
            while True:
                try:
                    chunk = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except BrokenPipeError:
                    continue    # a record was overwritten while we read: skip it
                if not chunk:
                    break
                records.append(chunk.decode(errors="replace"))
        else:
            with os.fdopen(os.dup(fd), "rb") as fh:
                records = fh.read().decode(errors="replace").splitlines()
    finally:
        os.close(fd)
    return records


def read_xids(path: str, cursor: dict | None) -> tuple[list[tuple[str, int, str]], dict]:
    """[(pci bus id, xid, rest of the message)] newer than `cursor`, and the new cursor."""
    boot = _boot_id()
    last = (cursor or {}).get("seq", -1) if (cursor or {}).get("boot") == boot else -1
    newest, found = last, []
    for record in _records(path):
        header, sep, message = record.partition(";")
        fields = header.split(",")
        if not sep or len(fields) < 2 or not fields[1].isdigit():
            continue    # a continuation line or something that is not a kmsg record
        seq = int(fields[1])
        if seq <= last:
            continue
        newest = max(newest, seq)
        match = XID_RE.search(message)
        if match:
            found.append((match.group(1), int(match.group(2)), match.group(3).strip()))
    return found, {"boot": boot, "seq": newest}

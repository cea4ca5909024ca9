"""Signed reports to the portal, and the spool that keeps them while the portal is down.

Signature: hex HMAC-SHA256(node key, f"{timestamp}\\n{nonce}\\n" + raw body), sent in the
X-Health-Timestamp / X-Health-Nonce / X-Health-Signature headers. The node key is the hex
text in the key file, used as ASCII bytes (the portal derives the same text from its master
key). A spooled report keeps its original timestamp and nonce, so a replay that the portal
already stored (its answer was lost) is answered 200 with the stored report, never stored twice.

Plain http:// goes over a raw socket: http.client drags in the email package, about 40 ms
of imports, which every run on every node would pay. https:// uses http.client.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import socket
import time

ACCEPTED, REJECTED, UNREACHABLE = "accepted", "rejected", "unreachable"
# Answers that mean "try again later", not "this report is wrong".
RETRY_STATUSES = {408, 425, 429}
# Connecting takes a millisecond when the portal is up, even when it is busy (the kernel
# accepts); only the answer may take the whole timeout. A dead host fails after this.
CONNECT_TIMEOUT_S = 0.5


class Envelope:
    """A report body with the timestamp and nonce it is signed with."""

    __slots__ = ("body", "nonce", "timestamp")

    def __init__(self, body: dict, timestamp: int | None = None, nonce: str | None = None) -> None:
        self.body = body
        self.timestamp = int(time.time()) if timestamp is None else timestamp
        self.nonce = nonce or os.urandom(16).hex()

    def raw(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":"), sort_keys=True).encode()

    def headers(self, key: bytes) -> dict[str, str]:
        return {"X-Health-Timestamp": str(self.timestamp), "X-Health-Nonce": self.nonce,
                "X-Health-Signature": sign(key, self.timestamp, self.nonce, self.raw())}


def sign(key: bytes, timestamp: int | str, nonce: str, body: bytes) -> str:
    return hmac.new(key, f"{timestamp}\n{nonce}\n".encode() + body, hashlib.sha256).hexdigest()


def node_key(master: str, node: str) -> str:
    """A node's report key: hex HMAC-SHA256(master key text, node name). The one derivation:
    the portal (portal/nodes/signing.py) and cluster/ctl call this function, so the key a node is
    given and the key the portal checks with cannot drift apart."""
    return hmac.new(master.encode(), node.encode(), hashlib.sha256).hexdigest()


def read_key(path: str) -> bytes:
    with open(path, encoding="ascii") as fh:
        return fh.read().strip().encode()


# ---------------------------------------------------------------- HTTP

def _raw_post(host: str, port: int, *, netloc: str, path: str, headers: dict[str, str], body: bytes,
              timeout: float) -> tuple[int, bytes]:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n{head}\r\n").encode() + body
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=min(timeout, CONNECT_TIMEOUT_S)) as sock:
        sock.sendall(request)
        data = b""
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk or _complete(data := data + chunk):
                break
    status_line = data.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError(f"not an HTTP answer: {data[:80]!r}")
    return int(status_line[1]), data.partition(b"\r\n\r\n")[2]


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def _https_post(netloc: str, path: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, bytes]:
    import http.client  # noqa: PLC0415  (only sites that use TLS pay for it)

    conn = http.client.HTTPSConnection(netloc, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={**headers, "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def split_url(url: str) -> tuple[str, str, str, int, str]:
    """(scheme, netloc, host, port, path) of http(s)://host[:port][/path]. Not urllib.parse:
    it imports ipaddress, a few ms more on every run of every node."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"portal URL {url!r} is not http(s)://...")
    netloc, _, path = rest.partition("/")
    host, port = netloc, 443 if scheme == "https" else 80
    if netloc.startswith("["):                  # [IPv6]:port
        host, _, tail = netloc[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else port
    elif ":" in netloc:
        host, _, number = netloc.rpartition(":")
        port = int(number)
    return scheme, netloc, host, port, "/" + path.strip("/") if path.strip("/") else ""


def post(portal_url: str, node: str, envelope: Envelope, key: bytes, timeout: float) -> tuple[str, str]:
    """(ACCEPTED | REJECTED | UNREACHABLE, detail). Never raises for network trouble."""
    body, headers = envelope.raw(), envelope.headers(key)
    try:
        scheme, netloc, host, port, prefix = split_url(portal_url)
        path = f"{prefix}/api/v1/nodes/{node}/health"
        if scheme == "https":
            status, answer = _https_post(netloc, path, headers, body, timeout)
        else:
            status, answer = _raw_post(host, port, netloc=netloc, path=path, headers=headers, body=body,
                                       timeout=timeout)
    except (OSError, ValueError) as exc:
        return UNREACHABLE, f"{portal_url}: {exc or type(exc).__name__}"
    if 200 <= status < 300:
        return ACCEPTED, str(status)
    detail = f"HTTP {status}: {answer[:200].decode(errors='replace')}"
    if status >= 500 or status in RETRY_STATUSES:
        return UNREACHABLE, detail
    return REJECTED, detail


# ---------------------------------------------------------------- spool

def spool(spool_dir: str, envelope: Envelope, max_files: int) -> str:
    """Keep a report for later. Oldest files go first when the spool is full: after a long
    outage the newest state of the node matters more than its history."""
    os.makedirs(spool_dir, mode=0o700, exist_ok=True)
    body = {**envelope.body, "spooled": True}
    name = f"{time.time_ns():020d}-{envelope.nonce[:8]}.json"
    path = os.path.join(spool_dir, name)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump({"timestamp": envelope.timestamp, "nonce": envelope.nonce, "body": body}, fh)
    os.replace(path + ".tmp", path)
    for old in spooled(spool_dir)[:-max_files] if max_files > 0 else []:
        _unlink(os.path.join(spool_dir, old))
    return path


def spooled(spool_dir: str) -> list[str]:
    """Spooled report file names, oldest first (names start with a zero-padded ns time)."""
    try:
        return sorted(n for n in os.listdir(spool_dir) if n.endswith(".json"))
    except FileNotFoundError:
        return []


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _load(path: str) -> Envelope | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return Envelope(data["body"], int(data["timestamp"]), str(data["nonce"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        _unlink(path)   # unreadable: it can never be delivered
        return None


def replay(spool_dir: str, portal_url: str, node: str, key: bytes, *, timeout: float,
           budget_s: float) -> tuple[int, int, bool]:
    """Send spooled reports oldest first. Returns (delivered, dropped, portal_down).

    A report is deleted once the portal stores it (2xx, also when it had stored it before and
    only the answer was lost) or refuses it for good (4xx). The first sign of a down portal stops the replay, so
    a run never waits more than one timeout for it. The budget keeps a long backlog from
    stretching one run; the next runs carry on.
    """
    delivered = dropped = 0
    deadline = time.monotonic() + budget_s
    for name in spooled(spool_dir):
        if time.monotonic() > deadline:
            break
        path = os.path.join(spool_dir, name)
        envelope = _load(path)
        if envelope is None:
            continue
        outcome, _detail = post(portal_url, node, envelope, key, timeout)
        if outcome == UNREACHABLE:
            return delivered, dropped, True
        _unlink(path)
        delivered += outcome == ACCEPTED
        dropped += outcome == REJECTED
    return delivered, dropped, False

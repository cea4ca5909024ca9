"""The gateway asks slurmrestd which API versions it serves once per process, and takes the
highest it shares with the portal. slurmrestd is played here by a local server that answers
`GET /openapi/v3` with the document a real daemon gave (tests/slurm/recorded/openapi/)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from portal.slurm import gateway
from portal.slurm.errors import SlurmUnavailable, SlurmUnreached

OPENAPI = Path(__file__).parent / "recorded" / "openapi"


class _FakeRestd(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("X-SLURM-USER-NAME")))
        if self.path == "/openapi/v3":
            body, status = json.dumps(self.server.doc).encode(), 200
        elif self.path.endswith("/ping"):
            body, status = b'{"pings": [], "errors": []}', 200
        else:
            body, status = b'{"errors": []}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def restd(settings, tmp_path):
    """A slurmrestd stand-in, and the gateway pointed at it with a fresh negotiation."""
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeRestd)
    server.seen, server.doc = [], {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.SLURM = {**settings.SLURM, "REST_URL": f"http://127.0.0.1:{server.server_address[1]}",
                      "API_VERSION": "auto", "JWT_KEY_FILE": str(key), "TIMEOUT_S": 2.0}
    gateway.forget_negotiated_version()
    yield server
    server.shutdown()
    gateway.forget_negotiated_version()


def serve(server, release: str) -> None:
    server.doc = json.loads((OPENAPI / f"slurm-{release}.json").read_text())


@pytest.mark.parametrize(("release", "version"), [("22.05", "v0.0.38"), ("24.11", "v0.0.42"), ("26.05", "v0.0.44")])
def test_it_uses_the_highest_common_version_and_says_so(restd, caplog, release, version):
    serve(restd, release)
    with caplog.at_level(logging.INFO, logger="portal.slurm.gateway"):
        gateway.ping()
    assert restd.seen == [("/openapi/v3", "portalop"), (f"/slurm/{version}/ping", "portalop")]
    assert f"using {version}" in caplog.text


def test_it_asks_once_per_process(restd):
    serve(restd, "24.11")
    gateway.ping()
    gateway.ping()
    assert [path for path, _ in restd.seen] == ["/openapi/v3", "/slurm/v0.0.42/ping", "/slurm/v0.0.42/ping"]


def test_a_named_version_skips_the_question(restd, settings):
    serve(restd, "24.11")
    settings.SLURM = {**settings.SLURM, "API_VERSION": "v0.0.40"}
    gateway.ping()
    assert [path for path, _ in restd.seen] == ["/slurm/v0.0.40/ping"]


def test_no_version_in_common_is_unavailable_and_asked_again_next_time(restd):
    restd.doc = {"paths": {"/slurm/v0.0.37/ping": {}}}
    with pytest.raises(SlurmUnavailable, match="no version in common"):
        gateway.ping()
    serve(restd, "22.05")
    gateway.ping()
    assert [path for path, _ in restd.seen] == ["/openapi/v3", "/openapi/v3", "/slurm/v0.0.38/ping"]


def test_an_unreachable_slurmrestd_fails_as_any_request_does(settings, tmp_path):
    (tmp_path / "jwt.key").write_bytes(b"k" * 32)
    gateway.forget_negotiated_version()
    settings.SLURM = {**settings.SLURM, "REST_URL": "http://127.0.0.1:1", "API_VERSION": "auto",
                      "JWT_KEY_FILE": str(tmp_path / "jwt.key")}
    try:
        with pytest.raises(SlurmUnreached):
            gateway.ping()
    finally:
        gateway.forget_negotiated_version()

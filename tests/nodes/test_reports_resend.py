"""A report resent after its answer was lost is answered with the stored report, not refused.

Sensors once gave up after 0.5 s on a loaded portal, spooled reports the portal had already
stored, and their replays were refused as replays (17 x 403). A different report under a seen
nonce is still refused (tests/nodes/test_reports_auth.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from portal.nodes.models import Finding, HealthReport
from slurm_plugins import config, report
from slurm_plugins.report import Envelope
from tests.slurm_plugins.signed_reports import body, key_for, master_key, send, xid48  # noqa: F401

pytestmark = pytest.mark.usefixtures("master_key")


@pytest.mark.django_db
def test_the_same_report_sent_twice_is_answered_200_with_the_stored_id():
    envelope = Envelope(body("gpu01", findings=[xid48(1)]))
    first = send(envelope)
    assert first.status_code == 202
    again = send(envelope)
    assert again.status_code == 200, again.content
    stored = HealthReport.objects.get()
    assert again.json() == {"accepted": 1, "id": stored.pk, "duplicate": True}
    assert first.json()["id"] == stored.pk
    assert Finding.objects.count() == 1


@pytest.mark.django_db
def test_the_spooled_copy_of_a_stored_report_is_the_same_report():
    """What a sensor resends: its spool marks the body spooled and keeps timestamp and nonce."""
    envelope = Envelope(body("gpu01", findings=[xid48(1)]))
    assert send(envelope).status_code == 202
    spooled = Envelope({**envelope.body, "spooled": True}, timestamp=envelope.timestamp, nonce=envelope.nonce)
    resp = send(spooled)
    assert resp.status_code == 200 and resp.json()["duplicate"] is True
    assert HealthReport.objects.count() == 1


@contextlib.contextmanager
def slow_portal(upstream_url: str, delay_s: float) -> Iterator[str]:
    """A proxy in front of the portal that passes each request on at once and holds the answer
    for `delay_s`: a loaded portal, or a lost answer when the sensor gives up first."""
    upstream = ("127.0.0.1", urlparse(upstream_url).port)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            request = b""
            while not report._complete(request):
                request += conn.recv(65536)
            with socket.create_connection(upstream) as up:
                up.sendall(request)
                answer = b"".join(iter(lambda: up.recv(65536), b""))
            time.sleep(delay_s)
            with contextlib.suppress(OSError):
                conn.sendall(answer)

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                threading.Thread(target=handle, args=(server.accept()[0],), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()


@pytest.mark.django_db(transaction=True)
def test_a_report_whose_answer_was_lost_is_replayed_from_the_spool_without_a_refusal(
        live_server, celery_settled, tmp_path):
    # A clean report: the real worker runs the policy on it, and a fault would drain gpu02 in
    # the shared cluster.
    key, spool_dir = key_for("gpu02"), str(tmp_path / "spool")
    envelope = Envelope(body("gpu02"))
    with slow_portal(live_server.url, delay_s=1.5) as url:
        outcome, detail = report.post(url, "gpu02", envelope, key, timeout=0.5)
    assert outcome == report.UNREACHABLE and "timed out" in detail
    report.spool(spool_dir, envelope, max_files=10)              # what the sensor does next
    assert HealthReport.objects.filter(node__name="gpu02").count() == 1   # the portal did store it

    delivered, dropped, down = report.replay(spool_dir, live_server.url, "gpu02", key, timeout=3, budget_s=5)
    assert (delivered, dropped, down) == (1, 0, False)
    assert report.spooled(spool_dir) == []
    assert HealthReport.objects.filter(node__name="gpu02").count() == 1


def test_the_default_timeout_waits_for_a_loaded_portal():
    assert config.load(environ={"SLURMD_NODENAME": "gpu03"}, path="/dev/null").timeout == 2.5


@pytest.mark.django_db(transaction=True)
def test_a_portal_answering_in_a_second_is_not_counted_as_down(live_server, celery_settled):
    envelope = Envelope(body("gpu03"))
    timeout = config.load(environ={"SLURMD_NODENAME": "gpu03"}, path="/dev/null").timeout
    with slow_portal(live_server.url, delay_s=1.0) as url:
        start = time.monotonic()
        outcome, detail = report.post(url, "gpu03", envelope, key_for("gpu03"), timeout=timeout)
    assert outcome == report.ACCEPTED, detail
    assert 1.0 <= time.monotonic() - start < timeout
    assert HealthReport.objects.filter(node__name="gpu03").count() == 1

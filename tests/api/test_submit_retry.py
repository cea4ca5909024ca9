"""Submitting while slurmrestd refuses connections: a 503 that names the job, and retries with the
same Idempotency-Key that end with exactly one Slurm job.

slurmrestd is shared with other people's tests, so it is never stopped: "down" is this
process pointing the gateway at a port where nothing listens (connection refused), and
"back" is pointing it at slurmrestd again.
"""

from __future__ import annotations

import select
import socket
import socketserver
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from portal.jobs import cluster_info
from portal.jobs.models import Job
from portal.jobs.services import portal_comment
from portal.slurm import gateway
from tests.conftest import wait_until
from tests.jobs.test_tracking_outbox import CLOSED_PORT, comment_jobs
from tests.slurm.helpers import spec_for

pytestmark = pytest.mark.usefixtures("slurm_accounts")

BODY = {"team": "vision", "script": "#!/bin/bash\nsleep 120\n", "hold": True, "time_limit_min": 5}


@contextmanager
def slurmrestd_refusing(settings):
    cluster_info.partitions()  # form validation reads the cached limits, as a warm portal does
    with override_settings(SLURM={**settings.SLURM, "REST_URL": CLOSED_PORT}):
        yield


class _AnswerDropper(socketserver.BaseRequestHandler):
    """Passes each request on to the real slurmrestd, then hangs up instead of passing its answer
    back: Slurm acts, the portal never hears (slurmrestd killed mid-request, as seen by the portal)."""

    def handle(self) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.server.upstream_port))
        try:
            while True:
                readable, _, _ = select.select([self.request, upstream], [], [], 5)
                if not readable or upstream in readable:
                    return  # slurmrestd answers (so it has acted), or all went quiet: hang up
                data = self.request.recv(65536)
                if not data:
                    return
                upstream.sendall(data)
        finally:
            upstream.close()
            self.request.close()


@contextmanager
def answers_lost(settings):
    """slurmrestd behind a proxy that loses every answer; the gateway times out after 1 s."""
    cluster_info.partitions()
    upstream_port = int(settings.SLURM["REST_URL"].rsplit(":", 1)[1])
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _AnswerDropper) as server:
        server.upstream_port = upstream_port
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with override_settings(SLURM={**settings.SLURM, "REST_URL": url, "TIMEOUT_S": 1.0}):
                yield
        finally:
            server.shutdown()


@pytest.fixture
def cancel_afterwards():
    comments: list[str] = []
    yield comments
    ids = [str(i) for c in comments for i in comment_jobs(c)]
    if ids:
        subprocess.run(["scancel", *ids], check=False, capture_output=True)


def submit(client, unique: str, key: str):
    return client.post("/jobs", {**BODY, "name": f"retry-{unique}"}, headers={"Idempotency-Key": key})


@pytest.mark.django_db
def test_a_submit_slurmrestd_refuses_is_a_503_with_retry_after_and_the_jobs_id(api, unique, settings):
    with slurmrestd_refusing(settings):
        resp = submit(api["alice"], unique, f"k-{unique}")

    assert resp.status_code == 503, resp.content
    assert int(resp["Retry-After"]) > 0
    body = resp.json()
    assert "Slurm" in body["detail"]
    job = Job.objects.get(pk=body["id"])
    assert (job.owner.username, job.slurm_job_id, job.idempotency_key) == ("alice", None, f"k-{unique}")
    assert comment_jobs(portal_comment(job)) == []  # connection refused: Slurm never saw it
    assert api["alice"].get(f"/jobs/{body['id']}").status_code == 200  # the id is one the client can follow


@pytest.mark.django_db
def test_a_same_key_retry_after_a_refused_connection_yields_the_job(api, unique, settings, cancel_afterwards):
    key = f"k-{unique}"
    with slurmrestd_refusing(settings):
        first = submit(api["alice"], unique, key)
    assert first.status_code == 503
    job = Job.objects.get(pk=first.json()["id"])
    cancel_afterwards.append(portal_comment(job))

    retry = submit(api["alice"], unique, key)  # slurmrestd is back

    assert retry.status_code == 200, retry.content
    data = retry.json()
    assert data["id"] == job.pk and data["uuid"] == str(job.uuid)  # same row, same UUID
    assert data["slurm_job_id"] is not None and data["state"] == "PENDING"
    assert comment_jobs(portal_comment(job)) == [data["slurm_job_id"]]
    held = gateway.get_job(data["slurm_job_id"])
    assert (held.user, held.account, held.name) == ("alice", "vision", f"retry-{unique}")
    assert submit(api["alice"], unique, key).json()["slurm_job_id"] == data["slurm_job_id"]  # and stays so


@pytest.mark.django_db
def test_a_retry_adopts_the_job_an_unconfirmed_attempt_did_queue(api, alice, unique, settings, cancel_afterwards):
    """A timed-out answer: Slurm queued the job, the portal never heard. The retry must find it, not resend."""
    key = f"k-{unique}"
    with slurmrestd_refusing(settings):
        job = Job.objects.get(pk=submit(api["alice"], unique, key).json()["id"])
    cancel_afterwards.append(portal_comment(job))
    queued = gateway.submit_job("alice", spec_for("alice", unique, BODY["script"], hold=True,
                                                 comment=portal_comment(job)))

    retry = submit(api["alice"], unique, key)

    assert retry.status_code == 200 and retry.json()["slurm_job_id"] == queued
    assert comment_jobs(portal_comment(job)) == [queued]


@pytest.mark.django_db
def test_a_retry_while_the_first_request_may_still_reach_slurm_is_a_503_not_a_second_job(api, unique):
    key = f"k-{unique}"
    first = submit(api["alice"], unique, key)
    job = Job.objects.get(pk=first.json()["id"])
    # As if the first request were still waiting for slurmrestd: it holds the row's sending claim.
    Job.objects.filter(pk=job.pk).update(slurm_job_id=None, state="",
                                         sending_until=timezone.now() + timedelta(seconds=30))
    try:
        retry = submit(api["alice"], unique, key)
        assert retry.status_code == 503 and retry.json()["id"] == job.pk and retry["Retry-After"]
        assert comment_jobs(portal_comment(job)) == [first.json()["slurm_job_id"]]
    finally:
        subprocess.run(["scancel", str(first.json()["slurm_job_id"])], check=False)


@pytest.mark.django_db(transaction=True)
def test_a_burst_refused_then_retried_concurrently_makes_exactly_one_job_per_key(api, unique, settings,
                                                                                 cancel_afterwards):
    keys = [f"k-{unique}-{n}" for n in range(4)]
    with slurmrestd_refusing(settings):
        ids = [submit(api["alice"], unique, key).json()["id"] for key in keys]
    jobs = list(Job.objects.filter(pk__in=ids))
    cancel_afterwards.extend(portal_comment(job) for job in jobs)
    assert len(jobs) == 4 and all(job.slurm_job_id is None for job in jobs)

    # slurmrestd is back; every client retries, two at once per key, as impatient clients do.
    start, answers = threading.Barrier(len(keys) * 2), []

    def retry(key: str) -> None:
        start.wait()
        try:
            answers.append((key, submit(api["alice"], unique, key)))
        finally:
            connection.close()
    threads = [threading.Thread(target=retry, args=(key,)) for key in keys for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {resp.status_code for _, resp in answers} <= {200, 503}  # the loser of a race is told to retry
    for job in jobs:
        job.refresh_from_db()
        deadline = time.monotonic() + 30
        while job.slurm_job_id is None and time.monotonic() < deadline:  # losers retry after Retry-After
            submit(api["alice"], unique, job.idempotency_key)
            job.refresh_from_db()
        assert comment_jobs(portal_comment(job)) == [job.slurm_job_id], job.idempotency_key
        winners = {resp.json()["slurm_job_id"] for key, resp in answers
                   if key == job.idempotency_key and resp.status_code == 200}
        assert winners <= {job.slurm_job_id}


@pytest.mark.django_db
def test_a_lost_answer_after_slurm_accepted_is_settled_by_a_retry_without_a_second_job(api, unique, settings,
                                                                                       cancel_afterwards):
    key = f"k-{unique}"
    with answers_lost(settings):
        first = submit(api["alice"], unique, key)
    assert first.status_code == 503, first.content
    job = Job.objects.get(pk=first.json()["id"])
    cancel_afterwards.append(portal_comment(job))
    queued = wait_until(lambda: comment_jobs(portal_comment(job)), timeout=10, what="Slurm to hold the job")
    assert len(queued) == 1 and job.slurm_job_id is None  # Slurm has it; the portal never heard

    early = submit(api["alice"], unique, key)  # the lost request may, as far as the portal knows, be in flight
    assert early.status_code == 503 and early.json()["id"] == job.pk
    late = wait_until(lambda: (r := submit(api["alice"], unique, key)).status_code == 200 and r, timeout=20,
                      interval=0.5, what="the first request's sending claim to run out")

    assert (late.json()["id"], late.json()["slurm_job_id"]) == (job.pk, queued[0])
    assert comment_jobs(portal_comment(job)) == queued

"""Emails about requeues, crash-loop holds and failures, sent by the real Celery worker.

The worker runs in this process (tests/conftest.py), so it uses these tests' settings: Django's
locmem email backend (mail.outbox), or SMTP to a port where nothing listens.
"""

from __future__ import annotations

import re
import socket
import threading
from datetime import timedelta

import pytest
import redis
from django.core import mail
from django.db import connection
from django.test import Client
from django.utils import timezone

from portal.infra.handoff import hand_off
from portal.recovery.models import Notification, NotificationSettings
from portal.recovery.notify import NO_ADDRESS, SEND_FAILED, SWITCHED_OFF, notify_job
from tests.conftest import wait_until
from tests.jobs.views_support import build_world, client_for, make_job
from tests.recovery.page_support import attempt, requeued_job
from workers.celery import app

TASK = "workers.tasks.notify.notify_job_task"
pytestmark = pytest.mark.usefixtures("celery_settled")


@pytest.fixture
def world(make_user, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PORTAL_BASE_URL = "https://portal.example.org"
    mail.outbox = []
    people = build_world(make_user)
    for name in ("alice", "bob", "carol"):
        people[name].email = f"{name}@example.org"
        people[name].save(update_fields=["email"])
    job, first, second = requeued_job(people["alice"], people["vision"], timezone.now() - timedelta(hours=3))
    people.update(job=job, first=first, second=second)
    return people


def _note(attempt_id: int, kind: str) -> Notification | None:
    return Notification.objects.filter(attempt_id=attempt_id, kind=kind).first()


def _settled(attempt_id: int, kind: str) -> Notification:
    return wait_until(lambda: (n := _note(attempt_id, kind)) and (n.sent or n.error) and n, timeout=30,
                      what=f"the {kind} notification to be settled")


def test_it_emails_the_owner_when_the_job_is_requeued(world):
    assert hand_off(TASK, world["first"].pk, "requeued")
    note = _settled(world["first"].pk, "requeued")
    assert note.sent and note.error == ""
    [email] = mail.outbox
    assert email.to == ["alice@example.org"]
    assert email.subject == "[Cluster portal] Job llama-pretrain (Slurm job 4242) requeued after a node failure"
    body = email.body
    assert f"https://portal.example.org/jobs/{world['job'].pk}/" in body
    assert "Fatal hardware fault on a node it ran on" in body and "Node: gpu03" in body
    assert "XID 79" in body
    assert "Work lost: 0.67 GPU-hours" in body  # 4 GPUs x 10 min since the checkpoint
    assert "from its latest checkpoint, /ckpt/step-1200" in body and "keeps its Slurm job id" in body
    assert "https://portal.example.org/settings/notifications/" in body


def test_it_sends_once_even_when_the_task_runs_twice(world):
    hand_off(TASK, world["first"].pk, "requeued")
    hand_off(TASK, world["first"].pk, "requeued")
    _settled(world["first"].pk, "requeued")
    assert notify_job(world["first"].pk, "requeued") is False  # and once more, in this process
    wait_until(lambda: not _queue_busy(), what="the worker to take both tasks")
    assert len(mail.outbox) == 1
    assert Notification.objects.filter(attempt=world["first"]).count() == 1


def _queue_busy() -> bool:
    return bool(redis.Redis.from_url(app.conf.broker_url).llen(app.conf.task_default_queue))


def _csrf_post(client: Client, url: str, data: dict) -> object:
    page = client.get(url).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    return client.post(url, {**data, "csrfmiddlewaretoken": token}, follow=True)


def test_emails_switched_off_on_the_settings_page_are_not_sent(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["alice"])
    response = _csrf_post(client, "/settings/notifications/", {"on_hold": "on", "on_failure": "on"})
    assert "Saved: your email settings are updated." in response.content.decode()
    assert NotificationSettings.objects.filter(user=world["alice"], on_requeue=False, on_hold=True).exists()
    hand_off(TASK, world["first"].pk, "requeued")
    note = _settled(world["first"].pk, "requeued")
    assert (note.sent, note.error) == (False, SWITCHED_OFF)
    hand_off(TASK, world["second"].pk, "held")  # still on
    assert _settled(world["second"].pk, "held").sent
    assert [e.subject.rsplit(") ", 1)[1] for e in mail.outbox] == ["held after repeated failures"]


def test_the_settings_page_refuses_a_post_without_csrf(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["alice"])
    assert client.post("/settings/notifications/", {"on_hold": "on"}).status_code == 403
    assert not NotificationSettings.objects.filter(user=world["alice"]).exists()


def test_the_settings_page_starts_with_every_email_on(world):
    page = client_for(world["alice"]).get("/settings/notifications/").content.decode()
    assert page.count('type="checkbox"') == 3 and page.count("checked") == 3
    assert "alice@example.org" in page
    assert 'href="/settings/notifications/"' in page  # linked from the navigation


def test_a_user_without_an_email_address_is_recorded_not_sent(world):
    world["alice"].email = ""
    world["alice"].save(update_fields=["email"])
    hand_off(TASK, world["first"].pk, "requeued")
    note = _settled(world["first"].pk, "requeued")
    assert (note.sent, note.error) == (False, NO_ADDRESS) and mail.outbox == []


def test_a_failure_email_carries_the_evidence(world):
    job = make_job(world["bob"], world["vision"], name="bad-script", state="FAILED", slurm_job_id=4343, exit_code=3)
    run = attempt(job, 0, timezone.now() - timedelta(minutes=30), 20, outcome="failed", failure_class="application",
                  cause="exit_code", exit_code=3, evidence={"output_tail": ["step 10", "KeyError: 'lr'"]})
    hand_off(TASK, run.pk, "failed")
    assert _settled(run.pk, "failed").sent
    [email] = mail.outbox
    assert email.to == ["bob@example.org"] and email.subject.endswith("(Slurm job 4343) failed")
    assert "The job's script failed" in email.body and "Exit code: 3" in email.body
    assert "KeyError: 'lr'" in email.body and "does not restart a job for a failure of its own" in email.body


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when we return: a connect is refused


def test_a_mail_server_that_refuses_is_retried_and_recorded(world, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", _closed_port()
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    hand_off(TASK, world["first"].pk, "requeued")
    note = _settled(world["first"].pk, "requeued")
    assert not note.sent and note.error.startswith(SEND_FAILED) and "Connection" in note.error
    # The worker is alive and keeps working: another email goes out meanwhile...
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    hand_off(TASK, world["second"].pk, "held")
    assert _settled(world["second"].pk, "held").sent
    # ...and the retry (with backoff) of the refused one sends it now that mail works.
    wait_until(lambda: _note(world["first"].pk, "requeued").sent, timeout=30, what="the retry to send")
    assert sorted(e.subject.rsplit(") ", 1)[1] for e in mail.outbox) == [
        "held after repeated failures", "requeued after a node failure"]


def test_two_senders_at_the_same_moment_send_one_email(world):
    """Two workers on the same (attempt, kind) at once: the Notification row's lock lets one send."""
    start = threading.Barrier(2)
    results: list[bool] = []

    def send() -> None:
        try:
            start.wait()
            results.append(notify_job(world["first"].pk, "requeued"))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, True]
    assert len(mail.outbox) == 1 and Notification.objects.get(attempt=world["first"]).sent

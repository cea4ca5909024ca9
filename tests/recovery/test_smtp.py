"""Sites send through SMTP: the PORTAL_SMTP_* settings, and a real SMTP conversation end to end.

The mail server here is a small SMTP listener on a local port (plain SMTP, no TLS: the TLS
handshake itself is Python's smtplib, configured by EMAIL_USE_TLS / EMAIL_USE_SSL).
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_string, policy
from pathlib import Path

import pytest
from django.utils import timezone

from portal.infra.handoff import hand_off
from portal.recovery.models import Notification
from tests.conftest import wait_until
from tests.jobs.views_support import build_world
from tests.recovery.page_support import requeued_job

ROOT = Path(__file__).resolve().parents[2]


def _settings_with(env: dict[str, str]) -> dict:
    """The email settings a fresh process reads from this environment."""
    code = ("import django, json; django.setup(); from django.conf import settings as s; print(json.dumps({k: "
            "getattr(s, k) for k in ('EMAIL_BACKEND', 'EMAIL_HOST', 'EMAIL_PORT', 'EMAIL_HOST_USER', "
            "'EMAIL_HOST_PASSWORD', 'EMAIL_USE_TLS', 'EMAIL_USE_SSL', 'DEFAULT_FROM_EMAIL', 'PORTAL_BASE_URL')}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_demo_prints_emails_on_the_console():
    assert _settings_with({})["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"


def test_a_site_configures_smtp_with_the_password_in_a_file(tmp_path):
    secret = tmp_path / "smtp_password"
    secret.write_text("s3cret\n")
    got = _settings_with({"PORTAL_EMAIL_BACKEND": "smtp", "PORTAL_SMTP_HOST": "mail.example.org",
                          "PORTAL_SMTP_PORT": "465", "PORTAL_SMTP_USER": "portal", "PORTAL_SMTP_TLS": "ssl",
                          "PORTAL_SMTP_PASSWORD_FILE": str(secret), "PORTAL_EMAIL_FROM": "GPU portal <gpu@example.org>",
                          "PORTAL_BASE_URL": "https://gpu.example.org/"})
    assert got == {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "mail.example.org",
                   "EMAIL_PORT": 465, "EMAIL_HOST_USER": "portal", "EMAIL_HOST_PASSWORD": "s3cret",
                   "EMAIL_USE_TLS": False, "EMAIL_USE_SSL": True, "DEFAULT_FROM_EMAIL": "GPU portal <gpu@example.org>",
                   "PORTAL_BASE_URL": "https://gpu.example.org"}


@pytest.mark.parametrize("env", [{"PORTAL_EMAIL_BACKEND": "sendmail"}, {"PORTAL_SMTP_TLS": "maybe"},
                                 {"PORTAL_SMTP_PORT": "smtp"}])
def test_a_bad_email_setting_stops_start_up(env):
    code = "import django; django.setup()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", **env})
    assert proc.returncode != 0 and next(iter(env)) in proc.stderr


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough of RFC 5321 for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    def _say(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self._say("220 test ESMTP")
        message: dict = {"rcpt": []}
        while line := self.rfile.readline().decode():
            verb = line[:4].upper()
            if verb == "DATA":
                self._say("354 go ahead")
                message["data"] = b"".join(iter(self.rfile.readline, b".\r\n")).decode()
                self.server.received.append(message)
                self._say("250 queued")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:
                if verb == "RCPT":
                    message["rcpt"].append(line.split(":", 1)[1].strip())
                self._say("250 ok")


@pytest.fixture
def smtp_server() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_worker_sends_through_a_real_smtp_server(make_user, settings, smtp_server, celery_settled):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = smtp_server.server_address
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "Cluster portal <portal@example.org>"
    people = build_world(make_user)
    people["alice"].email = "alice@example.org"
    people["alice"].save(update_fields=["email"])
    _, first, _ = requeued_job(people["alice"], people["vision"], timezone.now() - timedelta(hours=3))
    hand_off("workers.tasks.notify.notify_job_task", first.pk, "requeued")
    wait_until(lambda: Notification.objects.filter(attempt=first, sent=True).exists(), what="the email to be sent")
    [message] = smtp_server.received
    assert message["rcpt"] == ["<alice@example.org>"]
    email = message_from_string(message["data"], policy=policy.default)  # headers unfolded
    assert email["Subject"] == "[Cluster portal] Job llama-pretrain (Slurm job 4242) requeued after a node failure"
    assert email["From"] == "Cluster portal <portal@example.org>" and email["To"] == "alice@example.org"
    assert "Node: gpu03" in email.get_content()

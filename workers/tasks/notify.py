"""Notification tasks: thin wrappers that call one service each."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from portal.recovery.notify import NotificationNotSent, notify_job


# Retries only a mail server that refused or did not answer, with backoff (2, 4, 8, ... s, at
# most 10 min apart); each try is bounded by EMAIL_TIMEOUT. After the last one the error stays
# recorded on the Notification row. Safe to run twice: the row is the claim (notify_job).
@shared_task(autoretry_for=(NotificationNotSent,), retry_backoff=2, retry_backoff_max=600, retry_jitter=True,
             max_retries=settings.PORTAL_NOTIFY_RETRIES)
def notify_job_task(attempt_id: int, kind: str) -> bool:
    """Email the job's owner about this attempt (kind: requeued, held or failed), once."""
    return notify_job(attempt_id, kind)

"""The Celery app. Tasks live in workers/tasks/<area>.py and call one service each."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# Every task module is listed here so the worker registers them at start-up.
app = Celery("portal", include=["workers.tasks.nodes", "workers.tasks.jobs"])
app.config_from_object("django.conf:settings", namespace="CELERY")

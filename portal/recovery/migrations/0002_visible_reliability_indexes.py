"""Indexes for goodput and ETTR (portal/recovery/reliability.py): both read a window of recent
runs (by their end) and of recently ended jobs. Raw SQL, so the models' declared state (and
makemigrations) stay as they are; IF NOT EXISTS makes a re-run harmless."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("recovery", "0001_initial"),
        ("jobs", "0006_recovery_fields"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS recovery_attempt_ended ON recovery_attempt (ended_at)",
            "DROP INDEX IF EXISTS recovery_attempt_ended"),
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS jobs_job_ended ON jobs_job (end_time)",
            "DROP INDEX IF EXISTS jobs_job_ended"),
    ]

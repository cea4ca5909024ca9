"""A portal process to crash: one API submit that stops right after Slurm accepts the job.

Run as `python -m tests.jobs.submit_child TOKEN KEY BODY_JSON BREAKPOINT GO` with
PORTAL_DB_NAME set to the test database. The real gateway submits to the real Slurm; when it
returns, this process writes Slurm's job id to BREAKPOINT and waits until GO exists, before
the database has heard of the id. The test then kills it (a crash between Slurm's accept and
the commit) or lets it go on (a slow request the tracker overtakes). It prints the HTTP status
and body as JSON when it gets that far.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(token: str, key: str, body: str, breakpoint_file: str, go_file: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django  # noqa: PLC0415 - settings must be chosen first
    django.setup()
    from django.test import Client  # noqa: PLC0415
    from django.test.utils import setup_test_environment  # noqa: PLC0415

    from portal.slurm import gateway  # noqa: PLC0415

    setup_test_environment()  # lets the test client's host in
    real_submit = gateway.submit_job

    def accepted_then_wait(username, spec):
        job_id = real_submit(username, spec)
        Path(breakpoint_file).write_text(str(job_id))
        while not Path(go_file).exists():
            time.sleep(0.05)
        return job_id

    gateway.submit_job = accepted_then_wait
    resp = Client().post("/api/v1/jobs", json.loads(body), content_type="application/json",
                         headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})
    print(json.dumps({"status": resp.status_code, "body": resp.json()}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])

"""When the tracker takes sacct's figures for a finished job: not from a row slurmdbd has not
filled in yet (a CI run once got a COMPLETED row without ReqMem, and the job page then lacked
its memory efficiency for good)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from portal.jobs import tracking
from portal.slurm import parse

# Columns: parse.SACCT_FIELDS. The same job as slurmdbd first listed it, then filled in.
EARLY = "41|COMPLETED|0:0|4|4||2026-12-01T17:20:00|2026-12-01T17:20:04|00:03.900|1||cpu01\n"
FILLED = "41|COMPLETED|0:0|4|4||2026-12-01T17:20:00|2026-12-01T17:20:04|00:03.900|1|500M|cpu01\n"


def _row(state: str, changed_ago: timedelta) -> tracking._Row:
    # Submitted just before the recorded run, so sacct's row is of this job (tracking._same_run).
    submitted = datetime(2026, 12, 1, 17, 19, 50, tzinfo=UTC)
    return tracking._Row(pk=1, slurm_job_id=41, uuid=uuid.uuid4(), submit_time=submitted,
                         state=state, reason="", nodes_list="cpu01", start_time=None, end_time=None, exit_code=None,
                         restart_count=0, state_changed_at=timezone.now() - changed_ago, owner_id=1, team_id=1,
                         pending_action="", pending_action_at=None)


def test_a_finished_row_without_its_memory_request_is_asked_for_again():
    (early,) = parse.accounting_from_sacct(EARLY)
    (filled,) = parse.accounting_from_sacct(FILLED)
    just_ended = _row("COMPLETED", timedelta(seconds=5))
    assert tracking._final_state(just_ended, early, timezone.now()) is None
    assert tracking._final_state(just_ended, filled, timezone.now()) == "COMPLETED"


def test_after_a_minute_it_is_taken_as_it_is():
    # A cluster whose jobs really have no memory request must still get its figures.
    (early,) = parse.accounting_from_sacct(EARLY)
    assert tracking._final_state(_row("COMPLETED", timedelta(minutes=2)), early, timezone.now()) == "COMPLETED"
    # A job Slurm forgot while the row said RUNNING (started long ago) is completed from it too.
    assert tracking._final_state(_row("RUNNING", timedelta(minutes=5)), early, timezone.now()) == "COMPLETED"

"""Pending reasons in plain words: the holds the recovery worker makes read as such."""

from __future__ import annotations

from portal.jobs.explain import reason_words


def test_the_portals_crash_loop_holds_are_explained_not_shown_raw():
    # requeuehold of a running job, and uhold of a pending one (portal/recovery/services.py).
    taken_off = reason_words("job_requeued_in_held_state")
    assert "repeated failures" in taken_off and "Release it" in taken_off
    assert "the portal after repeated failures" in reason_words("JobHeldUser")
    assert reason_words("SomethingNew") == "Slurm says: SomethingNew"

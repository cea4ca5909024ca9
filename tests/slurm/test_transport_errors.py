"""Slurm's error payloads map to the gateway's typed errors."""

from __future__ import annotations

import pytest

from portal.slurm.errors import SlurmNotFound, SlurmRejected, SlurmUnavailable
from portal.slurm.transport import SlurmAlreadyDone, _raise_for_errors, run_cli


@pytest.mark.parametrize(("errno", "kind"), [
    (2017, SlurmNotFound), (2021, SlurmAlreadyDone), (2002, SlurmRejected), (1007, SlurmUnavailable),
])
def test_slurm_error_numbers_map_to_typed_errors(errno, kind):
    with pytest.raises(kind):
        _raise_for_errors([{"error_number": errno, "description": "x"}])


def test_a_held_submission_is_not_an_error():
    _raise_for_errors([{"error_code": 2042, "error": "Job is in held state, pending scheduler release"}])


def test_rejection_carries_slurms_message():
    with pytest.raises(SlurmRejected) as info:
        _raise_for_errors([{"error_number": 2045, "description": "Invalid account specified"}])
    assert info.value.message == "Invalid account specified"
    assert not info.value.retryable


def test_a_v0_0_40_rejection_says_what_failed_and_why():
    # As 24.11's slurmrestd (v0.0.42) answered a submit to an account alice is not in.
    with pytest.raises(SlurmRejected) as info:
        _raise_for_errors([{"description": "Batch job submission failed", "error_number": 2045,
                            "error": "Invalid account or account/partition combination specified",
                            "source": "slurm_submit_batch_job()"}])
    assert info.value.message == ("Batch job submission failed: "
                                  "Invalid account or account/partition combination specified")


def test_missing_command_is_unavailable():
    with pytest.raises(SlurmUnavailable, match="not installed"):
        run_cli(["no-such-slurm-command"], timeout=5)


def test_a_slow_command_times_out_as_unavailable():
    with pytest.raises(SlurmUnavailable, match="did not finish"):
        run_cli(["sleep", "5"], timeout=0.5)

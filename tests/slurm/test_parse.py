"""Parsing of Slurm's text and JSON, on recorded output."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import pytest

from portal.slurm import parse
from portal.slurm.gres import gpu_count, gpu_type, gpu_types
from portal.slurm.parse import expand_hostlist


def test_gpu_count_sums_typed_and_untyped_gres():
    assert gpu_count("gpu:h100:4") == 4
    assert gpu_count("gpu:h100:4(S:0-1),gpu:a100:2,shard:8") == 6
    assert gpu_count("gpu:2") == 2
    assert gpu_count("") == 0
    assert gpu_count("(null)") == 0


def test_gpu_types_come_from_the_same_parser():
    assert gpu_types("gpu:h100:4(S:0-1),gpu:a100:2,gpu:1,shard:8") == {"h100", "a100"}
    assert gpu_type("gres/gpu:h100:2") == "h100"
    assert gpu_type("gpu:2") == ""
    assert gpu_count("gres/gpu:h100:2,gres:gpu:1") == 3


# Forms Slurm itself prints or accepts; each is checked against `scontrol show hostnames` (real Slurm).
HOSTLISTS = ["gpu01", "gpu[07-08]", "r[1-2]n[01-02]", "gpu[01,03-04],cpu01", "gpu[8-11]", "gpu[098-101]",
             "n[01-02]-[1-2]", "gpu[01-02]-ib[1]", "rack1-[1-2]", "gpu1[0-2]", "node-a,node-b",
             "gpu[1,2],cpu[01-02]", "gpu[01-02],gpu05", "r1n[01-02],r2n[01-02]"]


def scontrol_hostnames(hostlist: str) -> list[str]:
    out = subprocess.run(["scontrol", "show", "hostnames", hostlist], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("hostlist", HOSTLISTS)
def test_hostlists_expand_exactly_as_slurm_does(hostlist):
    assert expand_hostlist(hostlist) == scontrol_hostnames(hostlist)


@pytest.mark.parametrize("names", [["gpu01-ib", "gpu02-ib"], ["r1n01", "r1n02", "r2n01", "r2n02"],
                                   ["gpu01", "gpu03", "gpu04", "cpu01"], ["gpu09", "gpu10", "gpu11"]])
def test_what_slurm_compresses_expands_back_to_the_same_names(names):
    compressed = subprocess.run(["scontrol", "show", "hostlist", ",".join(names)], capture_output=True, text=True,
                                check=True).stdout.strip()
    assert expand_hostlist(compressed) == names


def test_a_suffix_after_a_bracket_is_kept():
    # Slurm 22.05 writes such names out in full (gpu01-ib,gpu02-ib) and rejects this form, but
    # newer releases and hand-written lists use it; the suffix belongs to every name.
    assert expand_hostlist("gpu[01-02]-ib") == ["gpu01-ib", "gpu02-ib"]
    assert expand_hostlist("") == expand_hostlist("(null)") == []


def test_time_limits_parse_to_minutes():
    assert parse.minutes("2-00:00:00") == 2880
    assert parse.minutes("1:30:00") == 90
    assert parse.minutes("05:00") == 5
    assert parse.minutes("00:30") == 1          # 30 seconds still costs a minute of quota
    assert parse.minutes("UNLIMITED") is None


def test_squeue_sweep_parses_every_column():
    sep = parse.SEP
    line = sep.join(["42", "RUNNING", "gpu[01-02]", "alice", "vision", "None", "gpu",
                     "2026-11-21T10:00:00", "2026-11-21T10:00:05", "2026-11-21T11:00:05",
                     "1:00:00", "train | <b>", "portal:123"])
    [job] = parse.jobs_from_squeue(line + "\n")
    assert (job.job_id, job.state, job.nodes, job.user, job.account) == (42, "RUNNING", "gpu[01-02]",
                                                                         "alice", "vision")
    assert job.reason == ""
    assert job.name == "train | <b>"
    assert job.comment == "portal:123"
    assert job.time_limit_min == 60
    assert job.start_time is not None and job.end_time is None  # a running job has no end yet


def test_squeue_sweep_skips_malformed_lines():
    assert parse.jobs_from_squeue("garbage\n\n") == []


def test_sacct_rows_fold_steps_into_their_job():
    # Columns: parse.SACCT_FIELDS.
    text = "\n".join([
        "7|FAILED|3:0|65|130||2026-11-21T10:00:00|2026-11-21T10:01:05|00:02.500|2|1000M|gpu01",
        "7.batch|FAILED|3:0|65|130|2048K|2026-11-21T10:00:00|2026-11-21T10:01:05|00:02.000|2||gpu01",
        "7.0|COMPLETED|0:0|10|20|1.5M|2026-11-21T10:00:00|2026-11-21T10:00:10|00:00.500|2||gpu01",
        "8|CANCELLED by 1001|0:15|0|0||Unknown|2026-11-21T10:00:00|00:00:00|1|1G|None assigned",
    ])
    records = {r.job_id: r for r in parse.accounting_from_sacct(text)}
    assert records[7].state == "FAILED"
    assert records[7].exit_code == 3
    assert records[7].max_rss_kb == 2048
    assert records[7].elapsed_s == 65
    assert (records[7].total_cpu_s, records[7].cpu_time_s, records[7].alloc_cpus) == (2.5, 130, 2)
    assert (records[7].req_mem_mb, records[7].nodes) == (1000, "gpu01")
    assert records[8].state == "CANCELLED"
    assert records[8].signal == 15
    assert records[8].start_time is None and records[8].nodes == ""


def test_sacct_cpu_time_reads_every_form():
    assert parse.cpu_seconds("00:04.042") == 4.042
    assert parse.cpu_seconds("01:02:03") == 3723
    assert parse.cpu_seconds("1-00:00:01") == 86401
    assert parse.cpu_seconds("") is None


# What Slurm 22.05 printed here (sacct -D) for a job that ran 4 s, was requeued, then was
# cancelled while waiting; and for a job killed at its time limit.
REQUEUED_THEN_CANCELLED = """\
23|REQUEUED|0:0|4|4||2026-11-30T23:45:15|2026-11-30T23:45:19|00:00.001|1|1G|gpu01
23.batch|CANCELLED|0:15|4|4||2026-11-30T23:45:15|2026-11-30T23:45:19|00:00.001|1||gpu01
23|CANCELLED by 1002|0:0|0|0||2026-11-30T23:45:21|2026-11-30T23:45:21|00:00:00|1|1G|None assigned
"""
TIMED_OUT = """\
24|TIMEOUT|0:0|69|69||2026-11-30T23:45:45|2026-11-30T23:46:54|00:00.002|1|1G|gpu01
24.batch|CANCELLED|0:15|69|69|3280K|2026-11-30T23:45:45|2026-11-30T23:46:54|00:00.002|1||gpu01
"""


def test_a_job_cancelled_while_waiting_after_a_requeue_keeps_its_last_run():
    (record,) = parse.accounting_from_sacct(REQUEUED_THEN_CANCELLED)
    assert (record.state, record.attempts) == ("CANCELLED", 2)
    assert (record.nodes, record.elapsed_s) == ("gpu01", 4)
    assert record.start_time == datetime(2026, 11, 30, 23, 45, 15).astimezone(UTC)
    assert record.end_time == datetime(2026, 11, 30, 23, 45, 21).astimezone(UTC)
    assert record.exit_code is None and record.signal is None  # the last attempt never ran


def test_a_timed_out_job_takes_its_signal_from_the_batch_step():
    (record,) = parse.accounting_from_sacct(TIMED_OUT)
    assert (record.state, record.exit_code, record.signal) == ("TIMEOUT", 0, 15)
    assert record.max_rss_kb == 3280


def test_rest_job_times_are_utc_and_absent_when_not_reached():
    job = parse.job_from_rest({"job_id": 3, "job_state": "PENDING", "submit_time": 1795304109,
                               "start_time": 1795477030, "end_time": 1795477030, "restart_cnt": 2})
    assert job.submit_time == datetime.fromtimestamp(1795304109, tz=UTC)
    assert job.start_time is None and job.end_time is None   # Slurm's estimate is not a start
    assert job.restarts == 2


def test_rest_node_keeps_state_flags():
    node = parse.node_from_rest({"name": "gpu01", "state": "idle", "state_flags": ["DRAIN"],
                                 "reason": "portal: xid 79", "gres": "gpu:h100:4", "cpus": 32})
    assert node.state == "IDLE" and node.drained and node.gpus == 4


def test_coordinator_changes_read_from_slurmdbds_transaction_log():
    # Recorded from slurmdbd 22.05.8's log (`show transaction format=action,where,info`).
    text = "\n".join([
        "Add Associations|id_assoc=13|mod_time=1796134699, acct='qt-fs', user='alice', shares=1",
        "Modify Associations|(id_assoc=12)|shares=7",
        "Add Account Coord|carol|nlp",
        "Remove Account Coords|(user='erin')|",
        "Remove Account Coords|(user='dave') && (acct='a1' || acct='a2')|",
        "Remove Associations|id_assoc=332 || id_assoc=331|",
        "Remove Account Coords|(acct='qt-14d3e6f6')|",
        "Remove Users|(name='bob')|",
        "Remove Accounts|name='qt-old'|",
        "Remove Accounts|name in('v11-a','v11-b')|",   # 24.11.5's form
    ])
    changes = parse.coordinator_changes(text)
    f = frozenset
    assert changes == [
        parse.CoordinatorChange("add", f({"carol"}), f({"nlp"})),
        parse.CoordinatorChange("other", f({"erin"}), f()),             # every right of erin
        parse.CoordinatorChange("remove", f({"dave"}), f({"a1", "a2"})),
        parse.CoordinatorChange("other", f(), f({"qt-14d3e6f6"})),
        parse.CoordinatorChange("other", f({"bob"}), f()),
        parse.CoordinatorChange("other", f(), f({"qt-old"})),
        parse.CoordinatorChange("other", f(), f({"v11-a", "v11-b"})),
    ]


def test_a_transaction_that_may_touch_coordinators_but_cannot_be_read_asks_for_a_full_read():
    assert parse.coordinator_changes("Remove Account Coords|(id=7)|") is None
    assert parse.coordinator_changes("Something New In 26.05|x|y") is None
    assert parse.coordinator_changes("") == []

"""Each slurmrestd API version's shapes, on answers recorded from real daemons.

tests/slurm/recorded/ holds what slurmrestd answered (capture.py made them): v0.0.38 from the
host's Slurm 22.05 (GETs only), v0.0.40-v0.0.42 from Slurm 24.11.5 and v0.0.42-v0.0.44 from
Slurm 26.05.5 (cluster/rootcluster.py), each next to `scontrol show job -o` for the same job,
run by that cluster's own scontrol at the same moment. Parsed jobs are compared with those facts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from portal.slurm import parse, rest_versions
from portal.slurm.errors import SlurmNotFound, SlurmRejected, SlurmUnavailable
from portal.slurm.readers import CliRestReader
from portal.slurm.transport import SlurmAlreadyDone, raise_for_errors
from portal.slurm.types import JobSpec

RECORDED = Path(__file__).parent / "recorded"
# (API version, Slurm release) pairs with recorded jobs.
RECORDED_4X = [(p.parent.name, p.name) for p in sorted(RECORDED.glob("v0.0.4*/*")) if p.is_dir()]
JOBS = ("running", "held", "exit3", "killed", "held_again")


def load(version: str, release: str, name: str) -> dict:
    return json.loads((RECORDED / version / release / f"{name}.json").read_text())


def facts(scontrol_line: str) -> dict[str, str]:
    """`scontrol show job -o` as a dict (values never hold spaces in these recorded jobs)."""
    pairs = (item.partition("=") for item in scontrol_line.split() if "=" in item)
    return {key: value for key, _, value in pairs}


def scontrol_minutes(value: str) -> int:
    return parse.minutes(value)


def test_recordings_cover_every_version_the_portal_speaks():
    assert {v for v, _ in RECORDED_4X} | {"v0.0.38"} == set(rest_versions.SUPPORTED)
    assert ("v0.0.42", "24.11") in RECORDED_4X and ("v0.0.42", "26.05") in RECORDED_4X


# ---------------------------------------------------------------- negotiation

@pytest.mark.parametrize(("release", "listed", "chosen"), [
    ("22.05", ["v0.0.38"], "v0.0.38"),
    ("24.11", ["v0.0.40", "v0.0.41", "v0.0.42"], "v0.0.42"),
    ("26.05", ["v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"], "v0.0.44"),
])
def test_it_picks_the_highest_version_both_know_from_the_daemons_openapi(release, listed, chosen):
    doc = json.loads((RECORDED / "openapi" / f"slurm-{release}.json").read_text())
    assert doc["info"]["version"].startswith(("0.0.38", f"Slurm-{release}"))
    assert rest_versions.listed_versions(doc) == listed
    assert rest_versions.choose(listed) == chosen


def test_slurmdb_paths_do_not_count_as_a_slurmctld_version():
    doc = {"paths": {"/slurmdb/v0.0.45/jobs": {}, "/slurm/v0.0.38/ping": {}, "/openapi/v3": {}}}
    assert rest_versions.listed_versions(doc) == ["v0.0.38"]


def test_no_common_version_is_unavailable_with_both_lists():
    with pytest.raises(SlurmUnavailable, match=r"v0\.0\.37.*no version in common"):
        rest_versions.choose(["v0.0.37"])
    with pytest.raises(SlurmUnavailable):
        rest_versions.for_version("v0.0.39")


# ---------------------------------------------------------------- v0.0.38: unchanged

SPEC = JobSpec(name="n", account="vision", script="#!/bin/bash\ntrue\n", working_dir="/home/alice",
               partition="gpu", nodes=2, gpus_per_node=4, gpu_type="h100", cpus_per_task=8, mem_mb=4096,
               time_limit_min=30, requeue=False, stdout="/o", stderr="/e", comment="c", hold=True,
               environment={"A": "1"})


def test_v0038_submit_body_is_the_one_the_gateway_always_sent():
    assert rest_versions.for_version("v0.0.38").submit_body(SPEC) == {
        "job": {"name": "n", "account": "vision", "current_working_directory": "/home/alice",
                "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", "A": "1"}, "no_requeue": True,
                "time_limit": 30, "nodes": "2-2", "cpus_per_task": 8, "comment": "c", "hold": True,
                "partition": "gpu", "memory_per_node": 4096, "gres": "gpu:h100:4",
                "standard_output": "/o", "standard_error": "/e"},
        "script": "#!/bin/bash\ntrue\n"}


def test_v0038_results_are_parse_py_on_the_body_as_is():
    api = rest_versions.for_version("v0.0.38")
    job = load("v0.0.38", "22.05", "job_read")["response"]["jobs"][0]
    nodes = load("v0.0.38", "22.05", "nodes_read")["response"]["nodes"]
    partitions = load("v0.0.38", "22.05", "partitions_read")["response"]["partitions"]
    assert api.job(job) == parse.job_from_rest(job)
    assert api.job_detail(job) == parse.job_detail_from_rest(job)
    assert [api.node(n) for n in nodes] == [parse.node_from_rest(n) for n in nodes]
    assert [api.partition(p) for p in partitions] == [parse.partition_from_rest(p) for p in partitions]
    assert api.jobs_probe_params(5) == {"update_time": 5}
    assert api.jobs_changed(None) is False and api.jobs_changed({"jobs": []}) is True


def test_v0038_job_matches_scontrol_on_the_host():
    recorded = load("v0.0.38", "22.05", "job_read")
    job = rest_versions.for_version("v0.0.38").job(recorded["response"]["jobs"][0])
    held = facts(recorded["scontrol_show_job"])
    assert_job_matches(job, held)


# ---------------------------------------------------------------- v0.0.40+: jobs against scontrol

def assert_job_matches(job, held: dict[str, str]) -> None:
    assert str(job.job_id) == held["JobId"]
    assert job.name == held["JobName"]
    assert job.user == held["UserId"].split("(")[0]
    assert (job.account, job.partition, job.state) == (held["Account"], held["Partition"], held["JobState"])
    # parse.job_from_rest keeps Slurm's "None" (it always did on v0.0.38); scontrol adds detail
    # after a colon ("RaisedSignal:9(Killed)").
    assert job.reason == held["Reason"].split(":")[0]
    assert job.nodes == ("" if held["NodeList"] == "(null)" else held["NodeList"])
    assert job.comment == held.get("Comment", "")
    assert job.restarts == int(held["Restarts"])
    assert (job.stdout, job.working_dir) == (held["StdOut"], held["WorkDir"])
    assert job.time_limit_min == scontrol_minutes(held["TimeLimit"])
    # scontrol prints local time; these machines run in UTC.
    assert job.submit_time == datetime.fromisoformat(held["SubmitTime"]).replace(tzinfo=UTC)
    code, signal = (int(x) for x in held["ExitCode"].split(":"))
    assert job.exit_code == (128 + signal if signal else code)


@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
@pytest.mark.parametrize("name", JOBS)
def test_a_4x_job_reads_as_scontrol_shows_it(version, release, name):
    recorded = load(version, release, f"job_{name}")
    api = rest_versions.for_version(version)
    data = recorded["response"]["jobs"][0]
    held = facts(recorded["scontrol_show_job"])
    assert_job_matches(api.job(data), held)
    detail = api.job_detail(data)
    assert detail.priority == int(held["Priority"])
    assert detail.requeue == (held["Requeue"] == "1")
    assert detail.state == held["JobState"]
    assert detail.nodes == ("" if held["NodeList"] == "(null)" else held["NodeList"])


@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_exit_codes_and_signals_read_as_on_22_05(version, release):
    api = rest_versions.for_version(version)
    exit3 = api.job(load(version, release, "job_exit3")["response"]["jobs"][0])
    killed = api.job(load(version, release, "job_killed")["response"]["jobs"][0])
    running = api.job(load(version, release, "job_running")["response"]["jobs"][0])
    assert (exit3.state, exit3.exit_code) == ("FAILED", 3)
    assert (killed.state, killed.exit_code) == ("FAILED", 137)  # SIGKILL, shown like a shell
    assert (running.state, running.exit_code, running.end_time) == ("RUNNING", 0, None)
    assert running.start_time is not None


# ---------------------------------------------------------------- v0.0.40+: what the submit asked for

@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_the_submit_body_sent_is_the_one_built_now_and_slurm_held_what_it_asked(version, release):
    api = rest_versions.for_version(version)
    tag = version.replace(".", "")
    specs = {
        "running": JobSpec(name=f"rec-{tag}-running", script="#!/bin/bash\nsleep 300\n", gpus_per_node=1,
                           gpu_type="h100", mem_mb=1024, cpus_per_task=2, comment=f"rec-{tag}-running",
                           stdout="/tmp/rec-%j.out", environment={"REC": "1"}, account="vision",
                           working_dir="/tmp", time_limit_min=5),
        "held": JobSpec(name=f"rec-{tag}-held", script="#!/bin/bash\nsleep 300\n", hold=True, requeue=False,
                        nodes=2, comment=f"rec-{tag}-held", account="vision", working_dir="/tmp",
                        time_limit_min=5),
    }
    for name, spec in specs.items():
        sent = load(version, release, f"submit_{name}")
        assert sent["request"] == api.submit_body(spec)
        assert sent["status"] == 200 and sent["response"]["errors"] == []
        assert api.job_id_of_submit(sent["response"]) == int(facts(load(version, release, f"job_{name}")
                                                                    ["scontrol_show_job"])["JobId"])
    running = facts(load(version, release, "job_running")["scontrol_show_job"])
    assert running["TresPerNode"] == "gres/gpu:h100:1"
    assert (running["MinMemoryNode"], running["CPUs/Task"], running["TimeLimit"]) == ("1G", "2", "00:05:00")
    assert running["Requeue"] == "1"
    held = facts(load(version, release, "job_held")["scontrol_show_job"])
    assert (held["NumNodes"], held["Requeue"], held["Reason"], held["Priority"]) == ("2-2", "0", "JobHeldUser", "0")


def test_4x_submit_body_shapes():
    body = rest_versions.for_version("v0.0.42").submit_body(SPEC)
    assert "script" not in body and body["job"]["script"] == SPEC.script
    job = body["job"]
    assert job["environment"] == ["PATH=/usr/local/bin:/usr/bin:/bin", "A=1"]
    assert job["requeue"] is False and "no_requeue" not in job and "gres" not in job
    assert job["time_limit"] == {"set": True, "infinite": False, "number": 30}
    assert job["memory_per_node"] == {"set": True, "infinite": False, "number": 4096}
    assert job["tres_per_node"] == "gres/gpu:h100:4"


# ---------------------------------------------------------------- v0.0.40+: hold, cancel, probe, errors

@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_hold_and_release_bodies_were_accepted(version, release):
    for step in ("release", "hold"):
        recorded = load(version, release, f"update_{step}")
        assert recorded["request"] == rest_versions.for_version(version).hold_body(step == "hold")
        assert recorded["status"] == 200 and recorded["response"]["errors"] == []
    # Held again, though the release may have let it start in between (it did once on 24.11:
    # RUNNING with Reason=JobHeldUser).
    again = facts(load(version, release, "job_held_again")["scontrol_show_job"])
    assert again["Reason"] == "JobHeldUser" and again["JobState"] in {"PENDING", "RUNNING"}


@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_cancel_answers(version, release):
    api = rest_versions.for_version(version)
    api.raise_for_signal_status(load(version, release, "cancel_running")["response"])
    finished = load(version, release, "cancel_finished")["response"]
    unknown = load(version, release, "error_cancel_unknown")["response"]
    if version in ("v0.0.40", "v0.0.41"):
        # 24.11 answers both with 200 and no error at all: nothing to tell them apart by.
        api.raise_for_signal_status(finished)
        api.raise_for_signal_status(unknown)
    else:
        with pytest.raises(SlurmAlreadyDone):
            api.raise_for_signal_status(finished)
        with pytest.raises(SlurmNotFound):
            api.raise_for_signal_status(unknown)


@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_errors_map_to_the_same_typed_errors(version, release):
    for name, error in (("get_unknown", SlurmNotFound), ("hold_unknown", SlurmNotFound),
                        ("release_foreign", SlurmRejected)):
        with pytest.raises(error):
            raise_for_errors(load(version, release, f"error_{name}")["response"]["errors"])


@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_the_change_probe(version, release):
    api = rest_versions.for_version(version)
    recorded = load(version, release, "jobs_update_time_quiet")
    if version in ("v0.0.40", "v0.0.41"):
        assert recorded["status"] == 422  # 24.11 cannot parse any update_time for these two
        assert api.jobs_probe_params(recorded["update_time"]) is None
        return
    assert api.jobs_probe_params(7) == {"update_time": 7}
    assert recorded["status"] == 200 and api.jobs_changed(recorded["response"]) is False
    assert api.jobs_changed({**recorded["response"], "warnings": []}) is True  # all jobs gone
    changed = load(version, release, "jobs_update_time_quiet")["response"] | {"jobs": [{"job_id": 1}]}
    assert api.jobs_changed(changed) is True


# ---------------------------------------------------------------- v0.0.40+: nodes and partitions

@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_nodes_read_as_sinfo_shows_them(version, release):
    recorded = load(version, release, "nodes")
    api = rest_versions.for_version(version)
    nodes = {n.name: n for n in (api.node(d) for d in recorded["response"]["nodes"])}
    for line in recorded["sinfo"].splitlines():
        name, short, _long, reason, gres, cpus, _alloc = line.split("|")
        node = nodes[name]
        assert ("DRAIN" in node.flags) == short.startswith(("drain", "drng"))
        assert node.reason == ("" if reason == "none" else reason)
        assert (node.gres, node.cpus, node.partitions) == (gres, int(cpus), ("gpu",))
    assert nodes["gpu02"].reason == "recorded drain"
    assert nodes["gpu01"].real_memory_mb == 16384
    single = load(version, release, "node_gpu01")["response"]["nodes"][0]
    assert api.node_address(single) == ("127.0.0.1", 7818)


@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_partitions_read_as_scontrol_shows_them(version, release):
    recorded = load(version, release, "partitions")
    part = rest_versions.for_version(version).partition(recorded["response"]["partitions"][0])
    held = facts(recorded["scontrol_show_partition"])
    assert (part.name, part.nodes, part.state) == (held["PartitionName"], held["Nodes"], held["State"])
    assert part.max_time_min == scontrol_minutes(held["MaxTime"])
    assert part.total_nodes == int(held["TotalNodes"])


@pytest.mark.parametrize(("version", "release"), RECORDED_4X)
def test_the_default_partition_comes_from_scontrol_where_the_api_does_not_flag_it(version, release):
    recorded = load(version, release, "partitions")
    asked = []
    reader = CliRestReader(rest=lambda method, path: recorded["response"],
                           cli=lambda args: asked.append(args) or recorded["scontrol_show_partition"],
                           api=lambda: rest_versions.for_version(version))
    (part,) = reader.list_partitions()
    assert facts(recorded["scontrol_show_partition"])["Default"] == "YES"
    assert part.is_default
    assert asked == [["scontrol", "show", "partition", "-o"]]


def test_v0_0_38_flags_the_default_partition_itself_and_asks_no_scontrol():
    asked = []
    reader = CliRestReader(rest=lambda method, path: {"partitions": [{"name": "gpu", "flags": ["default"]}]},
                           cli=lambda args: asked.append(args) or "")
    (part,) = reader.list_partitions()
    assert part.is_default and asked == []


def test_the_default_partition_read_from_scontrols_one_line_form():
    text = ("PartitionName=debug Default=NO MaxTime=01:00:00 State=UP\n"
            "PartitionName=gpu AllowGroups=ALL Default=YES QoS=N/A State=UP\n")
    assert parse.default_partition_from_scontrol(text) == "gpu"
    assert parse.default_partition_from_scontrol("PartitionName=gpu Default=NO\n") is None


def test_numbers_states_and_exit_codes_of_4x():
    assert rest_versions.number({"set": True, "infinite": False, "number": 5}) == 5
    assert rest_versions.number({"set": False, "infinite": False, "number": 0}) is None
    assert rest_versions.number({"set": True, "infinite": True, "number": 0}) is None
    assert rest_versions.number(7) == 7
    api = rest_versions.for_version("v0.0.42")
    node = api.node({"name": "n1", "state": ["IDLE", "DRAIN"]})
    assert (node.state, node.flags) == ("IDLE", ("DRAIN",))
    signalled = {"return_code": {"set": False}, "signal": {"id": {"set": True, "number": 15}}}
    assert rest_versions.wait_status(signalled) == 15
    assert rest_versions.wait_status({"return_code": {"set": True, "number": 2}}) == 512


@pytest.mark.parametrize(("listed", "word"), [
    (["PENDING", "COMPLETING"], "COMPLETING"),   # requeued, its old run still being cleaned up (24.11)
    (["RUNNING"], "RUNNING"), (["PENDING", "REQUEUED"], "REQUEUED"), (["COMPLETED"], "COMPLETED"),
    (["RUNNING", "CONFIGURING"], "CONFIGURING"), ("PENDING", "PENDING"), ([], ""),
])
def test_a_4x_job_state_list_reads_as_the_one_word_v0_0_38_and_squeue_give(listed, word):
    """A job the recovery requeued must not read as PENDING while its old run is still being
    cleaned up: placing it then is undone when Slurm sets its ~120 s requeue delay at the end."""
    api = rest_versions.for_version("v0.0.42")
    assert api.job_v38({"job_id": 1, "job_state": listed})["job_state"] == word

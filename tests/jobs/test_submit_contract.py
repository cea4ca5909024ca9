"""What the user asked for is what Slurm holds: every submit field, read back with scontrol.

Each way into Slurm is covered: the API, the web form, a template, clone-and-edit, and a plain
sbatch job the tracker adopts (there the portal's row must match Slurm). Jobs are submitted
held unless a test needs one to run; all are cancelled at the end.
"""

from __future__ import annotations

import pwd
import re
import shutil
import stat
import subprocess
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pytest

from portal.jobs import tracking
from portal.jobs.models import Job, JobTemplate
from portal.slurm import gateway
from portal.teams.models import Membership, Team
from tests.api.conftest import ApiClient
from tests.conftest import wait_until
from tests.jobs.views_support import client_for, home

pytestmark = pytest.mark.usefixtures("slurm_accounts")


@dataclass(frozen=True)
class Asked:
    """A job request with every field set away from its default."""

    name: str
    team: str = "vision"
    partition: str = "gpu"
    nodes: int = 2
    gpus_per_node: int = 2
    gpu_type: str = "h100"
    cpus_per_task: int = 3
    mem_mb: int = 2048
    time_limit_min: int = 7
    requeue: bool = False
    hold: bool = True
    checkpoint_dir: str = ""
    script: str = "#!/bin/bash\nsleep 60\n"


@pytest.fixture
def vision(alice, bob):
    team = Team.objects.create(name="vision")
    for user in (alice, bob):
        Membership.objects.create(user=user, team=team)
    return team


@pytest.fixture
def slurm_ids():
    """Slurm job ids a test made; all cancelled afterwards."""
    ids: list[int] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *map(str, ids)], check=False, capture_output=True)


@pytest.fixture
def fresh_tracker():
    tracking.reset_tracker()
    yield
    tracking.reset_tracker()


def scontrol_job(job_id: int) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], check=True, capture_output=True,
                         text=True).stdout
    # One line of Key=Value pairs; a value may hold spaces (a job name), a key never does.
    return dict(pair.split("=", 1) for pair in re.split(r" +(?=[A-Za-z][\w/:]*=)", out.strip()))


def job_tres(held: dict[str, str]) -> dict[str, str]:
    """The job's TRES from scontrol: 22.05 prints TRES=; 24.11 and later AllocTRES= once the job
    has started and ReqTRES= (what was asked) before."""
    alloc = held.get("AllocTRES", "(null)")
    text = held["TRES"] if "TRES" in held else (held["ReqTRES"] if alloc == "(null)" else alloc)
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def minutes(limit: str) -> int:
    """Slurm's [D-]HH:MM:SS as minutes."""
    days, _, clock = limit.rpartition("-")
    hours, mins, _ = (int(x) for x in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins


def megabytes(size: str) -> int:
    return int(float(size[:-1]) * {"M": 1, "G": 1024, "T": 1024 * 1024}[size[-1]])


def assert_slurm_holds(job_id: int, asked: Asked, *, user: str = "alice", job: Job | None = None) -> dict:
    """Compare each field Slurm holds for `job_id` with what was asked; return Slurm's view."""
    held = scontrol_job(job_id)
    gpus = asked.nodes * asked.gpus_per_node
    tres = job_tres(held)
    seen = {
        "nodes": {int(n) for n in held["NumNodes"].split("-")},   # "2-2" while pending: min and max
        "tres_nodes": int(tres["node"]), "tres_gpus": int(tres.get("gres/gpu", 0)),
        "tres_typed_gpus": int(tres.get(f"gres/gpu:{asked.gpu_type}", 0)),
        # 24.11 prints gres/gpu:h100:2 where 22.05 printed gres:gpu:h100:2.
        "gres_per_node": held["TresPerNode"].replace("gres/", "gres:"), "cpus_per_task": int(held["CPUs/Task"]),
        "mem_mb": megabytes(held["MinMemoryNode"]), "time_limit_min": minutes(held["TimeLimit"]),
        "account": held["Account"], "partition": held["Partition"], "requeue": held["Requeue"] == "1",
        "name": held["JobName"], "user": held["UserId"].split("(")[0], "workdir": held["WorkDir"],
        "held": held["Reason"] == "JobHeldUser",
    }
    wanted = {
        "nodes": {asked.nodes}, "tres_nodes": asked.nodes, "tres_gpus": gpus, "tres_typed_gpus": gpus,
        "gres_per_node": f"gres:gpu:{asked.gpu_type}:{asked.gpus_per_node}", "cpus_per_task": asked.cpus_per_task,
        "mem_mb": asked.mem_mb, "time_limit_min": asked.time_limit_min, "account": asked.team,
        "partition": asked.partition, "requeue": asked.requeue, "name": asked.name, "user": user,
        "workdir": str(home(user)), "held": asked.hold,
    }
    assert seen == wanted
    if job is not None:
        assert held["Comment"] == f"portal:{job.uuid}"
        assert held["StdOut"] == f"{home(user)}/slurm-{job_id}.out"
    return held


def assert_row_matches(job: Job, asked: Asked) -> None:
    row = {name: getattr(job, name) for name in ("name", "partition", "nodes", "gpus_per_node", "gpu_type",
                                                  "cpus_per_task", "mem_mb", "time_limit_min", "requeue")}
    assert row == {name: getattr(asked, name) for name in row}
    assert job.team.name == asked.team


def api_submit(user, asked: Asked, slurm_ids: list[int]) -> Job:
    resp = ApiClient(user).post("/jobs", asdict(asked))
    assert resp.status_code == 201, resp.content
    slurm_ids.append(resp.json()["slurm_job_id"])
    return Job.objects.get(pk=resp.json()["id"])


def form_post(client, data: dict, slurm_ids: list[int]) -> Job:
    key = uuid.uuid4().hex
    post = {k: ("on" if v is True else v) for k, v in data.items() if v is not False and v is not None}
    resp = client.post("/jobs/new/", {**post, "idempotency_key": key})
    assert resp.status_code == 302, resp.content.decode()[-2000:]
    job = Job.objects.get(idempotency_key=key)
    slurm_ids.append(job.slurm_job_id)
    return job


def offered(client, query: str) -> dict:
    """The submit form's values as the page offers them (template or clone)."""
    form = client.get(f"/jobs/new/?{query}").context["form"]
    return {name: form[name].value() for name in form.fields}


def test_an_api_submit_reaches_slurm_with_every_field(alice, vision, unique, slurm_ids):
    asked = Asked(name=f"contract-api-{unique}",
                  checkpoint_dir=f"{home('alice')}/contract-{unique}/ckpt")
    job = api_submit(alice, asked, slurm_ids)
    assert_slurm_holds(job.slurm_job_id, asked, job=job)
    assert_row_matches(job, asked)
    assert job.checkpoint_dir == asked.checkpoint_dir
    made = Path(asked.checkpoint_dir)
    try:
        assert (made.stat().st_uid, stat.S_IMODE(made.stat().st_mode)) == (pwd.getpwnam("alice").pw_uid, 0o700)
    finally:
        shutil.rmtree(made.parent)


def test_a_form_submit_reaches_slurm_with_every_field(alice, vision, unique, slurm_ids):
    asked = Asked(name=f"contract-form-{unique}", requeue=True, gpus_per_node=1, nodes=3)
    job = form_post(client_for(alice), asdict(asked), slurm_ids)
    assert_slurm_holds(job.slurm_job_id, asked, job=job)
    assert_row_matches(job, asked)


def test_a_template_submit_reaches_slurm_with_the_templates_values(alice, vision, unique, slurm_ids):
    template = JobTemplate.objects.create(team=vision, name=f"contract-{unique}", partition="gpu", nodes=2,
                                          gpus_per_node=3, gpu_type="h100", cpus_per_task=5, mem_mb=3072,
                                          time_limit_min=9, script="#!/bin/bash\nsleep 30\n")
    client = client_for(alice)
    values = offered(client, f"template={template.pk}")
    job = form_post(client, {**values, "hold": True}, slurm_ids)
    asked = Asked(name=template.name, nodes=2, gpus_per_node=3, cpus_per_task=5, mem_mb=3072, time_limit_min=9,
                  requeue=values["requeue"], script=template.script)
    assert_slurm_holds(job.slurm_job_id, asked, job=job)
    assert_row_matches(job, asked)


def test_clone_and_edit_reaches_slurm_with_the_original_and_the_edit(alice, vision, unique, slurm_ids):
    original = Asked(name=f"contract-orig-{unique}", nodes=4, gpus_per_node=1, cpus_per_task=2)
    source = api_submit(alice, original, slurm_ids)
    client = client_for(alice)
    values = offered(client, f"clone={source.pk}")
    job = form_post(client, {**values, "time_limit_min": 11, "hold": True}, slurm_ids)
    asked = replace(original, name=f"{original.name} (copy)", time_limit_min=11)
    assert_slurm_holds(job.slurm_job_id, asked, job=job)
    assert_row_matches(job, asked)


@pytest.mark.usefixtures("fresh_tracker")
def test_an_adopted_sbatch_job_shows_what_slurm_holds(alice, vision, unique, slurm_ids):
    asked = Asked(name=f"contract-sbatch-{unique}", nodes=2, gpus_per_node=1, cpus_per_task=2, mem_mb=1024,
                  time_limit_min=5)
    out = subprocess.run(
        ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-H", "--no-requeue", "-A", "vision", "-p", "gpu",
         "-J", asked.name, "-N", "2", "--gres=gpu:h100:1", "-c", "2", "--mem=1024", "-t", "5",
         "-o", f"{home('alice')}/slurm-%j.out", "--wrap", "sleep 60"],
        check=True, capture_output=True, text=True, cwd=home("alice"))
    slurm_id = int(out.stdout.strip().split(";")[0])
    slurm_ids.append(slurm_id)
    assert_slurm_holds(slurm_id, asked)

    def adopted():
        tracking.track_jobs()
        return Job.objects.filter(slurm_job_id=slurm_id).first()
    row = wait_until(adopted, timeout=30, interval=0.3, what="the tracker to adopt the sbatch job")
    assert row.adopted and row.owner == alice
    assert_row_matches(row, asked)


@pytest.mark.slow
def test_a_two_node_job_runs_on_two_nodes_with_the_portals_environment(alice, vision, unique, slurm_ids):
    script = ("#!/bin/bash\n"
              "echo \"ckpt=$CHECKPOINT_DIR uuid=$PORTAL_JOB_UUID nodes=$SLURM_JOB_NUM_NODES\"\n"
              "srun bash -c 'echo \"on=$SLURMD_NODENAME gpus=$SLURM_STEP_GPUS$CUDA_VISIBLE_DEVICES\"'\n")
    asked = Asked(name=f"contract-run-{unique}", gpus_per_node=1, cpus_per_task=1, mem_mb=1024, time_limit_min=2,
                  hold=False, script=script)
    job = api_submit(alice, asked, slurm_ids)
    state = wait_until(lambda: gateway.get_job(job.slurm_job_id).finished and gateway.get_job(job.slurm_job_id).state,
                       timeout=90, what="the two-node job to finish")
    assert state == "COMPLETED"
    held = scontrol_job(job.slurm_job_id)
    assert held["NumNodes"] == "2"
    nodes = set(subprocess.run(["scontrol", "show", "hostnames", held["NodeList"]], check=True,
                               capture_output=True, text=True).stdout.split())
    assert len(nodes) == 2
    output = (home("alice") / f"slurm-{job.slurm_job_id}.out").read_text()
    assert f"ckpt={job.checkpoint_dir} uuid={job.uuid} nodes=2" in output
    assert set(re.findall(r"^on=(\S+)", output, re.M)) == nodes   # one task on each of the two nodes

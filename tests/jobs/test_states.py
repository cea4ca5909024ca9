"""Job and node states: one set of states and one word for each, on every page and in the API."""

from __future__ import annotations

import re
import subprocess

import pytest

from portal.jobs import explain, states
from portal.jobs.services import QueueAhead
from portal.nodes.services import sync_nodes
from portal.slurm import gateway
from portal.slurm.types import JobSpec
from tests.api.conftest import ApiClient
from tests.conftest import wait_until
from tests.jobs.views_support import build_world, client_for, home, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user):
    return build_world(make_user)


def _squeue_states() -> list[str]:
    """Every job state this Slurm can report, as squeue itself lists them."""
    out = subprocess.run(["squeue", "-t", "NO_SUCH_STATE"], check=False, capture_output=True, text=True)
    listed = re.search(r"Valid job states include: ([A-Za-z_,]+)", out.stderr)
    assert listed, out.stderr
    return listed.group(1).upper().split(",")   # 24.11 lists them in lower case


def test_every_state_slurm_can_report_is_active_or_ended_with_its_own_words(cluster):
    reported = _squeue_states()
    assert "CONFIGURING" in reported
    for state in reported:
        assert (state in states.ACTIVE) != (state in states.ENDED), state
        assert state in states.LABELS, state
    # What the tracker writes besides Slurm's states: a row not confirmed yet, and one never queued.
    assert {"", "SUBMIT_FAILED"} <= states.ALL
    assert len(set(states.LABELS.values())) == len(states.LABELS)


def test_the_api_filters_by_configuring(world, cluster):
    make_job(world["alice"], world["vision"], name="starting", state="CONFIGURING")
    resp = ApiClient(world["alice"]).get("/jobs", state="CONFIGURING")
    assert resp.status_code == 200, resp.content
    assert [job["name"] for job in resp.json()["results"]] == ["starting"]


def test_the_state_filter_offers_each_word_once(world):
    html = client_for(world["alice"]).get("/jobs/").content.decode()
    select = html[html.index('name="state"'):]
    select = select[:select.index("</select>")]
    words = re.findall(r"<option[^>]*>([^<]*)</option>", select)
    assert len(words) == len(set(words)), words
    assert "Completed" in words and "Starting" in words


def test_a_held_job_reads_held_and_a_waiting_one_waiting(world):
    make_job(world["alice"], world["vision"], name="held-one", state="PENDING", reason="JobHeldUser", start_time=None)
    make_job(world["alice"], world["vision"], name="queued-one", state="PENDING", reason="Priority",
             start_time=None)
    html = client_for(world["alice"]).get("/jobs/").content.decode()
    held, queued = (html[html.index(name):][:900] for name in ("held-one", "queued-one"))
    assert ">Held<" in held and ">Waiting<" not in held
    assert ">Waiting<" in queued


def test_a_node_reads_the_same_on_the_home_page_and_the_node_pages(world, slurm_accounts, unique):
    # One CPU of a 32-CPU node in use: Slurm calls it MIXED.
    slurm_id = gateway.submit_job("alice", JobSpec(
        name=f"st-mixed-{unique}", account="vision", script="#!/bin/bash\nsleep 60\n", partition="cpu",
        working_dir=str(home("alice")), stdout="/dev/null", time_limit_min=2))
    try:
        node = wait_until(lambda: (job := gateway.get_job(slurm_id)).state == "RUNNING" and job.nodes,
                          what="the job to start")
        wait_until(lambda: gateway.get_node(node).state == "MIXED", what=f"{node} to be MIXED")
        sync_nodes()
        client = client_for(world["alice"])
        home_page, detail = client.get("/").content.decode(), client.get(f"/nodes/{node}/").content.decode()
    finally:
        gateway.cancel_job("alice", slurm_id)
    row = home_page[home_page.index(f">{node}</a></td>"):][:300]
    assert ">partly used<" in row and "mixed" not in row.split("title=")[0]
    assert ">partly used<" in detail


@pytest.mark.parametrize(("ahead", "says", "never"), [
    (QueueAhead(3, 5, own=(11, 12), team=0, others=0), "Only your own jobs are ahead of it", "other teams"),
    (QueueAhead(3, 5, own=(11,), team=1, others=0), "Jobs of your own team are ahead", "other teams"),
    (QueueAhead(4, 5, own=(11,), team=0, others=2), "Jobs of other teams with a higher priority", "Only your"),
    (QueueAhead(1, 5, own=(), team=0, others=0), "It is next in line", "ahead of it"),
])
def test_the_reason_a_job_waits_names_whose_jobs_are_ahead(ahead, says, never):
    words = explain.waiting_words("Priority", ahead)
    assert says in words and never not in words


@pytest.mark.slow
def test_a_job_behind_its_owners_own_jobs_says_so_and_lists_them(world, slurm_accounts, unique):
    # Two whole-node jobs fill the small cpu partition; two more of alice's wait behind them.
    spec = JobSpec(name=f"st-queue-{unique}", account="vision", script="#!/bin/bash\nsleep 60\n",
                   working_dir=str(home("alice")), stdout="/dev/null", partition="cpu", cpus_per_task=32,
                   time_limit_min=2)
    ids = [gateway.submit_job("alice", spec) for _ in range(4)]
    try:
        wait_until(lambda: gateway.get_job(ids[3]).reason in {"Priority", "Resources"}, timeout=30,
                   what="the last job to wait its turn")
        job = make_job(world["alice"], world["vision"], state="PENDING", reason=gateway.get_job(ids[3]).reason,
                       start_time=None, slurm_job_id=ids[3], partition="cpu", nodes_list="")
        html = client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode()
    finally:
        for slurm_id in ids:
            gateway.cancel_job("alice", slurm_id)
    position = html[html.index('id="queue-position"'):]
    position = position[:position.index("</p>")]
    assert str(ids[2]) in position.split("Your own jobs ahead of it:")[1]
    assert "Only your own jobs are ahead of it" in html
    assert "used less of their share" not in html

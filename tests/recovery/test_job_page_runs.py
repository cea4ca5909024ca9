"""The job page's Runs section: every attempt, the checkpoint found, GPU-hours lost, evidence."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.api.services import issue_token
from tests.jobs.views_support import VISION_LEAD, build_world, client_for, make_job
from tests.recovery.page_support import attempt, requeued_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user):
    people = build_world(make_user)
    job, first, second = requeued_job(people["alice"], people["vision"], timezone.now() - timedelta(hours=3))
    people.update(job=job, first=first, second=second)
    return people


def _runs(html: str) -> str:
    start = html.index('id="job-runs"')
    return html[start:html.index("</section>", start)]


def test_a_requeued_job_shows_both_runs_in_plain_words(world):
    runs = _runs(client_for(world["alice"]).get(f"/jobs/{world['job'].pk}/").content.decode())
    assert "2 runs" in runs and "0.67 GPU-hours lost" in runs
    first, second = runs.split('id="run-1"')[1].split('id="run-2"')
    assert "Requeued by the portal" in first
    assert "Node failure: Fatal hardware fault on a node it ran on" in first
    assert 'href="/nodes/gpu03/"' in first and "GPU 2 reported XID 79" in first
    assert "none: from the start" in first and "/ckpt/step-1200" in first
    assert "Finished" in second and "Started from checkpoint" in second and "/ckpt/step-1200" in second
    assert '<time datetime="' in second and " UTC</time>" in second  # times name their zone


def test_the_runs_ride_in_the_live_status_partial(world):
    partial = client_for(world["alice"]).get(f"/jobs/{world['job'].pk}/status/").content.decode()
    assert 'id="job-runs"' in partial and "<html" not in partial
    assert partial.index('id="job-status"') < partial.index('id="job-runs"')


def test_an_application_failure_shows_its_evidence(world):
    job = make_job(world["alice"], world["vision"], name="oom", state="FAILED", exit_code=137)
    attempt(job, 0, timezone.now() - timedelta(minutes=9), 5, outcome="failed", failure_class="application",
            cause="exit_code", exit_code=137, signal=9, failed_node="",
            evidence={"output_tail": ["step 41 loss 0.3", "Killed"], "node_health": {"gpu01": "clean"}})
    runs = _runs(client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode())
    assert "Failed, not restarted" in runs and "Job&#x27;s own failure: The job&#x27;s script failed" in runs
    assert "<dt>Exit code</dt><dd>137</dd>" in runs and "<dt>Signal</dt><dd>9</dd>" in runs
    assert "step 41 loss 0.3\nKilled" in runs and "gpu01: clean" in runs


def test_it_escapes_what_users_and_nodes_wrote(world):
    job = make_job(world["alice"], world["vision"], name="x", state="FAILED")
    attempt(job, 0, timezone.now() - timedelta(minutes=9), 5, outcome="failed", failure_class="application",
            cause="exit_code", detail="<img src=x onerror=alert(1)>",
            evidence={"output_tail": ["<script>alert(2)</script>"], "node_health": {"<b>": "<i>bad</i>"}})
    runs = _runs(client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode())
    assert "<img" not in runs and "<script>" not in runs and "<b>" not in runs and "<i>" not in runs
    assert "&lt;img src=x onerror=alert(1)&gt;" in runs and "&lt;script&gt;alert(2)&lt;/script&gt;" in runs


@pytest.mark.parametrize("who", ["bob", "charlie", "carol"])
def test_other_users_cannot_see_the_runs(world, who):
    client = client_for(world[who])
    assert client.get(f"/jobs/{world['job'].pk}/").status_code == 404
    assert client.get(f"/jobs/{world['job'].pk}/status/").status_code == 404


def test_the_team_lead_and_admins_see_them(world):
    for who in (VISION_LEAD, "admin"):
        assert 'id="run-2"' in client_for(world[who]).get(f"/jobs/{world['job'].pk}/").content.decode()


def test_a_job_without_runs_or_checkpoint_directory_has_no_section(world):
    job = make_job(world["alice"], world["vision"], checkpoint_dir="")
    assert 'id="job-runs"' not in client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode()


def test_a_checkpoint_directory_without_a_complete_checkpoint_says_so(world, tmp_path):
    pytest.importorskip("slurm_plugins.checkpoint_scan", reason="the checkpoint scanner (helper ckpt) is not merged")
    (tmp_path / "iter_0000100").mkdir()  # a half-written Megatron checkpoint: no latest_checkpointed_iteration.txt
    job = make_job(world["alice"], world["vision"], checkpoint_dir=str(tmp_path))
    runs = _runs(client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode())
    assert f"No complete checkpoint found in <span class=\"mono\">{tmp_path}</span>" in runs


def test_the_latest_complete_checkpoint_is_shown(world, tmp_path):
    pytest.importorskip("slurm_plugins.checkpoint_scan", reason="the checkpoint scanner (helper ckpt) is not merged")
    (tmp_path / "iter_0001200").mkdir()
    (tmp_path / "iter_0001200" / "model.pt").write_text("weights")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1200\n")
    job = make_job(world["alice"], world["vision"], checkpoint_dir=str(tmp_path))
    runs = _runs(client_for(world["alice"]).get(f"/jobs/{job.pk}/").content.decode())
    assert "Latest complete checkpoint" in runs and "(step 1200)" in runs and str(tmp_path) in runs


def test_the_api_shows_the_runs_to_the_owner_only(world):
    raw, _ = issue_token(user=world["alice"], name="t", days=1)
    body = client_for(world["alice"]).get(f"/api/v1/jobs/{world['job'].pk}",
                                          HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert body["restart_count"] == 1 and body["state"] == "COMPLETED"  # the existing fields stay
    first, second = body["attempts"]
    assert (first["number"], first["outcome"], first["cause"], first["failed_node"]) == (
        0, "requeued", "fatal_finding", "gpu03")
    assert first["lost_gpu_s"] == 2400 and second["resumed_from"] == "/ckpt/step-1200"
    raw_bob, _ = issue_token(user=world["bob"], name="t", days=1)
    assert client_for(world["bob"]).get(f"/api/v1/jobs/{world['job'].pk}",
                                        HTTP_AUTHORIZATION=f"Bearer {raw_bob}").status_code == 404

"""Goodput and ETTR per team and cluster-wide: a hand-computed case, the page, and /metrics."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from portal.recovery import reliability
from portal.recovery.models import Recovery
from tests.jobs.views_support import build_world, client_for, make_job
from tests.recovery.page_support import attempt, requeued_job
from workers.tasks.reliability import refresh_reliability_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user, settings):
    """vision: the requeued 4-GPU job (alice) and a 2-GPU job held after a crash loop (bob);
    nlp: a job with no recorded runs (carol), and a run that ended 9 days ago (outside the window)."""
    settings.PORTAL_RELIABILITY_CACHE_S = 0
    people = build_world(make_user)
    # Yesterday 01:00: every run and job below ends on that one day (for the day-by-day figures).
    t0 = timezone.localtime().replace(hour=1, minute=0, second=0, microsecond=0) - timedelta(days=1)
    job, first, _ = requeued_job(people["alice"], people["vision"], t0)
    Recovery.objects.create(job=job, attempt=first, cause="fatal_finding", failed_node="gpu03", done_at=t0)
    held = make_job(people["bob"], people["vision"], state="PENDING", reason="JobHeldAdmin", gpus_per_node=2,
                    submit_time=t0, start_time=None)
    attempt(held, 0, t0, 30, outcome="held", failure_class="infrastructure", cause="node_fail")  # lost: all of it
    make_job(people["carol"], people["nlp"], state="COMPLETED", submit_time=t0,
             start_time=t0 + timedelta(minutes=20), end_time=t0 + timedelta(minutes=80))
    old = make_job(people["carol"], people["nlp"], state="COMPLETED", submit_time=t0 - timedelta(days=9),
                   start_time=t0 - timedelta(days=9), end_time=t0 - timedelta(days=8))
    attempt(old, 0, t0 - timedelta(days=9), 60, outcome="requeued", lost_gpu_s=360)
    return people


# Hand-computed. vision allocated: 4 GPUs x (60 + 60) min + 2 x 30 min = 32400 GPU-s; lost: 4 x 600
# (since the checkpoint) + 2 x 1800 (held, no figure: the whole run) = 6000.
VISION_GOODPUT = (32400 - 6000) / 32400                  # 0.814815
# vision ETTR: only the requeued job ended: runs 120 min - lost 600 s / 4 GPUs = 6600 s of 140 min.
VISION_ETTR = 6600 / 8400                                # 0.785714
NLP_ETTR = 3600 / 4800                                   # one run of 60 min, 80 min after submit: 0.75
CLUSTER_ETTR = (6600 + 3600) / (8400 + 4800)             # 0.772727


def test_it_computes_goodput_and_ettr_for_a_hand_computed_case(world):
    report = reliability.compute(days=7)
    vision, nlp, cluster = (report.by_team[k] for k in ("vision", "nlp", reliability.CLUSTER))
    assert vision.goodput == pytest.approx(VISION_GOODPUT)
    assert vision.ettr == pytest.approx(VISION_ETTR)
    assert vision.lost_gpu_h == pytest.approx(6000 / 3600)
    assert (vision.runs, vision.jobs) == (3, 1)
    assert nlp.goodput is None  # its only run ended outside the window
    assert nlp.ettr == pytest.approx(NLP_ETTR)
    assert cluster.goodput == pytest.approx(VISION_GOODPUT)
    assert cluster.ettr == pytest.approx(CLUSTER_ETTR)


def test_a_longer_window_takes_in_the_older_run(world):
    nlp = reliability.compute(days=30).by_team["nlp"]
    assert nlp.goodput == pytest.approx(0.9)  # 3600 GPU-s, 360 lost


def test_metrics_show_the_figures_per_team_and_for_the_cluster(world):
    text = Client().get("/metrics").content.decode()
    lines = set(text.splitlines())
    assert f'portal_goodput_ratio{{team="vision"}} {round(VISION_GOODPUT, 6)}' in lines
    assert f'portal_ettr_ratio{{team="vision"}} {round(VISION_ETTR, 6)}' in lines
    assert f'portal_ettr_ratio{{team="nlp"}} {round(NLP_ETTR, 6)}' in lines
    assert f"portal_cluster_goodput_ratio {round(VISION_GOODPUT, 6)}" in lines
    assert f"portal_cluster_ettr_ratio {round(CLUSTER_ETTR, 6)}" in lines
    assert 'portal_auto_requeues_total{cause="fatal_finding"} 1' in lines
    assert 'portal_lost_gpu_seconds_total{team="vision"} 6000.0' in lines
    assert 'portal_lost_gpu_seconds_total{team="nlp"} 360.0' in lines  # counters never forget old runs
    assert "# TYPE portal_goodput_ratio gauge" in lines and "# TYPE portal_auto_requeues_total counter" in lines
    assert "portal_node_state" in text  # the node families are still there


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_computes_the_figures_that_scrapes_read(world, settings, celery_settled):
    """With the cache on, a scrape reads what the refresh task (run by the real worker) computed."""
    settings.PORTAL_RELIABILITY_CACHE_S = 60
    assert settings.CELERY_BEAT_SCHEDULE["refresh-reliability"]["task"] == refresh_reliability_task.name
    reliability.cache.delete(reliability.CACHE_KEY)
    assert refresh_reliability_task.delay().get(timeout=30) == {"teams": 2}
    world["vision"].jobs.update(end_time=None)  # vision's job "un-ends": a fresh computation has no ETTR for it
    assert f'portal_ettr_ratio{{team="vision"}} {round(VISION_ETTR, 6)}' in Client().get("/metrics").content.decode()
    refresh_reliability_task.delay().get(timeout=30)
    assert 'portal_ettr_ratio{team="vision"}' not in Client().get("/metrics").content.decode()


def test_members_see_their_teams_and_admins_see_all(world):
    alice_page = client_for(world["alice"]).get("/reliability/").content.decode()
    assert 'data-team="vision"' in alice_page and 'data-team="nlp"' not in alice_page
    assert 'data-team="cluster"' in alice_page
    row = alice_page[alice_page.index('data-team="vision"'):]
    assert f'class="goodput">{VISION_GOODPUT:.3f}<' in row and f'class="ettr">{VISION_ETTR:.3f}<' in row
    admin_page = client_for(world["admin"]).get("/reliability/").content.decode()
    assert 'data-team="vision"' in admin_page and 'data-team="nlp"' in admin_page
    assert "Goodput <strong>81%</strong>" in admin_page  # the chart's label


def test_the_day_by_day_figures_match_the_window_s(world):
    trend = reliability.daily(days=7)
    assert len(trend.days) == 8 and trend.days[-1] == timezone.localdate()
    yesterday = trend.days.index(timezone.localdate() - timedelta(days=1))
    assert trend.goodput["vision"][yesterday] == pytest.approx(VISION_GOODPUT, abs=1e-4)
    assert trend.ettr["vision"][yesterday] == pytest.approx(VISION_ETTR, abs=1e-4)
    assert trend.ettr[reliability.CLUSTER][yesterday] == pytest.approx(CLUSTER_ETTR, abs=1e-4)
    assert [v for n, v in enumerate(trend.goodput["vision"]) if n != yesterday] == [None] * 7


def test_the_page_carries_the_trend_for_its_charts(world):
    page = client_for(world["alice"]).get("/reliability/").content.decode()
    data = json.loads(page.split('id="reliability-trend" type="application/json">')[1].split("</script>")[0])
    assert [s["name"] for s in data["series"]] == ["vision", "Whole cluster"]  # not nlp: not alice's team
    assert round(VISION_GOODPUT, 4) in data["series"][0]["goodput"]
    assert 'src="/static/portal/reliability.js"' in page or "portal/reliability" in page


def test_a_bad_window_is_a_400(world):
    assert client_for(world["alice"]).get("/reliability/?days=9").status_code == 400
    assert client_for(world["alice"]).get("/reliability/?days=30").status_code == 200


def test_anonymous_readers_are_sent_to_log_in(world):
    response = Client().get("/reliability/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.slow
def test_it_stays_fast_with_many_jobs(world):
    """200k jobs with a run each (a quick seed; the README figure used 1M): one computation."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")  # the seed itself is slow; the query is not
        cursor.execute(_SEED_SQL, [world["alice"].pk, world["vision"].pk])
        cursor.execute("ANALYZE jobs_job; ANALYZE recovery_attempt")
    started = time.monotonic()
    reliability.compute(days=7)
    assert time.monotonic() - started < 2.0


_SEED_SQL = """
WITH j AS (
  INSERT INTO jobs_job (uuid, owner_id, team_id, name, partition, script, state, reason, submit_time, start_time,
    end_time, nodes, gpus_per_node, gpu_type, cpus_per_task, mem_mb, time_limit_min, requeue, checkpoint_dir,
    nodes_list, restart_count, working_dir, stdout_path, stderr_path, accounted, adopted, pending_action,
    failure_class, failure_cause, auto_requeues, created_at, updated_at)
  SELECT gen_random_uuid(), %s, %s, 'seed', 'gpu', '', 'COMPLETED', '', now() - (g %% 60 || ' days')::interval,
    now() - (g %% 60 || ' days')::interval + interval '5 min',
    now() - (g %% 60 || ' days')::interval + interval '65 min',
    1, 4, 'h100', 1, 0, 120, true, '', 'gpu01', 0, '', '', '', true, false, '', '', '', 0, now(), now()
  FROM generate_series(1, 200000) g RETURNING id, start_time, end_time)
INSERT INTO recovery_attempt (job_id, number, started_at, ended_at, nodes_list, gpus, resumed_from, last_checkpoint,
  evidence, failure_class, cause, failed_node, detail, outcome)
SELECT id, 0, start_time, end_time, 'gpu01', 4, '', '', '{}', '', '', '', '', 'succeeded' FROM j
"""

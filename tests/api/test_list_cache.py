"""The job-list API's page cache: polls are answered from Redis until a job they show changes.

Rows here are written straight through the ORM, which (unlike the portal's writers) tells the
cache nothing; that is how the tests see whether a page came from the cache.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from portal.jobs import list_cache
from portal.jobs.models import Job
from portal.teams.models import Membership


def _job(owner, team, name: str, state: str = "PENDING") -> Job:
    return Job.objects.create(owner=owner, team=team, name=name, script="#!/bin/bash\n", state=state,
                              submit_time=timezone.now())


def _names(resp) -> list[str]:
    assert resp.status_code == 200, resp.content
    return [row["name"] for row in resp.json()["results"]]


@pytest.mark.django_db
def test_poll_served_from_cache_until_owner_changes(api, world, teams):
    _job(world["alice"], teams["vision"], "first")
    assert _names(api["alice"].get("/jobs")) == ["first"]
    _job(world["alice"], teams["vision"], "second")          # nobody told the cache
    assert _names(api["alice"].get("/jobs")) == ["first"]
    list_cache.changed([(world["alice"].pk, teams["vision"].pk)])
    assert _names(api["alice"].get("/jobs")) == ["second", "first"]


@pytest.mark.django_db
def test_other_peoples_changes_keep_a_page_cached(api, world, teams):
    _job(world["alice"], teams["vision"], "a1")
    assert _names(api["alice"].get("/jobs")) == ["a1"]
    _job(world["alice"], teams["vision"], "a2")
    list_cache.changed([(world["erin"].pk, teams["nlp"].pk)])   # erin's job in nlp: not alice's business
    assert _names(api["alice"].get("/jobs")) == ["a1"]


@pytest.mark.django_db
def test_lead_sees_team_change(api, world, teams):
    _job(world["erin"], teams["nlp"], "erin-1")
    assert _names(api["carol"].get("/jobs")) == ["erin-1"]
    _job(world["erin"], teams["nlp"], "erin-2")
    list_cache.changed([(world["erin"].pk, teams["nlp"].pk)])
    assert _names(api["carol"].get("/jobs")) == ["erin-2", "erin-1"]


@pytest.mark.django_db
def test_admin_page_follows_any_change(api, world, teams):
    _job(world["bob"], teams["vision"], "b1")
    assert _names(api["admin"].get("/jobs")) == ["b1"]
    _job(world["erin"], teams["nlp"], "e1")
    list_cache.changed([(world["erin"].pk, teams["nlp"].pk)])
    assert _names(api["admin"].get("/jobs")) == ["e1", "b1"]


@pytest.mark.django_db
def test_same_query_different_users_never_share_a_page(api, world, teams):
    _job(world["alice"], teams["vision"], "alice-job")
    _job(world["bob"], teams["vision"], "bob-job")
    assert _names(api["alice"].get("/jobs", state="PENDING")) == ["alice-job"]
    assert _names(api["bob"].get("/jobs", state="PENDING")) == ["bob-job"]
    assert _names(api["charlie"].get("/jobs", state="PENDING")) == []


@pytest.mark.django_db
def test_filters_and_cursor_are_part_of_the_key(api, world, teams):
    for i in range(3):
        _job(world["alice"], teams["vision"], f"j{i}", state="RUNNING" if i % 2 else "PENDING")
    first = api["alice"].get("/jobs", limit=2)
    assert _names(first) == ["j2", "j1"]
    assert _names(api["alice"].get("/jobs", limit=2, cursor=first.json()["next_cursor"])) == ["j0"]
    assert _names(api["alice"].get("/jobs", state="RUNNING")) == ["j1"]


@pytest.mark.django_db
def test_lost_membership_is_not_hidden_by_the_cache(api, world, teams):
    """Whose pages a lead may read is part of the key: losing the lead role shows at once."""
    _job(world["erin"], teams["nlp"], "erin-job")
    assert _names(api["carol"].get("/jobs")) == ["erin-job"]
    Membership.objects.filter(user=world["carol"]).delete()
    assert _names(api["carol"].get("/jobs")) == []


@pytest.mark.django_db
def test_turned_off_every_poll_reads_the_database(api, world, teams, settings):
    settings.JOB_LIST_CACHE_SECONDS = 0
    _job(world["alice"], teams["vision"], "first")
    assert _names(api["alice"].get("/jobs")) == ["first"]
    _job(world["alice"], teams["vision"], "second")
    assert _names(api["alice"].get("/jobs")) == ["second", "first"]


@pytest.fixture
def redis_unreachable(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/2"}}


@pytest.mark.django_db
def test_without_redis_the_list_still_answers_from_the_database(api, world, teams, redis_unreachable):
    _job(world["alice"], teams["vision"], "first")
    assert _names(api["alice"].get("/jobs")) == ["first"]
    _job(world["alice"], teams["vision"], "second")
    list_cache.changed([(world["alice"].pk, teams["vision"].pk)])   # logged, not raised
    assert _names(api["alice"].get("/jobs")) == ["second", "first"]

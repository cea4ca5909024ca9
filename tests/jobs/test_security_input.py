"""Hostile input: script tags everywhere they could be typed, missing CSRF tokens, odd output files."""

from __future__ import annotations

import os

import pytest
from django.test import Client

from portal.jobs.models import JobTemplate
from tests.jobs.views_support import VISION_LEAD, build_world, client_for, home, make_job, write_owned

pytestmark = pytest.mark.django_db

XSS = '<script>alert("pwned")</script>'
ESCAPED = "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"


@pytest.fixture
def world(make_user):
    return build_world(make_user)


@pytest.fixture
def alice_file(unique):
    paths = []

    def make(name: str):
        path = home("alice") / f"portal-ui-{unique}-{name}"
        paths.append(path)
        return path
    yield make
    for path in paths:
        path.unlink(missing_ok=True)


def _safe(content: bytes) -> str:
    html = content.decode()
    assert XSS not in html
    return html


def test_job_names_and_scripts_are_escaped(world):
    job = make_job(world["alice"], world["vision"], name=XSS, script=f"#!/bin/bash\necho '{XSS}'\n",
                   reason=XSS, state="PENDING", start_time=None)
    client = client_for(world["alice"])
    assert ESCAPED in _safe(client.get("/jobs/").content)
    assert ESCAPED in _safe(client.get("/jobs/rows/").content)
    detail = _safe(client.get(f"/jobs/{job.pk}/").content)
    assert f"<pre class=\"script\">#!/bin/bash\necho &#x27;{ESCAPED}&#x27;" in detail
    assert _safe(client.get(f"/jobs/{job.pk}/status/").content)


def test_team_descriptions_and_template_text_are_escaped(world, slurm_accounts):
    world["vision"].description = XSS
    world["vision"].save()
    JobTemplate.objects.create(team=world["vision"], name=XSS, description=XSS, script="#!/bin/bash\n")
    client = client_for(world["alice"])
    assert ESCAPED in _safe(client.get("/jobs/templates/").content)
    assert ESCAPED in _safe(client.get("/jobs/new/").content)


def test_job_output_is_escaped_in_the_page_and_in_live_updates(world, alice_file):
    path = write_owned(alice_file("out"), f"{XSS}\n", "alice")
    job = make_job(world["alice"], world["vision"], stdout_path=str(path))
    client = client_for(world["alice"])
    assert ESCAPED in _safe(client.get(f"/jobs/{job.pk}/").content)
    with path.open("a") as fh:
        fh.write(f"<img src=x onerror=alert(1)>{XSS}")
    more = _safe(client.get(f"/jobs/{job.pk}/output/", {"offset": 0}).content)
    assert "&lt;img src=x onerror=alert(1)&gt;" in more


def test_the_viewer_refuses_a_symlinked_output_file(world, alice_file):
    secret = write_owned(alice_file("secret"), "TOP-SECRET\n", "alice")
    link = alice_file("link.out")
    os.symlink(secret, link)
    job = make_job(world["alice"], world["vision"], stdout_path=str(link))
    client = client_for(world["alice"])
    page = client.get(f"/jobs/{job.pk}/").content
    assert b"symbolic link" in page and b"TOP-SECRET" not in page
    assert b"TOP-SECRET" not in client.get(f"/jobs/{job.pk}/output/", {"offset": 0}).content
    assert b"TOP-SECRET" not in client.get(f"/jobs/{job.pk}/output/download/", follow=True).content


@pytest.mark.parametrize("owner", ["root", "bob"])
def test_the_viewer_refuses_a_file_the_jobs_user_does_not_own(world, alice_file, owner):
    path = write_owned(alice_file(f"by-{owner}.out"), "NOT-ALICES\n", owner)
    job = make_job(world["alice"], world["vision"], stdout_path=str(path))
    client = client_for(world["alice"])
    page = client.get(f"/jobs/{job.pk}/").content
    assert b"not a regular file owned by the job" in page and b"NOT-ALICES" not in page
    assert b"NOT-ALICES" not in client.get(f"/jobs/{job.pk}/output/download/", follow=True).content


def test_posts_without_a_csrf_token_are_refused(world, slurm_accounts):
    # victor leads vision: with a token, every one of these posts would be allowed.
    job = make_job(world["alice"], world["vision"])
    template = JobTemplate.objects.create(team=world["vision"], name="t", script="#!/bin/bash\n")
    posts = [(f"/jobs/{job.pk}/cancel/", {}), ("/jobs/new/", {"name": "x"}), ("/tokens/", {"name": "ci"}),
             (f"/jobs/templates/{template.pk}/edit/", {"name": "y"}), ("/jobs/templates/new/", {}),
             (f"/jobs/templates/{template.pk}/delete/", {})]
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world[VISION_LEAD])
    for url, data in posts:
        assert strict.post(url, data).status_code == 403, url
    assert JobTemplate.objects.filter(pk=template.pk, name="t").exists()
    assert not world[VISION_LEAD].api_tokens.exists()
    lenient = client_for(world[VISION_LEAD])
    assert all(lenient.post(url, data).status_code != 403 for url, data in posts)

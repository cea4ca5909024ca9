"""The tokens page: post/redirect/get, so a reload never makes a second token; the new token is
shown once; each token's expiry and last use are shown."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from portal.api.models import ApiToken
from portal.api.services import issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_reloading_after_creating_a_token_makes_no_second_one(browser, alice):
    resp = browser.post("/tokens/", {"name": "laptop"}, follow=True)
    assert resp.redirect_chain == [("/tokens/", 302)]
    html = resp.content.decode()
    raw = re.search(r'id="raw-token" readonly value="(cpt_[\w-]+)"', html).group(1)
    # What a browser's reload does after a redirect: GET the page again.
    again = browser.get("/tokens/").content.decode()
    assert ApiToken.objects.filter(user=alice).count() == 1
    assert raw not in again and "laptop" in again


def test_a_token_can_be_made_for_fewer_days(browser, alice):
    browser.post("/tokens/", {"name": "ci", "days": "7"})
    token = ApiToken.objects.get(user=alice)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    resp = browser.post("/tokens/", {"name": "forever", "days": "100000"})
    assert resp.status_code == 400 and ApiToken.objects.filter(user=alice).count() == 1


def test_the_page_shows_expiry_and_last_use(browser, alice):
    _, used = issue_token(user=alice, name="used")
    ApiToken.objects.filter(pk=used.pk).update(last_used_at=timezone.now() - timedelta(hours=3))
    _, old = issue_token(user=alice, name="old")
    ApiToken.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=1))
    html = browser.get("/tokens/").content.decode()
    assert "<th>Expires</th>" in html and "<th>Last used</th>" in html
    used_row = html[html.index(">used<"):html.index(">old<")] if html.index(">used<") < html.index(">old<") \
        else html[html.index(">used<"):]
    assert "3\xa0hours ago" in used_row and used.expires_at.strftime("%b") in used_row
    old_row = html[html.index(">old<"):]
    assert "expired" in old_row.split("</tr>")[0]

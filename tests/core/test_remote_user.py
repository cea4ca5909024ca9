"""Sites behind SSO: the web server's REMOTE_USER logs the user in; the Django name is the Unix login."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db

SSO = {
    "MIDDLEWARE_EXTRA": "portal.core.remote_user.RemoteUserMiddleware",
    "BACKENDS": ["portal.core.remote_user.SsoBackend", "django.contrib.auth.backends.ModelBackend"],
}


@pytest.fixture
def sso(settings):
    middleware = list(settings.MIDDLEWARE)
    middleware.insert(middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                      SSO["MIDDLEWARE_EXTRA"])
    settings.MIDDLEWARE = middleware
    settings.AUTHENTICATION_BACKENDS = SSO["BACKENDS"]
    settings.REMOTE_USER_HEADER = "HTTP_X_REMOTE_USER"
    return settings


def test_the_sso_user_is_logged_in_and_created_on_first_visit(client, sso):
    resp = client.get("/", headers={"X-Remote-User": "alice"})
    assert resp.status_code == 200
    assert b"Welcome, alice" in resp.content
    user = get_user_model().objects.get(username="alice")
    assert not user.has_usable_password()        # SSO users never get a local password


def test_without_the_header_the_login_page_is_shown(client, sso):
    assert client.get("/").status_code == 302


def test_sso_is_off_by_default(client):
    resp = client.get("/", headers={"X-Remote-User": "alice"}, REMOTE_USER="alice")
    assert resp.status_code == 302
    assert not get_user_model().objects.filter(username="alice").exists()

"""Web pages for API tokens (create, revoke)."""

from django.urls import path  # noqa: F401 - filled in by the token pages

app_name = "tokens"
urlpatterns: list = []

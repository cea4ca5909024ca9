"""Web pages for jobs (list, detail, submit, controls, output, templates)."""

from django.urls import path  # noqa: F401 - filled in by the job pages

app_name = "jobs"
urlpatterns: list = []

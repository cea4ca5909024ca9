"""Pages: a user's email settings, and goodput and ETTR per team (the reliability page)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from portal.jobs import access
from portal.recovery import reliability
from portal.recovery.models import NotificationSettings

WINDOWS = (1, 7, 30)


class NotificationSettingsForm(forms.ModelForm):
    class Meta:
        model = NotificationSettings
        fields = ["on_requeue", "on_hold", "on_failure"]
        labels = {"on_requeue": "When the portal requeues my job after a node failure",
                  "on_hold": "When my job is held after failing too often in a row",
                  "on_failure": "When my job fails for a reason of its own and is not restarted"}


@login_required
@require_http_methods(["GET", "POST"])
def notification_settings(request: HttpRequest) -> HttpResponse:
    current = NotificationSettings.objects.filter(user=request.user).first() or NotificationSettings(user=request.user)
    form = NotificationSettingsForm(request.POST if request.method == "POST" else None, instance=current)
    if form.is_bound and form.is_valid():
        form.save()
        messages.success(request, "Saved: your email settings are updated.")
        return redirect("recovery:notifications")  # post/redirect/get: a reload sends nothing again
    return render(request, "recovery/notifications.html",
                  {"form": form, "email": request.user.email}, status=400 if form.errors else 200)


def _days(request: HttpRequest) -> int:
    raw = request.GET.get("days", "7")
    if not raw.isdigit() or int(raw) not in WINDOWS:
        raise BadRequest(f"days must be one of {', '.join(map(str, WINDOWS))}")
    return int(raw)


def _rows(report: reliability.Report, teams: list[str]) -> list[dict]:
    """One row per team the reader may see (with or without figures), then the cluster."""
    empty = reliability.Figures()
    rows = [{"name": name, "figures": report.by_team.get(name, empty)} for name in teams]
    return [*rows, {"name": "", "figures": report.by_team[reliability.CLUSTER]}]


@login_required
@require_GET
def reliability_page(request: HttpRequest) -> HttpResponse:
    """Admins see every team; others the teams they belong to (and the cluster as a whole)."""
    days = _days(request)
    report = reliability.cached_report(days)
    if access.is_admin(request.user):
        teams = sorted(name for name in report.by_team if name)
    else:
        teams = list(access.member_teams(request.user).values_list("name", flat=True))
    return render(request, "recovery/reliability.html",
                  {"report": report, "rows": _rows(report, teams), "days": days, "windows": WINDOWS,
                   "trend": _trend(days, teams) if days > 1 else None})


def _trend(days: int, teams: list[str]) -> dict:
    """The daily series of the teams the reader may see, and the cluster's, for the charts."""
    trend = reliability.cached_daily(days)
    names = [*teams, reliability.CLUSTER]
    empty = [None] * len(trend.days)
    series = [{"name": name or "Whole cluster", "goodput": trend.goodput.get(name, empty),
               "ettr": trend.ettr.get(name, empty)} for name in names]
    return {"days": [day.strftime("%b %-d") for day in trend.days], "series": series}

"""`my_teams` in every template: the names of the signed-in user's teams, for the navigation
and for linking team names to team pages. Lazy: a page that never asks costs no query."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from portal.teams.models import Team


def my_teams(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"my_teams": []}
    return {"my_teams": SimpleLazyObject(
        lambda: list(Team.objects.filter(memberships__user=user).order_by("name").values_list("name", flat=True)))}

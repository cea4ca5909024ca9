"""Team pages: a team's own page (its members, leads and admins), all teams side by side and
one team's policy form (admins).

Like the job and node pages, the team page's live area is a named partial
(templates/teams/_standing.html) that both the full page and its htmx polling endpoint render."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from portal.infra.errors import slurm_error_text
from portal.quotas.forms import TeamPolicyForm
from portal.quotas.reconcile import Change, pending_changes
from portal.quotas.services import PolicyInvalid, policy_values, team_policy, update_team_policy
from portal.quotas.standing import SORTS, may_see, team_standing, teams_overview
from portal.slurm.errors import SlurmError
from portal.teams.access import is_admin
from portal.teams.models import PolicyChange, Team

AUDIT_ROWS = 20


def _forbidden(request: HttpRequest, message: str = "Only admins see and set team policies.") -> HttpResponse:
    return render(request, "core/forbidden.html", {"message": message, "back_url": reverse("home"),
                                                   "back_label": "Back home"}, status=403)


def _team_or_404(name: str) -> Team:
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise Http404("No such team.")
    return team


@login_required
@require_GET
def team_list(request: HttpRequest) -> HttpResponse:
    if not is_admin(request.user):
        return _forbidden(request)
    sort = request.GET.get("sort", "use")
    sort = sort if sort in SORTS else "use"
    rows, fair_error = teams_overview(sort)
    pending, slurm_error, coordinators_read = _slurm_differences()
    for row in rows:
        row.differences = sum(c.account == row.team.name for c in pending)
    return render(request, "teams/list.html", {"rows": rows, "slurm_error": slurm_error, "fair_error": fair_error,
                                               "coordinators_read": coordinators_read, "sort": sort,
                                               "now": timezone.now()})


def _slurm_differences(team: Team | None = None) -> tuple[list[Change], str, bool]:
    """What the reconciler would change now (for `team`, or all): drift made by hand shows here.
    The flag is False while the coordinators are being read again (their drift is not shown)."""
    try:
        plan = pending_changes()
    except SlurmError as exc:
        return [], slurm_error_text(exc), True
    return [c for c in plan.changes if team is None or c.account == team.name], "", plan.coordinators_known


def _page(request: HttpRequest, team: Team, form: TeamPolicyForm, status: int = 200) -> HttpResponse:
    differences, slurm_error, coordinators_read = _slurm_differences(team)
    context = {"team": team, "form": form, "policy": team_policy(team), "differences": differences,
               "slurm_error": slurm_error, "coordinators_read": coordinators_read,
               "changes": PolicyChange.objects.filter(team=team)[:AUDIT_ROWS]}
    return render(request, "teams/policy.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def team_policy_page(request: HttpRequest, name: str) -> HttpResponse:
    if not is_admin(request.user):
        return _forbidden(request)
    team = _team_or_404(name)
    if request.method == "GET":
        initial = TeamPolicyForm.initial_from(policy_values(team_policy(team)))
        return _page(request, team, TeamPolicyForm(initial=initial))
    form = TeamPolicyForm(request.POST)
    if form.is_valid():
        try:
            update_team_policy(team=team, changes=form.cleaned_data, by=request.user)
        except PolicyInvalid as exc:
            for field, problems in exc.errors.items():
                form.add_error(field if field in form.fields else None, problems)
        except SlurmError as exc:
            messages.error(request, slurm_error_text(exc))
            return _page(request, team, form, status=503)
        else:
            messages.success(request, f"Saved: Slurm gets {team.name}'s new policy within seconds.")
            return redirect("teams:policy", name=team.name)  # post/redirect/get
    return _page(request, team, form, status=400)


# ---------------------------------------------------------------- a team's own page

def _visible_team(request: HttpRequest, name: str) -> Team | HttpResponse:
    """The team, or the page to answer instead: 404 for no such team, 403 for a non-member."""
    team = _team_or_404(name)
    if not may_see(request.user, team):
        return _forbidden(request, f"Only members of {team.name} and admins see its page.")
    return team


def _standing_context(request: HttpRequest, team: Team) -> dict:
    return {"team": team, "s": team_standing(team, request.user), "is_admin": is_admin(request.user),
            "poll_s": settings.PORTAL_TEAM_POLL_S}


@login_required
@require_GET
def team_page(request: HttpRequest, name: str) -> HttpResponse:
    team = _visible_team(request, name)
    if isinstance(team, HttpResponse):
        return team
    return render(request, "teams/detail.html", _standing_context(request, team))


@login_required
@require_GET
def team_live(request: HttpRequest, name: str) -> HttpResponse:
    """The team page's live area alone; htmx polls it (every PORTAL_TEAM_POLL_S, 15 s)."""
    team = _visible_team(request, name)
    if isinstance(team, HttpResponse):
        return team
    return render(request, "teams/_standing.html", _standing_context(request, team))

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.core.services import check_health
from portal.nodes.models import Node


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    memberships = request.user.memberships.select_related("team")
    nodes = Node.objects.all()
    return render(request, "core/home.html", {"memberships": memberships, "nodes": nodes})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every dependency answers and every background part beat recently; else 503
    naming what is wrong. Answers within about 1.5 s whatever hangs (services.HEALTH_DEADLINE_S)."""
    health = check_health()
    return JsonResponse(health.as_dict(), status=200 if health.healthy else 503)


class LoginView(auth_views.LoginView):
    """Django's login page; a throttled attempt (portal/core/login_throttle.py) answers 429."""

    def form_invalid(self, form):
        response = super().form_invalid(form)
        lockout = getattr(self.request, "login_lockout", None)
        if lockout is not None:
            response.status_code = 429
            response["Retry-After"] = str(lockout.seconds)
            response.context_data["lockout"] = lockout
        return response

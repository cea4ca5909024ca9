"""The API tokens page: list your tokens, create one (shown once), revoke one."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from portal.api.models import ApiToken
from portal.api.services import issue_token, revoke_token

MAX_ID = 2**63 - 1
# The raw token waits in the session between the POST and the page that shows it, once.
NEW_TOKEN_SESSION_KEY = "api_tokens.new"  # noqa: S105 - not a secret


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True, label="Token name",
                           help_text="What it is for, so you can tell your tokens apart (e.g. laptop, CI).")
    days = forms.IntegerField(min_value=1, max_value=settings.PORTAL_TOKEN_MAX_DAYS, label="Valid for (days)",
                              initial=settings.PORTAL_TOKEN_DAYS, required=False,
                              help_text=f"Default {settings.PORTAL_TOKEN_DAYS}; at most "
                                        f"{settings.PORTAL_TOKEN_MAX_DAYS}.")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if not name.isprintable():
            raise forms.ValidationError("Use printable characters only.")
        return name


def _show_once(request: HttpRequest) -> tuple[str | None, ApiToken | None]:
    """The token created by the POST just before this page, if any; gone from the session now."""
    new = request.session.pop(NEW_TOKEN_SESSION_KEY, None)
    if not new:
        return None, None
    return new["raw"], ApiToken.objects.filter(pk=new["id"], user=request.user).first()


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        raw, token = issue_token(user=request.user, name=form.cleaned_data["name"], days=form.cleaned_data["days"])
        request.session[NEW_TOKEN_SESSION_KEY] = {"id": token.pk, "raw": raw}
        # Post/redirect/get: reloading the page that shows the token must not make another.
        return redirect("tokens:list")
    raw_token, new_token = _show_once(request)
    tokens = ApiToken.objects.filter(user=request.user).only(
        "id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at")
    response = render(request, "api/tokens.html", {"form": form, "tokens": tokens, "raw_token": raw_token,
                                                   "new_token": new_token, "now": timezone.now()},
                      status=400 if form.errors else 200)
    if raw_token:
        # The raw token is on this page only: never let a cache or the back button keep it.
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    if token_id > MAX_ID:
        raise Http404
    if revoke_token(user=request.user, token_id=token_id):
        messages.success(request, "Token revoked: it no longer works.")
    elif ApiToken.objects.filter(pk=token_id, user=request.user).exists():
        messages.info(request, "That token was already revoked.")
    else:
        raise Http404  # someone else's token: as if it did not exist
    return redirect("tokens:list")

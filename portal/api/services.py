"""API tokens: issue, check, revoke. Only a SHA-256 digest is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal.api.models import ApiToken
from portal.infra.errors import TokenInvalid

TOKEN_PREFIX = "cpt_"  # noqa: S105 - a public marker, not a secret
# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
NEW_TOKEN_HINT = "create a new one on the API tokens page or with `manage.py issue_token`"  # noqa: S105 - not a secret


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_lifetime(days: int | None) -> timedelta:
    """`days` (PORTAL_TOKEN_DAYS if None), refused beyond PORTAL_TOKEN_MAX_DAYS."""
    days = settings.PORTAL_TOKEN_DAYS if days is None else days
    if not 1 <= days <= settings.PORTAL_TOKEN_MAX_DAYS:
        raise ValueError(f"a token lives 1 to {settings.PORTAL_TOKEN_MAX_DAYS} days, not {days}")
    return timedelta(days=days)


@transaction.atomic
def issue_token(*, user, name: str, days: int | None = None) -> tuple[str, ApiToken]:
    """A new token for `user`, valid for `days`. The raw value is returned once and never stored."""
    expires_at = timezone.now() + token_lifetime(days)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name[:100] or "token", prefix=raw[:12], digest=_digest(raw),
                                    expires_at=expires_at)
    return raw, token


def authenticate_token(raw: str):
    """The user a live token belongs to; TokenInvalid (401) saying why if it is not live."""
    token = None
    if raw.startswith(TOKEN_PREFIX) and len(raw) <= 200:
        token = (ApiToken.objects.select_related("user")
                 .filter(digest=_digest(raw), revoked_at__isnull=True, user__is_active=True).first())
    if token is None:
        raise TokenInvalid(f"This token is not valid: it is unknown or was revoked; {NEW_TOKEN_HINT}.")
    now = timezone.now()
    if token.expires_at <= now:
        raise TokenInvalid(f"This token expired on {token.expires_at:%Y-%m-%d %H:%M} UTC; {NEW_TOKEN_HINT}.")
    _touch(token, now)
    return token.user


def _touch(token: ApiToken, now) -> None:
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # Conditional, so concurrent requests with one token write it once a minute at most.
        (ApiToken.objects.filter(pk=token.pk)
         .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION))
         .update(last_used_at=now))


def user_for_token(raw: str):
    """The active user a live token belongs to, or None."""
    try:
        return authenticate_token(raw)
    except TokenInvalid:
        return None


def revoke_token(*, user, token_id: int) -> bool:
    """Revoke one of the user's own tokens; False if there is no such live token."""
    return bool(ApiToken.objects.filter(pk=token_id, user=user, revoked_at__isnull=True)
                .update(revoked_at=timezone.now()))


def user_by_name(username: str):
    return get_user_model().objects.filter(username=username, is_active=True).first()

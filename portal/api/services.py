"""API tokens: issue, check, revoke. Only a SHA-256 digest is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from portal.api.models import ApiToken

TOKEN_PREFIX = "cpt_"  # noqa: S105 - a public marker, not a secret
# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=5)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def issue_token(*, user, name: str) -> tuple[str, ApiToken]:
    """A new token for `user`. The raw value is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name[:100] or "token", prefix=raw[:12], digest=_digest(raw))
    return raw, token


def user_for_token(raw: str):
    """The active user a live token belongs to, or None."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    token = (ApiToken.objects.select_related("user")
             .filter(digest=_digest(raw), revoked_at__isnull=True, user__is_active=True).first())
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def revoke_token(*, user, token_id: int) -> bool:
    """Revoke one of the user's own tokens; False if there is no such live token."""
    return bool(ApiToken.objects.filter(pk=token_id, user=user, revoked_at__isnull=True)
                .update(revoked_at=timezone.now()))


def user_by_name(username: str):
    return get_user_model().objects.filter(username=username, is_active=True).first()

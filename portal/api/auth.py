"""API authentication: `Authorization: Bearer <token>`, or the browser session (with CSRF)."""

from __future__ import annotations

from ninja.security import HttpBearer, django_auth

from portal.api.services import user_for_token


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        user = user_for_token(token)
        if user is not None:
            request.user = user
        return user


api_auth = [TokenAuth(), django_auth]

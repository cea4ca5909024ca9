"""API authentication: `Authorization: Bearer <token>`, or the browser session (with CSRF)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from portal.api.services import authenticate_token


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str):
        # A bearer token that is not live is a 401 with the reason, here and now: letting the
        # session check run next would answer a token client "CSRF check Failed" (403).
        user = authenticate_token(token)
        request.user = user
        return user


class BrowserSession(SessionAuth):
    """The logged-in browser (the pages' htmx calls), with Django's CSRF check. A request
    with no session is simply unauthenticated (401), not a CSRF failure (403)."""

    def __call__(self, request: HttpRequest):
        if not request.user.is_authenticated:
            return None
        return super().__call__(request)


api_auth = [TokenAuth(), BrowserSession()]

"""Cross-cutting answers: outages become 503s, API errors are JSON, and security headers."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from portal.infra import errors


class ErrorsMiddleware:
    """Outermost error handling: exceptions from views go through portal/infra/errors.py, and
    every error under /api/ is JSON with a `detail`, even those Django makes itself (unknown
    paths, wrong methods) before any of our handlers run."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (errors.wants_json(request) and response.status_code >= 400
                and not response.get("Content-Type", "").startswith("application/json")):
            allow = response.get("Allow")
            body = {"detail": response.reason_phrase}
            if response.status_code == 400:
                body["errors"] = {}  # every 400 has `errors`, as the schema says
            response = HttpResponse(json.dumps(body), status=response.status_code, content_type="application/json")
            if allow:
                response["Allow"] = allow
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        return errors.response_for(request, exc)


class SecurityHeadersMiddleware:
    """A Content-Security-Policy on every response (settings.PORTAL_CSP)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.PORTAL_CSP:
            response.setdefault("Content-Security-Policy", settings.PORTAL_CSP)
        return response

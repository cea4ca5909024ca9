"""Every error under /api/ is JSON with a `detail`, even those Django or ninja make themselves
(unknown paths, wrong methods) before any of our handlers run."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse


class JsonApiErrorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (request.path.startswith("/api/") and response.status_code >= 400
                and not response.get("Content-Type", "").startswith("application/json")):
            allow = response.get("Allow")
            response = HttpResponse(json.dumps({"detail": response.reason_phrase}),
                                    status=response.status_code, content_type="application/json")
            if allow:
                response["Allow"] = allow
        return response

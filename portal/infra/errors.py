"""The one place that turns exceptions into HTTP answers, for the API (JSON) and the pages (HTML).

`problem_for(exc)` maps an exception to a `Problem` (status, detail, headers, extra body
fields), or None when it is a bug (a 500). The API's exception handler, the errors middleware
and `handler500` all call it, so a status or a message can never drift between them.

Errors may carry extra JSON fields: raise `PortalError(503, "...", id=job.id)`, or set
`exc.extra = {"id": job.id}` on any mapped exception (e.g. a SlurmUnavailable) before it leaves.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kombu.exceptions
import redis.exceptions
from django.core.exceptions import BadRequest, ObjectDoesNotExist, PermissionDenied
from django.db import InterfaceError as DbInterfaceError
from django.db import OperationalError as DbOperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import defaults
from ninja.errors import AuthenticationError, HttpError, ValidationError

from portal.slurm.errors import SlurmError, SlurmNotFound, SlurmUnavailable, TokenRefused

log = logging.getLogger(__name__)

# How long clients should wait before retrying after an outage (seconds).
RETRY_AFTER_S = 10
AUTH_HINT = "Authentication required: send Authorization: Bearer <token>."


@dataclass(frozen=True)
class Problem:
    status: int
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


class PortalError(Exception):
    """Answer with this status and detail; keyword arguments become extra JSON body fields."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extra = status, detail, headers or {}, extra


class TokenInvalid(PortalError):
    """A bearer token that is unknown, revoked or expired: 401, whatever the method."""

    def __init__(self, detail: str):
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _slurm(exc: SlurmError, thing: str = "it") -> Classified:
    if isinstance(exc, SlurmUnavailable):
        return (503, f"Slurm is not answering, try again in a moment ({exc.message}).",
                {"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, TokenRefused):
        return 403, f"The portal cannot act for you in Slurm: {exc.message}", {}
    if isinstance(exc, SlurmNotFound):
        return 404, f"Slurm does not know {thing} any more ({exc.message}).", {}
    # Slurm's own words (a limit, a permission, a bad partition) are what the user must fix.
    return 409, f"Slurm refused: {exc.message}", {}


def _outage(what: str) -> Rule:
    return lambda exc: (503, f"{what} is not answering right now; try again shortly.",
                        {"Retry-After": str(RETRY_AFTER_S)})


Classified = tuple[int, str, dict[str, str]]
Rule = Callable[[Any], Classified]

# First match wins. Infrastructure the portal needs on every request failing is an outage
# (503 + Retry-After), not a bug: the client should retry, and must never get a 500 or a hang.
RULES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Rule], ...] = (
    (PortalError, lambda exc: (exc.status, exc.detail, exc.headers)),
    (SlurmError, _slurm),
    ((DbOperationalError, DbInterfaceError), _outage("The portal's database")),
    ((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError), _outage("The portal's cache")),
    (kombu.exceptions.OperationalError, _outage("The portal's task queue")),
    (AuthenticationError, lambda exc: (401, AUTH_HINT, {"WWW-Authenticate": "Bearer"})),
    (HttpError, lambda exc: (exc.status_code, str(exc), {})),
    ((Http404, ObjectDoesNotExist), lambda exc: (404, "Not found.", {})),
    (PermissionDenied, lambda exc: (403, str(exc) or "You are not allowed to do that.", {})),
    (BadRequest, lambda exc: (400, str(exc) or "Bad request.", {})),
)


def _classify(exc: BaseException) -> Classified | None:
    for kinds, rule in RULES:
        if isinstance(exc, kinds):
            return rule(exc)
    return None


def problem_for(exc: BaseException) -> Problem | None:
    """The answer for `exc`, or None if it is a bug that should stay a 500."""
    if isinstance(exc, ValidationError):
        return Problem(422, "The request is not valid.", extra={"errors": exc.errors})
    classified = _classify(exc)
    if classified is None:
        return None
    status, detail, headers = classified
    extra = getattr(exc, "extra", None)
    extra = dict(extra) if isinstance(extra, dict) else {}
    if status == 400:
        extra.setdefault("errors", {})  # every 400 names its fields (none: {}), as the schema says
    if status == 503:
        log.warning("answering 503: %s: %s", type(exc).__name__, exc)
    return Problem(status, detail, dict(headers), extra)


def slurm_error_text(exc: SlurmError, thing: str = "it") -> str:
    """The words a page shows for a gateway error (the API's `detail`); `thing`: "this job"..."""
    return _slurm(exc, thing)[1]


def _with_headers(response: HttpResponse, problem: Problem) -> HttpResponse:
    for name, value in problem.headers.items():
        response[name] = value
    return response


def json_response(problem: Problem) -> HttpResponse:
    return _with_headers(HttpResponse(json.dumps(problem.body()), status=problem.status,
                                      content_type="application/json"), problem)


def html_response(problem: Problem) -> HttpResponse:
    # Standalone (not base.html) and rendered without the request: the page header would load
    # the user, needing the very database or session store that may be what is down.
    title = "Temporarily unavailable" if problem.status == 503 else "That did not work"
    html = render_to_string("core/unavailable.html", {"problem": problem, "title": title,
                                                      "retry_after": problem.headers.get("Retry-After")})
    return _with_headers(HttpResponse(html, status=problem.status), problem)


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def response_for(request: HttpRequest, exc: BaseException) -> HttpResponse | None:
    """The answer to send instead of letting `exc` become a 500, or None.

    Pages answer outages and our own typed errors here (a plain styled page); Django's own
    handlers keep answering their 400/403/404 pages. Views show Slurm's errors in context
    where they can; one that escapes a view still gets its status and words, not a 500.
    """
    problem = problem_for(exc)
    if problem is None:
        return None
    if wants_json(request):
        return json_response(problem)
    ours = problem.status == 503 or isinstance(exc, (PortalError, SlurmError))
    return html_response(problem) if ours else None


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: an outage raised outside any view (e.g. saving the session) is still a 503."""
    exc = sys.exc_info()[1]
    response = response_for(request, exc) if exc is not None else None
    if response is not None:
        return response
    if wants_json(request):
        return json_response(Problem(500, "Internal server error; it has been logged."))
    return defaults.server_error(request)

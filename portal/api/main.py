"""The /api/ surface: one NinjaAPI, routers per area; errors mapped by portal/core/errors.py."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Swagger
from ninja.errors import HttpError, ValidationError

from portal.api.auth import api_auth
from portal.core import errors
from portal.jobs.api import router as jobs_router
from portal.nodes.api import router as nodes_router

# Served from the ninja app's static files (not a CDN), so the page works under our CSP;
# no validator badge either: it would fetch an image from validator.swagger.io.
DOCS = Swagger(settings={"validatorUrl": None})

api = NinjaAPI(
    title="Cluster portal API", version="1", auth=api_auth, urls_namespace="api",
    openapi_url="/openapi.json", docs_url="/docs", docs=DOCS,
    description="Submit and control Slurm jobs as yourself. Authenticate with `Authorization: Bearer <token>` "
                "(create tokens on the Tokens page or with `manage.py issue_token USER`). "
                "Errors are `{\"detail\": ...}`; 503 answers carry `Retry-After`.",
)


def install_error_handlers(target: NinjaAPI) -> None:
    """Every exception raised under the API goes through the one mapping; bugs stay 500s."""

    def handle(request: HttpRequest, exc: Exception) -> HttpResponse:
        problem = errors.problem_for(exc)
        if problem is None:
            raise exc  # a bug: Django logs it and answers 500
        response = target.create_response(request, problem.body(), status=problem.status)
        for name, value in problem.headers.items():
            response[name] = value
        return response

    # ninja registers its own defaults for these classes; ours replace them all.
    for kind in (Exception, Http404, HttpError, ValidationError):
        target.add_exception_handler(kind, handle)


install_error_handlers(api)
api.add_router("/v1/", jobs_router)
api.add_router("/v1/", nodes_router)

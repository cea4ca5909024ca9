"""The /api/ surface: one NinjaAPI, routers per area, and typed errors mapped to HTTP in one place."""

from __future__ import annotations

import logging

from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from portal.api.auth import api_auth
from portal.jobs.api import router as jobs_router
from portal.jobs.services import SubmissionUnconfirmed
from portal.nodes.api import router as nodes_router
from portal.slurm.errors import SlurmNotFound, SlurmRejected, SlurmUnavailable, TokenRefused

log = logging.getLogger(__name__)

api = NinjaAPI(
    title="Cluster portal API", version="1", auth=api_auth, urls_namespace="api",
    openapi_url="/openapi.json", docs_url="/docs",
    description="Submit and control Slurm jobs as yourself. Authenticate with `Authorization: Bearer <token>` "
                "(create tokens on the Tokens page or with `manage.py issue_token USER`).",
)


api.add_router("/v1/", jobs_router)
api.add_router("/v1/", nodes_router)


def _error(request, status: int, detail, **extra):
    return api.create_response(request, {"detail": detail, **extra}, status=status)


@api.exception_handler(SlurmUnavailable)
def slurm_unavailable(request, exc: SlurmUnavailable):
    # An unconfirmed submission names its row: the client retries with the same key, or polls it.
    extra = {"id": exc.job_id} if isinstance(exc, SubmissionUnconfirmed) else {}
    response = _error(request, 503, f"Slurm is not answering right now: {exc.message}", **extra)
    response["Retry-After"] = "10"
    return response


@api.exception_handler(SlurmRejected)
def slurm_rejected(request, exc: SlurmRejected):
    return _error(request, 409, f"Slurm refused: {exc.message}")


@api.exception_handler(SlurmNotFound)
def slurm_not_found(request, exc: SlurmNotFound):
    return _error(request, 404, exc.message)


@api.exception_handler(TokenRefused)
def token_refused(request, exc: TokenRefused):
    return _error(request, 403, f"The portal cannot act for you in Slurm: {exc.message}")


@api.exception_handler(ObjectDoesNotExist)
def not_found(request, exc):
    return _error(request, 404, "Not found.")


@api.exception_handler(Http404)
def http404(request, exc):
    return _error(request, 404, "Not found.")


@api.exception_handler(AuthenticationError)
def unauthenticated(request, exc):
    return _error(request, 401, "Authentication required: send Authorization: Bearer <token>.")


@api.exception_handler(ValidationError)
def invalid(request, exc: ValidationError):
    return _error(request, 422, "The request is not valid.", errors=exc.errors)


@api.exception_handler(HttpError)
def http_error(request, exc: HttpError):
    return _error(request, exc.status_code, str(exc))

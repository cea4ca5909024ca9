"""The /api/ surface: one NinjaAPI, routers per area; errors mapped by portal/infra/errors.py."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Swagger
from ninja.errors import HttpError, ValidationError

from portal.api.auth import api_auth
from portal.infra import errors
from portal.jobs.api import router as jobs_router
from portal.nodes.api import router as nodes_router
from portal.quotas.api import router as teams_router

# Served from the ninja app's static files (not a CDN), so the page works under our CSP;
# no validator badge either: it would fetch an image from validator.swagger.io.
DOCS = Swagger(settings={"validatorUrl": None})

ERROR_BODY = {"type": "object", "required": ["detail"], "additionalProperties": True,
              "properties": {"detail": {"type": "string"}}}
# Every 400 carries `errors` (field -> messages; {} when no one field is to blame).
BAD_REQUEST_BODY = {**ERROR_BODY, "required": ["detail", "errors"],
                    "properties": {"detail": {"type": "string"},
                                   "errors": {"type": "object", "additionalProperties": {
                                       "type": "array", "items": {"type": "string"}}}}}
VALIDATION_BODY = {**ERROR_BODY, "required": ["detail", "errors"],
                   "properties": {"detail": {"type": "string"},
                                  "errors": {"type": "array", "items": {"type": "object"}}}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# What any operation may answer besides its own documented responses (portal/infra/errors.py).
COMMON_RESPONSES = {
    "401": (lambda op: bool(op.get("security")),
            _json("No valid credentials: missing, unknown, revoked or expired token", ERROR_BODY)),
    "400": (lambda op: "requestBody" in op or "400" in op["responses"],
            _json("The body is not JSON, or a field is invalid", BAD_REQUEST_BODY)),
    "422": (lambda op: bool(op.get("parameters") or "requestBody" in op),
            _json("A parameter or the body does not match this schema", VALIDATION_BODY)),
    "503": (lambda op: True,
            {**_json("The database, cache, task queue or Slurm is not answering; retry after Retry-After seconds",
                     ERROR_BODY),
             "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds"}}}),
}


class PortalApi(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        """ninja's schema, plus the error answers every operation can give (so clients and the
        fuzzer know them), and 400s described with their `errors`."""
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        for operations in schema["paths"].values():
            for operation in operations.values():
                # ninja keys responses by int; JSON keys are strings (and must not repeat).
                responses = {str(status): body for status, body in operation.get("responses", {}).items()}
                operation["responses"] = responses
                for status, (applies, response) in COMMON_RESPONSES.items():
                    if applies(operation) and (status not in responses or status == "400"):
                        responses[status] = response
        return schema


api = PortalApi(
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
api.add_router("/v1/", teams_router)

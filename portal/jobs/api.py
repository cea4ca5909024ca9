"""/api/v1/jobs: submit, list, show, control and read output. Same rules as the web pages."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Literal

from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from ninja import Field, Header, Path, Query, Router, Schema, Status
from pydantic import field_validator

from portal.jobs import explain, list_cache, listing, states
from portal.jobs.access import get_job_for_user
from portal.jobs.checkpoints import CheckpointRefused
from portal.jobs.forms import JobSubmitForm
from portal.jobs.models import Job
from portal.jobs.output import OutputUnavailable, read_output
from portal.jobs.quota import QuotaExceeded
from portal.jobs.services import JobActionRefused, control_job, submit_job
from portal.teams.models import Team

router = Router(tags=["jobs"])

MAX_ID = 2**63 - 1
NAME_RE = r"^[A-Za-z0-9_.@-]{1,150}$"
KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
# The states the list filters on, from the one module of job states; the schema's pattern follows.
STATES = states.ALL - {states.UNCONFIRMED}


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


_ONE_STATE = "(" + "|".join(_any_case(state) for state in sorted(STATES)) + ")"
# Comma-separated states in any case, as a pattern, so the schema says exactly what is accepted.
STATE_LIST_PATTERN = f"^{_ONE_STATE}(,{_ONE_STATE})*$"
# Dates are ISO 8601 strings; pydantic would also take "1700000000" as a Unix time.
ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ].*)?$")


class Error(Schema):
    detail: str


class FormError(Schema):
    detail: str
    errors: dict[str, list[str]]


class QuotaError(Schema):
    detail: str = Field(description="The limit with the team's numbers, e.g. 'Team vision uses 28 of 32 GPUs; "
                                    "this job asks for 8.'")
    limit: Literal["max_gpus", "max_gpus_by_type", "gpu_hours_budget"] = Field(
        description="The team policy field the job would break")


class Unconfirmed(Schema):
    detail: str
    id: int | None = Field(None, description="The portal's job id when Slurm did not confirm the "
                                             "submission: retry with the same Idempotency-Key")


class JobIn(Schema):
    name: str = Field(..., max_length=100, description="Job name as Slurm shows it")
    team: str = Field(..., max_length=64, description="Your team; also the Slurm account")
    partition: str = Field("", max_length=64, description="Empty for the default partition")
    script: str = Field(..., max_length=70_000, description="Batch script; must start with #!")
    nodes: int = Field(1, ge=1, le=10_000)
    gpus_per_node: int = Field(0, ge=0, le=1_000)
    gpu_type: str = Field("", max_length=32)
    cpus_per_task: int = Field(1, ge=1, le=100_000)
    mem_mb: int = Field(0, ge=0, le=2**31 - 1, description="0: Slurm's default per CPU")
    time_limit_min: int = Field(60, ge=1, le=10_000_000)
    requeue: bool = Field(True, description="Requeue on infrastructure failure")
    checkpoint_dir: str = Field("", max_length=400, description="Empty for the default")
    hold: bool = Field(False, description="Submit held: it waits until released")


class JobOut(Schema):
    id: int
    uuid: str
    slurm_job_id: int | None
    name: str
    team: str
    owner: str
    partition: str
    nodes: int
    gpus_per_node: int
    gpu_type: str
    cpus_per_task: int
    mem_mb: int
    time_limit_min: int
    requeue: bool
    checkpoint_dir: str
    state: str
    state_text: str
    reason: str
    reason_text: str
    nodes_list: str
    exit_code: int | None
    restart_count: int
    submit_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    elapsed_s: int | None
    cpu_time_s: int | None
    max_rss_kb: int | None
    adopted: bool
    pending_action: str = Field(description="A control asked for and not yet confirmed by Slurm "
                                            "(cancel, hold, release, requeue), or empty")
    pending_action_at: datetime | None = Field(description="When that control was asked for")

    @staticmethod
    def resolve_uuid(obj: Job) -> str:
        return str(obj.uuid)

    @staticmethod
    def resolve_team(obj: Job) -> str:
        return obj.team.name

    @staticmethod
    def resolve_owner(obj: Job) -> str:
        return obj.owner.username

    @staticmethod
    def resolve_state_text(obj: Job) -> str:
        return explain.state_words(obj.state)

    @staticmethod
    def resolve_reason_text(obj: Job) -> str:
        return explain.reason_words(obj.reason) if obj.state == "PENDING" else ""


class AttemptOut(Schema):
    """One run of the job: attempt 0 is the first, N the run after the Nth requeue."""

    number: int
    started_at: datetime | None
    ended_at: datetime | None
    nodes_list: str
    gpus: int
    outcome: str = Field(description="'' (running), succeeded, requeued, held or failed")
    failure_class: str = Field(description="'', infrastructure or application")
    cause: str
    failed_node: str
    detail: str
    resumed_from: str = Field(description="The checkpoint this run started from ('' for none)")
    last_checkpoint: str
    lost_gpu_s: float | None = Field(description="GPU-seconds of work lost when this run failed")
    exit_code: int | None
    signal: int | None
    evidence: dict


ATTEMPT_FIELDS = tuple(AttemptOut.model_fields)
MAX_ATTEMPTS = 100


def attempts_of(job: Job) -> list[dict]:
    """The job's runs, oldest first (the newest MAX_ATTEMPTS of a job requeued more often)."""
    rows = job.attempts.order_by("-number").values(*ATTEMPT_FIELDS)[:MAX_ATTEMPTS]
    return list(rows)[::-1]


class JobDetailOut(JobOut):
    script: str
    attempts: list[AttemptOut] = Field(description="Every run of the job: when, where, how it ended, "
                                                   "the checkpoint it resumed from and the work lost")

    @staticmethod
    def resolve_reason_text(obj: Job) -> str:
        # One job: worth the team's numbers for a quota wait (the list keeps the plain words).
        return explain.job_reason_words(obj)

    @staticmethod
    def resolve_attempts(obj: Job) -> list[dict]:
        return attempts_of(obj)


class JobList(Schema):
    results: list[JobOut]
    next_cursor: int | None = Field(None, description="Pass as `cursor` for the next page")


class JobListQuery(Schema):
    state: str | None = Field(None, pattern=STATE_LIST_PATTERN, max_length=2000,
                              description="Comma-separated Slurm states, e.g. PENDING,RUNNING; any of "
                                          + ", ".join(sorted(STATES)))
    team: str | None = Field(None, max_length=64, pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    owner: str | None = Field(None, pattern=NAME_RE)
    submitted_after: datetime | None = Field(None, description="ISO 8601, e.g. 2026-11-30T12:00:00Z")
    submitted_before: datetime | None = Field(None, description="ISO 8601, e.g. 2026-11-30T12:00:00Z")
    order: Literal["newest", "oldest"] = "newest"
    cursor: int | None = Field(None, ge=1, le=MAX_ID, description="From the previous page's next_cursor")
    limit: int = Field(50, ge=1, le=200)

    @field_validator("submitted_after", "submitted_before", mode="before")
    @classmethod
    def _iso_only(cls, value):
        if value is not None and not (isinstance(value, str) and ISO_DATE_RE.match(value)):
            raise ValueError("use an ISO 8601 date or date-time, e.g. 2026-11-30T12:00:00Z")
        return value

    @field_validator("submitted_after", "submitted_before")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        # PostgreSQL rejects offsets beyond ±16 h that Python accepts; UTC is always fine.
        if value is None:
            return None
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:
            raise ValueError("date out of range") from None


class OutputOut(Schema):
    stream: str
    text: str
    size: int
    offset: int
    truncated: bool


def _states(raw: str | None) -> list[str]:
    states = [s.strip().upper() for s in (raw or "").split(",") if s.strip()]
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise ValueError(f"unknown state(s): {', '.join(unknown)}")
    return states


SUMMARY_FIELDS = tuple(name for name in JobOut.model_fields if name not in {"team", "owner", "state_text",
                                                                              "reason_text"})
SUMMARY_COLUMNS = (*SUMMARY_FIELDS, "team__name", "owner__username")


def _summary(row: dict) -> dict:
    """A JobOut from a `.values()` row: a page of plain dicts costs a fraction of 50 models."""
    data = {name: row[name] for name in SUMMARY_FIELDS}
    data.update(uuid=str(row["uuid"]), team=row["team__name"], owner=row["owner__username"],
                state_text=explain.state_words(row["state"]),
                reason_text=explain.reason_words(row["reason"]) if row["state"] == "PENDING" else "")
    return data


DETAIL_FIELDS = tuple(name for name in JobDetailOut.model_fields if name not in {"team", "owner", "state_text",
                                                                                "reason_text", "uuid", "attempts"})


def _detail_response(job: Job, status: int) -> HttpResponse:
    """A JobDetailOut, serialised by hand like the list: the submit path is hot."""
    data = {name: getattr(job, name) for name in DETAIL_FIELDS}
    data.update(uuid=str(job.uuid), team=job.team.name, owner=job.owner.username,
                state_text=JobOut.resolve_state_text(job), reason_text=JobDetailOut.resolve_reason_text(job),
                attempts=attempts_of(job))
    return HttpResponse(json.dumps(data, cls=DjangoJSONEncoder), content_type="application/json", status=status)


def _id_of(model, **lookup) -> int:
    """The id of a named team or user; 0 (matches nothing) when there is none."""
    return model.objects.filter(**lookup).values_list("id", flat=True).first() or 0


def _service_filters(f: JobListQuery) -> listing.JobFilters:
    return listing.JobFilters(
        states=tuple(_states(f.state)), submitted_from=f.submitted_after, submitted_before=f.submitted_before,
        team_id=_id_of(Team, name=f.team) if f.team else None,
        owner_id=_id_of(get_user_model(), username=f.owner) if f.owner else None)


@router.get("/jobs", response={200: JobList, 400: Error}, summary="List the jobs you may see")
def list_jobs(request: HttpRequest, filters: Query[JobListQuery]):
    """Your jobs; your teams' jobs if you lead a team; all jobs for admins. Keyset-paginated."""
    try:
        wanted = _service_filters(filters)
    except ValueError as exc:
        return Status(400, {"detail": str(exc), "errors": {"state": [str(exc)]}})

    def build(visible: list[str]) -> bytes:
        page = listing.list_jobs_page(user=request.auth, filters=wanted, sort=filters.order, after=filters.cursor,
                                      size=filters.limit, columns=SUMMARY_COLUMNS, as_values=True, visible=visible)
        # Serialised by hand: validating 50 model rows through the schema cost more than the query.
        body = {"results": [_summary(job) for job in page.jobs], "next_cursor": page.next_cursor}
        return json.dumps(body, cls=DjangoJSONEncoder).encode()

    query = (filters.order, filters.cursor, filters.limit)
    return HttpResponse(list_cache.page(request.auth, wanted, query, build), content_type="application/json")


@router.post("/jobs", response={200: JobDetailOut, 201: JobDetailOut, 400: FormError, 409: QuotaError,
                                503: Unconfirmed},
             summary="Submit a job as yourself")
def create_job(request: HttpRequest, payload: JobIn,
               idempotency_key: str | None = Header(None, alias="Idempotency-Key", pattern=KEY_PATTERN,
                                                    description="1-100 letters, digits or _.:-")):
    """Runs in Slurm as you. Repeating a request with the same `Idempotency-Key` returns the first job (200).

    A 409 means the job would break a hard limit of its team now (its GPU cap, the cap of the
    GPU type it names, or a used-up hard GPU-hour budget): `detail` gives the numbers, `limit`
    the policy field, and nothing was sent to Slurm. Submit again when the team holds fewer
    GPUs or the budget resets.

    A 503 (with Retry-After) means Slurm did not confirm the submission; its body carries the
    job's `id`. Retry with the same key: the portal looks for the job in Slurm and submits it
    only if Slurm never got it, so a retry never makes a second job.
    """
    form = JobSubmitForm(data=payload.dict(), user=request.auth)
    if not form.is_valid():
        return _form_error({field: [str(m) for m in msgs] for field, msgs in form.errors.items()})
    try:
        outcome = submit_job(user=request.auth, spec=form.submit_request(), idempotency_key=idempotency_key)
    except CheckpointRefused as exc:
        return _form_error({exc.field: [str(exc)]})
    except QuotaExceeded as exc:
        return Status(409, {"detail": exc.message, "limit": exc.limit})
    return _detail_response(outcome.job, 201 if outcome.created else 200)


def _form_error(errors: dict[str, list[str]]):
    first = next(iter(errors.items()))
    return Status(400, {"detail": f"{first[0]}: {first[1][0]}", "errors": errors})


@router.get("/jobs/{job_id}", response={200: JobDetailOut, 404: Error}, summary="Show one job")
def show_job(request: HttpRequest, job_id: int = Path(..., ge=1, le=MAX_ID)):
    return Status(200, get_job_for_user(request.auth, job_id))


def _control(request: HttpRequest, job_id: int, action: str):
    job = get_job_for_user(request.auth, job_id)
    try:
        control_job(user=request.auth, job=job, action=action)
    except JobActionRefused as exc:
        return Status(403, {"detail": str(exc)})
    job.refresh_from_db()
    return Status(200, job)


CONTROL_RESPONSES = {200: JobDetailOut, 403: Error, 404: Error, 409: Error, 503: Error}


@router.post("/jobs/{job_id}/cancel", response=CONTROL_RESPONSES, summary="Cancel a job")
def cancel(request: HttpRequest, job_id: int = Path(..., ge=1, le=MAX_ID)):
    """Cancelling a job that already ended does nothing and succeeds."""
    return _control(request, job_id, "cancel")


@router.post("/jobs/{job_id}/hold", response=CONTROL_RESPONSES, summary="Hold a pending job")
def hold(request: HttpRequest, job_id: int = Path(..., ge=1, le=MAX_ID)):
    return _control(request, job_id, "hold")


@router.post("/jobs/{job_id}/release", response=CONTROL_RESPONSES, summary="Release a held job")
def release(request: HttpRequest, job_id: int = Path(..., ge=1, le=MAX_ID)):
    return _control(request, job_id, "release")


@router.post("/jobs/{job_id}/requeue", response=CONTROL_RESPONSES, summary="Requeue a job")
def requeue(request: HttpRequest, job_id: int = Path(..., ge=1, le=MAX_ID)):
    return _control(request, job_id, "requeue")


@router.get("/jobs/{job_id}/output", response={200: OutputOut, 404: Error}, summary="Read a job's output")
def output(request: HttpRequest, job_id: int = Path(..., ge=1, le=MAX_ID),
           stream: Literal["stdout", "stderr"] = "stdout",
           tail: int | None = Query(None, ge=0, le=100_000, description="Last N lines"),
           offset: int | None = Query(None, ge=0, le=MAX_ID, description="Bytes after this offset (follow)")):
    job = get_job_for_user(request.auth, job_id)
    try:
        chunk = read_output(job, stream, tail=tail, offset=offset)
    except OutputUnavailable as exc:
        return Status(404, {"detail": str(exc)})
    return Status(200, {"stream": stream, "text": chunk.text, "size": chunk.size, "offset": chunk.offset,
                        "truncated": chunk.truncated})

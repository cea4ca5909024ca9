"""Researcher pages for jobs: list, detail, live status, output, controls, submit, templates.

Views stay thin: they parse input, call one function from portal.jobs.services (or an access
helper) and render. Each live area is a named partial (templates/jobs/_*.html) that both the
full page and its htmx polling endpoint render, so the two can never drift apart.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.infra import errors
from portal.jobs import access, explain, listing, runs, services, states
from portal.jobs.checkpoints import CheckpointRefused
from portal.jobs.forms import JobSubmitForm, JobTemplateForm
from portal.jobs.models import Job, JobEvent, JobTemplate
from portal.jobs.output import OutputChunk, OutputUnavailable, read_output
from portal.jobs.quota import QuotaExceeded
from portal.slurm.errors import SlurmError, SlurmUnavailable
from portal.slurm.types import PriorityFactors
from portal.teams.models import Team

MAX_ID = 2**63 - 1
ENDED = states.ENDED
TAIL_LINES = 500
STREAMS = ("stdout", "stderr")
ACTION_LABELS = {"cancel": "Cancel", "hold": "Hold", "release": "Release", "requeue": "Requeue"}
ACTION_DONE = {"cancel": "Cancel sent to Slurm.", "hold": "The job is held; it will not start until released.",
               "release": "Released: the job may start when resources are free.",
               "requeue": "Requeued: Slurm will stop the job and start it again."}


def slurm_error_text(exc: SlurmError) -> str:
    """The words for a gateway error: portal/infra/errors.py holds them for the API and pages."""
    return errors.slurm_error_text(exc, "this job")


# ---------------------------------------------------------------- presentation helpers

badge = states.badge


def duration(seconds: int | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class JobRow:
    """A job with the few derived values its row, header and bars need."""

    job: Job
    state_label: str
    badge: str
    gpus: int
    reason_text: str  # why a waiting job waits, in plain words ("" otherwise)
    submitted: str  # "just now", "5 minutes ago"
    elapsed: str
    limit_pct: int  # share of the time limit used so far (0-100), for the small bar


def ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return ""
    return "just now" if (now - when).total_seconds() < 60 else f"{timesince(when, now, depth=1)} ago"


def present(job: Job, now: datetime | None = None) -> JobRow:
    now = now or timezone.now()
    seconds = job.elapsed_s
    if seconds is None and job.start_time:
        seconds = max(0, int(((job.end_time or now) - job.start_time).total_seconds()))
    limit = job.time_limit_min * 60
    pct = min(100, round(100 * seconds / limit)) if seconds and limit else 0
    # A job cancelled while waiting has start == end in Slurm: it never ran, so show no time.
    elapsed = duration(seconds) if seconds or job.state == "RUNNING" else ""
    reason = explain.reason_words(job.reason) if job.state == "PENDING" else ""
    return JobRow(job=job, state_label=states.label(job.state, job.reason), badge=badge(job.state),
                  gpus=job.nodes * job.gpus_per_node, reason_text=reason, submitted=ago(job.submit_time, now),
                  elapsed=elapsed, limit_pct=pct)


@dataclass(frozen=True)
class Step:
    at: datetime
    label: str
    badge: str
    detail: str = ""


def timeline(job: Job, state_events: list[JobEvent]) -> list[Step]:
    """Submit, every state change the tracker saw, and start/end where no event covers them."""
    steps = [Step(job.submit_time, "Submitted", "neutral")] if job.submit_time else []
    seen = {event.name for event in state_events}
    steps += [Step(e.at, states.label(e.name), badge(e.name), e.detail) for e in state_events]
    if job.start_time and "RUNNING" not in seen:
        steps.append(Step(job.start_time, "Started", "info"))
    if job.end_time and not seen & ENDED:
        steps.append(Step(job.end_time, states.label(job.state) or "Ended", badge(job.state)))
    return sorted(steps, key=lambda step: step.at)


def _job_or_404(request: HttpRequest, job_id: int) -> Job:
    if job_id > MAX_ID:
        raise Http404
    try:
        return access.get_job_for_user(request.user, job_id)
    except Job.DoesNotExist:
        raise Http404 from None


# ---------------------------------------------------------------- job list

STATE_CHOICES = [("", "Any state"), ("active", "Active (waiting or running)"),
                 ("finished", "Ended (completed, failed, cancelled, ...)"),
                 *((state, words) for state, words in states.LABELS.items() if state)]
SORT_CHOICES = [("newest", "Newest first"), ("oldest", "Oldest first"), ("name", "By name")]


class JobFilterForm(forms.Form):
    state = forms.ChoiceField(choices=STATE_CHOICES, required=False)
    team = forms.ChoiceField(required=False)
    submitted_from = forms.DateField(required=False, label="Submitted from",
                                     widget=forms.DateInput(attrs={"type": "date"}))
    submitted_to = forms.DateField(required=False, label="Submitted to", widget=forms.DateInput(attrs={"type": "date"}))
    sort = forms.ChoiceField(choices=SORT_CHOICES, required=False)
    after = forms.IntegerField(min_value=1, max_value=MAX_ID, required=False, label="Page",
                               widget=forms.HiddenInput)
    before = forms.IntegerField(min_value=1, max_value=MAX_ID, required=False, label="Page",
                                widget=forms.HiddenInput)

    def __init__(self, *args, teams: dict[str, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.teams = teams
        self.fields["team"].choices = [("", "All teams"), *((name, name) for name in teams)]

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("submitted_from"), data.get("submitted_to")
        if start and end and start > end:
            self.add_error("submitted_to", "This date is before the 'from' date.")
        return data

    def filters(self) -> listing.JobFilters:
        data = self.cleaned_data
        return listing.JobFilters(state=data["state"], team_id=self.teams.get(data["team"]),
                                   submitted_from=_day_start(data["submitted_from"]),
                                   submitted_before=_day_start(data["submitted_to"], days_later=1))


def _day_start(day: date | None, days_later: int = 0) -> datetime | None:
    if day is None:
        return None
    return timezone.make_aware(datetime.combine(day + timedelta(days=days_later), time.min))


def _filter_teams(user) -> dict[str, int]:
    """Teams worth filtering by: every team for admins, the user's own teams otherwise."""
    teams = Team.objects.all() if access.is_admin(user) else access.member_teams(user)
    return dict(teams.order_by("name").values_list("name", "id"))


def _list_context(request: HttpRequest) -> dict:
    form = JobFilterForm(request.GET, teams=_filter_teams(request.user))
    if form.is_valid():
        data = form.cleaned_data
        page = listing.list_jobs_page(user=request.user, filters=form.filters(), sort=data["sort"] or "newest",
                                       after=data["after"], before=data["before"])
    else:  # show the errors above the newest jobs rather than an empty page
        page = listing.list_jobs_page(user=request.user, filters=listing.JobFilters())
    now = timezone.now()
    query = request.GET.copy()
    for key in ("after", "before"):
        query.pop(key, None)
    return {"form": form, "rows": [present(job, now) for job in page.jobs], "page": page,
            "filtered": any(request.GET.get(k) for k in ("state", "team", "submitted_from", "submitted_to")),
            "base_query": query.urlencode(), "rows_url": f"{reverse('jobs:rows')}?{request.GET.urlencode()}"}


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    context = _list_context(request)
    return render(request, "jobs/list.html", context, status=400 if context["form"].errors else 200)


@login_required
@require_GET
def job_list_rows(request: HttpRequest) -> HttpResponse:
    """The list's live area alone; htmx polls it every 2 s."""
    return render(request, "jobs/_job_rows.html", _list_context(request))


# ---------------------------------------------------------------- job detail and its live parts

FACTOR_HINTS = (
    ("fairshare", "Fair share", "High when your team has used less than its share of the cluster lately."),
    ("age", "Age", "Grows the longer the job waits."),
    ("job_size", "Job size", "Depends on how many nodes and CPUs the job asks for."),
    ("partition", "Partition", "The partition's own priority."),
    ("qos", "QOS", "The quality-of-service level's priority."),
)


def factor_rows(factors: PriorityFactors | None) -> list[tuple[str, int, float, str]]:
    """Each factor's share of the job's priority, as (label, percent, points, hint) rows.

    Shares rather than raw numbers: sprio's values depend on the site's PriorityWeight*
    settings, but "fair share is most of your priority" reads the same everywhere.
    """
    if factors is None:
        return []
    points = {name: max(0.0, getattr(factors, name)) for name, _, _ in FACTOR_HINTS}
    total = sum(points.values()) or 1.0  # all zero: every bar empty
    return [(label, round(100 * points[name] / total), points[name], hint) for name, label, hint in FACTOR_HINTS]


def cpu_duration(seconds: float) -> str:
    """CPU time as sacct measures it, to the millisecond: a short job's 0.137 s must not read "0s"."""
    return f"{seconds:.3g} s" if seconds < 60 else duration(round(seconds))


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%"  # seff's precision, so the two can be compared


def accounting_rows(job: Job) -> list[tuple[str, str]]:
    """What sacct measured, once the job has been accounted: CPU and memory use and efficiency as seff
    computes them (CPU: used / (elapsed x allocated CPUs); memory: largest step's MaxRSS / request)."""
    if not job.accounted:
        return []
    rows = [("Elapsed", duration(job.elapsed_s))]
    if job.total_cpu_s is not None:
        rows.append(("CPU time used", cpu_duration(job.total_cpu_s)))
    cpus = f" ({job.alloc_cpus} CPU{'s' if job.alloc_cpus != 1 else ''} \u00d7 elapsed)" if job.alloc_cpus else ""
    rows.append(("CPU time allocated", f"{duration(job.cpu_time_s)}{cpus}"))
    if job.total_cpu_s is not None and job.cpu_time_s:
        rows.append(("CPU efficiency", percent(job.total_cpu_s, job.cpu_time_s)))
    if job.max_rss_kb is not None:
        rows.append(("Max memory (RSS)", filesizeformat(job.max_rss_kb * 1024)))
    if job.req_mem_mb:
        requested = filesizeformat(job.req_mem_mb * 1024 * 1024)
        rows.append(("Memory efficiency", f"{percent(job.max_rss_kb / 1024, job.req_mem_mb)} of {requested}"
                     if job.max_rss_kb is not None else f"not measured (of {requested} requested): the job "
                     "ended before Slurm sampled its memory"))
    return rows


def ending_words(job: Job) -> str:
    """How a finished job ended, in the words its timeline uses too (explain.ending)."""
    return explain.ending(job.state, job.exit_code, job.time_limit_min)


def _status_context(request: HttpRequest, job: Job) -> dict:
    # The newest 200 events are plenty for a page; a job flapping for weeks must not load them all.
    events = list(job.events.select_related("actor").order_by("-at", "-id")[:200])[::-1]
    can_control = access.can_control(request.user, job)
    insight = services.queue_insight(job)
    return {
        "job": job, "row": present(job), "ending": ending_words(job) if job.state in ENDED else "",
        "reason_text": explain.job_reason_words(job, insight.ahead if insight else None),
        "timeline": timeline(job, [e for e in events if e.kind == JobEvent.Kind.STATE]),
        "audit": [e for e in events if e.kind == JobEvent.Kind.ACTION],
        "insight": insight, "factors": factor_rows(insight.factors if insight else None),
        "accounting": accounting_rows(job), **runs.runs_context(job),
        "actions": [(a, ACTION_LABELS[a]) for a in services.available_actions(job)] if can_control else [],
        "can_clone": access.member_teams(request.user).filter(pk=job.team_id).exists(),
        "finished": job.state in ENDED,
        # Accounting lands a little after the end; keep polling until it is there, but not
        # forever: the tracker gives up on sacct after an hour.
        "poll": not (job.state in ENDED and (job.accounted or job.slurm_job_id is None or _long_over(job))),
    }


def _long_over(job: Job) -> bool:
    changed = job.state_changed_at or job.end_time
    return changed is not None and timezone.now() - changed > timedelta(hours=1)


def _stream(request: HttpRequest) -> str:
    stream = request.GET.get("stream", "stdout")
    if stream not in STREAMS:
        raise BadRequest("stream must be stdout or stderr")
    return stream


def _output_context(job: Job, stream: str) -> dict:
    chunk: OutputChunk | None = None
    error = ""
    try:
        chunk = read_output(job, stream, tail=TAIL_LINES)
    except OutputUnavailable as exc:
        error = str(exc)
    finished = job.state in ENDED
    cap = settings.OUTPUT_MAX_BYTES
    return {"job": job, "stream": stream, "chunk": chunk, "output_error": error,
            "output_cap": cap, "download_capped": chunk is not None and chunk.size > cap,
            "has_stderr": bool(job.stderr_path) and job.stderr_path != job.stdout_path,
            # Until the file exists the whole card polls; then only the follower does.
            "card_polls": chunk is None and not finished, "follow": chunk is not None and not finished}


@login_required
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(request, job_id)
    context = {**_status_context(request, job), **_output_context(job, _stream(request))}
    return render(request, "jobs/detail.html", context)


@login_required
@require_GET
def job_status(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(request, job_id)
    # The audit trail lives lower on the page; it rides along as an out-of-band swap.
    return render(request, "jobs/_status.html", {**_status_context(request, job), "oob": True})


def _offset(request: HttpRequest) -> int | None:
    raw = request.GET.get("offset")
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise BadRequest("offset must be a byte position")
    return int(raw)


def _whole_card(request: HttpRequest, job: Job, stream: str) -> HttpResponse:
    """Replace the whole output card instead of appending (the file went away or shrank)."""
    response = render(request, "jobs/_output.html", _output_context(job, stream))
    response["HX-Retarget"] = "#output"
    response["HX-Reswap"] = "outerHTML"
    return response


@login_required
@require_GET
def job_output(request: HttpRequest, job_id: int) -> HttpResponse:
    """The output card (no offset), or what was written after `offset` (live follow)."""
    job = _job_or_404(request, job_id)
    stream, offset = _stream(request), _offset(request)
    if offset is None:
        return render(request, "jobs/_output.html", _output_context(job, stream))
    try:
        chunk = read_output(job, stream, offset=offset)
    except OutputUnavailable:
        return _whole_card(request, job, stream)
    if chunk.size < offset:  # truncated or replaced (a requeued job starts a new file)
        return _whole_card(request, job, stream)
    follow = bool(chunk.text) or job.state not in ENDED
    return render(request, "jobs/_output_more.html", {"job": job, "stream": stream, "chunk": chunk,
                                                      "skipped": chunk.offset - offset, "follow": follow})


@login_required
@require_GET
def job_output_download(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job_or_404(request, job_id)
    stream = _stream(request)
    try:
        chunk = read_output(job, stream)
    except OutputUnavailable as exc:
        messages.error(request, str(exc))
        return redirect("jobs:detail", job_id=job.pk)
    response = HttpResponse(chunk.text.encode(), content_type="text/plain; charset=utf-8")
    suffix = "out" if stream == "stdout" else "err"
    response["Content-Disposition"] = f'attachment; filename="slurm-{job.slurm_job_id or job.pk}.{suffix}"'
    return response


@login_required
@require_POST
def job_control(request: HttpRequest, job_id: int, action: str) -> HttpResponse:
    job = _job_or_404(request, job_id)
    if action not in services.ACTIONS:
        raise Http404
    try:
        services.control_job(user=request.user, job=job, action=action)
    except services.JobActionRefused as exc:
        messages.error(request, str(exc))
    except SlurmError as exc:
        messages.error(request, slurm_error_text(exc))
    else:
        messages.success(request, ACTION_DONE[action])
    return redirect("jobs:detail", job_id=job.pk)


# ---------------------------------------------------------------- submit

def _idempotency_key(request: HttpRequest) -> str:
    """The form's one-time key: a double click or a resent POST returns the first job."""
    raw = request.POST.get("idempotency_key") if request.method == "POST" else None
    if raw is None:
        return uuid.uuid4().hex
    try:
        return uuid.UUID(raw).hex
    except ValueError:
        raise BadRequest("The form's submission key is malformed; reload the page.") from None


def _submit_initial(request: HttpRequest) -> tuple[dict, JobTemplate | None]:
    """Form values from ?template=<id> or ?clone=<job id>; both must be visible to the user."""
    template_id, clone_id = request.GET.get("template"), request.GET.get("clone")
    if template_id:
        template = _template_or_404(request, template_id)
        return {"name": template.name, "team": template.team.name, "partition": template.partition,
                "nodes": template.nodes, "gpus_per_node": template.gpus_per_node, "gpu_type": template.gpu_type,
                "cpus_per_task": template.cpus_per_task, "mem_mb": template.mem_mb,
                "time_limit_min": template.time_limit_min, "script": template.script}, template
    if clone_id:
        if not clone_id.isdigit():
            raise BadRequest("clone must be a job id")
        return services.clone_initial(_job_or_404(request, int(clone_id))), None
    return {}, None


def _try_submit(request: HttpRequest, form: JobSubmitForm, key: str) -> HttpResponse | None:
    """Submit a valid form; a redirect on success, None (with the error on the form) otherwise."""
    try:
        outcome = services.submit_job(user=request.user, spec=form.submit_request(), idempotency_key=key)
    except CheckpointRefused as exc:
        form.add_error(exc.field, str(exc))
        return None
    except QuotaExceeded as exc:   # nothing was sent to Slurm
        form.add_error(None, exc.message)
        return None
    except SlurmUnavailable:
        # Slurm may have queued it anyway; the tracker adopts it, so send the user to the job.
        job = Job.objects.filter(owner=request.user, idempotency_key=key).first()
        if job is None:
            form.add_error(None, "Slurm is not answering, try again in a moment.")
            return None
        messages.warning(request, "Slurm did not confirm the submission in time. "
                                  "If it was queued, this page will show it shortly.")
        return redirect("jobs:detail", job_id=job.pk)
    except SlurmError as exc:
        form.add_error(None, slurm_error_text(exc))
        return None
    job = outcome.job
    if outcome.created:
        messages.success(request, f"Submitted: Slurm job {job.slurm_job_id}.")
    else:
        messages.info(request, "This form was already submitted; here is the job it made.")
    return redirect("jobs:detail", job_id=job.pk)


@login_required
@require_http_methods(["GET", "POST"])
def job_submit(request: HttpRequest) -> HttpResponse:
    if not access.member_teams(request.user).exists():
        return render(request, "jobs/submit.html", {"no_team": True}, status=403)
    key = _idempotency_key(request)
    initial, template = _submit_initial(request) if request.method == "GET" else ({}, None)
    try:
        form = JobSubmitForm(_post_data(request), user=request.user, initial=initial)
    except SlurmError as exc:  # the form reads partition limits from Slurm
        return render(request, "jobs/submit.html", {"slurm_error": slurm_error_text(exc)}, status=503)
    if request.method == "POST" and form.is_valid():
        response = _try_submit(request, form, key)
        if response is not None:
            return response
    templates = access.visible_templates(request.user).filter(team__in=access.member_teams(request.user))
    form.fields["gpu_type"].widget.attrs["list"] = "gpu-types"
    context = {"form": form, "idempotency_key": key, "templates": templates, "template": template,
               "cloned": bool(request.GET.get("clone")),
               "partitions": [(p, duration(p.max_time_min * 60) if p.max_time_min else "none")
                              for p in form.limits.values()],
               "gpu_types": sorted({t for limits in form.limits.values() for t in limits.gpu_types})}
    return render(request, "jobs/submit.html", context, status=400 if form.errors else 200)


# ---------------------------------------------------------------- job templates

class TeamTemplateForm(JobTemplateForm):
    """JobTemplateForm plus the team: chosen on create (among teams the user manages), fixed on edit."""

    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)

    class Meta(JobTemplateForm.Meta):
        fields = ["team", *JobTemplateForm.Meta.fields]

    LABELS = {"gpus_per_node": "GPUs per node", "gpu_type": "GPU type", "cpus_per_task": "CPUs",
              "mem_mb": "Memory (MB)", "time_limit_min": "Time limit (minutes)"}

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        for name, label in self.LABELS.items():
            self.fields[name].label = label
        self.fields["partition"].help_text = "Leave empty for the cluster's default partition."
        self.fields["team"].queryset = teams
        # Disabled rather than left out, so the (team, name) uniqueness check still runs.
        self.fields["team"].disabled = self.instance.pk is not None


def _managed_teams(user):
    return Team.objects.all() if access.is_admin(user) else Team.objects.filter(pk__in=access.led_team_ids(user))


def _template_or_404(request: HttpRequest, template_id: int | str) -> JobTemplate:
    if not str(template_id).isdigit() or int(template_id) > MAX_ID:
        raise Http404
    try:
        return access.visible_templates(request.user).get(pk=int(template_id))
    except JobTemplate.DoesNotExist:
        raise Http404 from None


def _forbidden(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "core/forbidden.html", {"message": message, "back_url": reverse("jobs:templates"),
                                                   "back_label": "Back to templates"}, status=403)


MANAGE_ONLY = "Only the team's lead or an admin can change its templates."


def _post_data(request: HttpRequest):
    return request.POST if request.method == "POST" else None


@login_required
@require_GET
def template_list(request: HttpRequest) -> HttpResponse:
    managed = set(_managed_teams(request.user).values_list("pk", flat=True))
    templates = access.visible_templates(request.user).order_by("team__name", "name")
    return render(request, "jobs/templates.html", {"templates": templates, "managed": managed})


def _save_template_form(request: HttpRequest, form: TeamTemplateForm) -> HttpResponse | None:
    if not form.is_valid():
        return None
    try:
        template = services.save_template(user=request.user, template=form.save(commit=False))
    except services.JobActionRefused as exc:
        form.add_error(None, str(exc))
        return None
    messages.success(request, f"Saved template “{template.name}” for {template.team.name}.")
    return redirect("jobs:templates")


@login_required
@require_http_methods(["GET", "POST"])
def template_new(request: HttpRequest) -> HttpResponse:
    teams = _managed_teams(request.user)
    if not teams.exists():
        return _forbidden(request, "Only team leads and admins can create templates.")
    form = TeamTemplateForm(_post_data(request), teams=teams)
    response = _save_template_form(request, form) if request.method == "POST" else None
    return response or render(request, "jobs/template_form.html", {"form": form},
                              status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def template_edit(request: HttpRequest, template_id: int) -> HttpResponse:
    template = _template_or_404(request, template_id)
    if not access.can_manage_templates(request.user, template.team):
        return _forbidden(request, MANAGE_ONLY)
    form = TeamTemplateForm(_post_data(request), instance=template, teams=_managed_teams(request.user))
    response = _save_template_form(request, form) if request.method == "POST" else None
    return response or render(request, "jobs/template_form.html", {"form": form, "template": template},
                              status=400 if form.errors else 200)


@login_required
@require_POST
def template_delete(request: HttpRequest, template_id: int) -> HttpResponse:
    template = _template_or_404(request, template_id)
    if not access.can_manage_templates(request.user, template.team):
        return _forbidden(request, MANAGE_ONLY)
    services.delete_template(user=request.user, template=template)
    messages.success(request, f"Deleted template “{template.name}”.")
    return redirect("jobs:templates")

"""The job page's "Runs" section: each attempt, the checkpoints found, the GPU-hours lost.

Reads the attempts through the job's reverse relation (job.attempts) and their choice labels,
so portal.jobs never imports portal.recovery (which imports portal.jobs). The newest complete
checkpoint comes from the node-side scanner (slurm_plugins.checkpoint_scan, standard library
only), the same code that tells a restarted job where to resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from portal.jobs.models import Job

log = logging.getLogger(__name__)
MAX_RUNS = 50  # a job requeued more often than this shows its newest runs only
TAIL_LINES = 20


@dataclass(frozen=True)
class Run:
    number: int  # 1-based, as people count
    started_at: datetime | None
    ended_at: datetime | None
    nodes_list: str
    ending: str  # how it ended, in plain words
    badge: str
    failure_class: str  # "Node failure" / "Job's own failure" / ""
    cause: str
    failed_node: str
    detail: str
    resumed_from: str
    last_checkpoint: str
    lost_gpu_h: float | None
    exit_code: int | None
    signal: int | None
    output_tail: list[str]
    health: list[tuple[str, str]]  # node health at the time, as (what, value) rows


@dataclass(frozen=True)
class FoundCheckpoint:
    path: str
    step: int | None
    completed_at: datetime
    format: str


OUTCOME_BADGES = {"": "info", "succeeded": "ok", "requeued": "warn", "held": "bad", "failed": "bad"}


def _lines(value: object) -> list[str]:
    if isinstance(value, str):
        value = value.splitlines()
    return [str(line) for line in value][-TAIL_LINES:] if isinstance(value, list) else []


def _health(value: object) -> list[tuple[str, str]]:
    """Node health as the recovery code stored it: a mapping, a list of findings, or a sentence."""
    if isinstance(value, dict):
        return [(str(key), str(val)) for key, val in value.items()]
    if isinstance(value, list):
        return [("finding", str(item)) for item in value]
    return [("", str(value))] if value else []


def _run(attempt) -> Run:
    evidence = attempt.evidence if isinstance(attempt.evidence, dict) else {}
    ending = attempt.get_outcome_display() if attempt.outcome or not attempt.ended_at else "Ended"
    return Run(number=attempt.number + 1, started_at=attempt.started_at, ended_at=attempt.ended_at,
               nodes_list=attempt.nodes_list, ending=ending, badge=OUTCOME_BADGES.get(attempt.outcome, "neutral"),
               failure_class=attempt.get_failure_class_display() if attempt.failure_class else "",
               cause=attempt.get_cause_display() if attempt.cause else "", failed_node=attempt.failed_node,
               detail=attempt.detail, resumed_from=attempt.resumed_from, last_checkpoint=attempt.last_checkpoint,
               lost_gpu_h=None if attempt.lost_gpu_s is None else attempt.lost_gpu_s / 3600,
               exit_code=attempt.exit_code, signal=attempt.signal,
               output_tail=_lines(evidence.get("output_tail") or evidence.get("last_lines")),
               health=_health(evidence.get("node_health")))


def _scanner():
    try:
        from slurm_plugins.checkpoint_scan import latest_checkpoint  # noqa: PLC0415 - optional until merged
    except ImportError:
        return None
    return latest_checkpoint


def latest_checkpoint(job: Job) -> FoundCheckpoint | None:
    """The job's newest complete checkpoint, or None (no directory, none complete, or unreadable)."""
    scan = _scanner()
    if not job.checkpoint_dir or scan is None:
        return None
    try:
        found = scan(job.checkpoint_dir)
    except OSError as exc:
        log.info("checkpoint scan of %s: %s", job.checkpoint_dir, exc)
        return None
    if found is None:
        return None
    return FoundCheckpoint(path=found.path, step=found.step, format=found.format,
                           completed_at=datetime.fromtimestamp(found.completed_at, tz=UTC))


def runs_context(job: Job) -> dict:
    """What the Runs section shows; no runs recorded yet means no section."""
    attempts = list(job.attempts.order_by("-number")[:MAX_RUNS])[::-1]
    runs = [_run(a) for a in attempts]
    lost = [r.lost_gpu_h for r in runs if r.lost_gpu_h is not None]
    return {"runs": runs, "runs_total": job.attempts.count() if len(attempts) == MAX_RUNS else len(attempts),
            "lost_gpu_h": sum(lost) if lost else None,
            "checkpoint": latest_checkpoint(job) if runs or job.checkpoint_dir else None,
            "checkpoint_scanned": _scanner() is not None}

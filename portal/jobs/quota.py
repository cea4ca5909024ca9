"""The seam between jobs and team quotas.

Quotas (portal/quotas) read jobs to count GPUs and GPU-hours, so jobs may not import them (no
import cycles between apps). Jobs define here what they ask of quotas, and the quotas app
registers its answers at start-up (QuotasConfig.ready()): the submit pre-check and the team's
numbers for a quota wait.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from portal.teams.models import Team


class QuotaExceeded(Exception):
    """A submission would break one of the team's hard limits. `limit` names the policy field
    (max_gpus, max_gpus_by_type, gpu_hours_budget); the message carries the numbers."""

    def __init__(self, message: str, *, limit: str):
        super().__init__(message)
        self.message = message
        self.limit = limit


@dataclass(frozen=True)
class GpuAsk:
    nodes: int
    gpus_per_node: int
    gpu_type: str = ""

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


SubmitCheck = Callable[[Team, GpuAsk], None]
WaitWords = Callable[[str, Team, GpuAsk], str]
_hooks: dict[str, Callable] = {}


def register(*, submit_check: SubmitCheck, wait_words: WaitWords) -> None:
    _hooks["submit_check"], _hooks["wait_words"] = submit_check, wait_words


def check_submit(team: Team, ask: GpuAsk) -> None:
    """Raise QuotaExceeded when the job would break a hard limit of its team now."""
    if "submit_check" in _hooks:
        _hooks["submit_check"](team, ask)


def team_wait_words(reason: str, team: Team, ask: GpuAsk) -> str:
    """The team's numbers for a quota wait, or '' (the caller then uses the generic words)."""
    return _hooks["wait_words"](reason, team, ask) if "wait_words" in _hooks else ""

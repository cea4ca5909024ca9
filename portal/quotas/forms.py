"""The admin's policy form. An empty box means "no limit" (the API's null)."""

from __future__ import annotations

import re

from django import forms

from portal.teams.models import TeamPolicy

_CAP = re.compile(r"^\s*([A-Za-z0-9_.-]{1,32})\s*=\s*(\d{1,7})\s*$")


def parse_type_caps(text: str) -> dict[str, int]:
    """"h100=8, a100=2" -> {"h100": 8, "a100": 2}; raises ValidationError naming the bad part."""
    caps: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _CAP.match(part)
        if not match:
            raise forms.ValidationError(f"{part!r} is not TYPE=COUNT, e.g. h100=8.")
        caps[match[1]] = int(match[2])
    return caps


def format_type_caps(caps: dict[str, int]) -> str:
    return ", ".join(f"{gpu_type}={count}" for gpu_type, count in sorted(caps.items()))


class TeamPolicyForm(forms.Form):
    shares = forms.IntegerField(required=False, min_value=1, max_value=1_000_000,
                                help_text="The team's fair share of the cluster. Empty: Slurm's default, 1.")
    max_gpus = forms.IntegerField(label="Max GPUs at once", required=False, min_value=0, max_value=1_000_000,
                                  help_text="Empty: no cap.")
    max_gpus_by_type = forms.CharField(label="Max GPUs by type", required=False, max_length=500,
                                       help_text="TYPE=COUNT, comma separated, e.g. h100=8. Empty: no caps.")
    gpu_hours_budget = forms.FloatField(label="GPU-hour budget", required=False, min_value=0, max_value=1e9,
                                        help_text="Per period. Empty: no budget.")
    budget_period = forms.ChoiceField(choices=TeamPolicy.Period.choices)
    over_budget = forms.ChoiceField(label="Over budget", choices=TeamPolicy.OverBudget.choices)

    def clean_max_gpus_by_type(self) -> dict[str, int]:
        return parse_type_caps(self.cleaned_data["max_gpus_by_type"])

    @staticmethod
    def initial_from(values: dict) -> dict:
        return {**values, "max_gpus_by_type": format_type_caps(values["max_gpus_by_type"] or {})}

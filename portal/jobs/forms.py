"""Validation of a job request, shared by the web form and the API.

Everything is checked here, server-side, with one clear message per field; Slurm then
checks again and its own rejection message is shown if it still says no.
"""

from __future__ import annotations

from django import forms

from portal.jobs import checkpoints, cluster_info
from portal.jobs.access import member_teams
from portal.jobs.models import JobTemplate
from portal.jobs.services import SubmitRequest

MAX_SCRIPT_BYTES = 64 * 1024
NAME_MAX = 100


class JobSubmitForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, strip=True)
    team = forms.ChoiceField(help_text="The Slurm account the job is charged to.",
                             error_messages={"invalid_choice": "You are not a member of team %(value)s."})
    partition = forms.ChoiceField(required=False,
                                  error_messages={"invalid_choice": "There is no partition named %(value)s."})
    nodes = forms.IntegerField(min_value=1, initial=1)
    gpus_per_node = forms.IntegerField(min_value=0, initial=1, label="GPUs per node")
    gpu_type = forms.CharField(required=False, max_length=32, label="GPU type")
    cpus_per_task = forms.IntegerField(min_value=1, initial=8, label="CPUs")
    mem_mb = forms.IntegerField(min_value=0, initial=32768, label="Memory (MB)",
                                help_text="0 means Slurm's default per CPU.")
    time_limit_min = forms.IntegerField(min_value=1, initial=60, label="Time limit (minutes)")
    requeue = forms.BooleanField(required=False, initial=True,
                                 label="Requeue if a node fails",
                                 help_text="Slurm restarts the job elsewhere; it resumes from its checkpoint.")
    hold = forms.BooleanField(required=False, initial=False, label="Submit held",
                              help_text="It waits in the queue until you release it.")
    checkpoint_dir = forms.CharField(required=False, max_length=400, label="Checkpoint directory",
                                     help_text="Leave empty for the default under the checkpoint root.")
    script = forms.CharField(widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false"}), strip=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.limits = cluster_info.partitions()
        self.teams = {t.name: t for t in member_teams(user)}
        self.fields["team"].choices = [(name, name) for name in self.teams]
        self.fields["partition"].choices = [(p, p) for p in self.limits]
        self.fields["partition"].initial = cluster_info.default_partition(self.limits)
        self.fields["checkpoint_dir"].help_text = (
            f"Leave empty for {checkpoints.default_path('<team>', user.username, '<job id>')}. "
            f"Your own path must be under {checkpoints.default_path('<team>', user.username, '')} "
            "or your home directory.")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if not name.isprintable():
            raise forms.ValidationError("Use printable characters only (no tabs or line breaks).")
        return name

    def clean_script(self) -> str:
        script = self.cleaned_data["script"].replace("\r\n", "\n")
        if not script.startswith("#!"):
            raise forms.ValidationError("The script must start with an interpreter line such as #!/bin/bash.")
        if len(script.encode()) > MAX_SCRIPT_BYTES:
            raise forms.ValidationError(f"The script is over {MAX_SCRIPT_BYTES // 1024} KB.")
        if "\x00" in script:
            raise forms.ValidationError("The script contains a NUL byte.")
        return script

    def clean_partition(self) -> str:
        return self.cleaned_data["partition"] or cluster_info.default_partition(self.limits)

    def clean_checkpoint_dir(self) -> str:
        path = self.cleaned_data["checkpoint_dir"]
        if not path:
            return ""
        try:
            return checkpoints.check(path, username=self.user.username, teams=self.teams).path
        except checkpoints.CheckpointRefused as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict:
        data = super().clean()
        limits = self.limits.get(data.get("partition") or "")
        if limits is None:
            return data
        self._check_limits(data, limits)
        return data

    def submit_request(self) -> SubmitRequest:
        """The validated input as the submit service takes it (call after is_valid())."""
        data = self.cleaned_data
        return SubmitRequest(
            team=self.teams[data["team"]], name=data["name"], script=data["script"], partition=data["partition"],
            nodes=data["nodes"], gpus_per_node=data["gpus_per_node"], gpu_type=data["gpu_type"],
            cpus_per_task=data["cpus_per_task"], mem_mb=data["mem_mb"], time_limit_min=data["time_limit_min"],
            requeue=data["requeue"], hold=data["hold"], checkpoint_dir=data["checkpoint_dir"])

    def _check_limits(self, data: dict, limits: cluster_info.PartitionLimits) -> None:
        where = f"the {limits.name} partition"
        if (data.get("nodes") or 0) > limits.total_nodes:
            self.add_error("nodes", f"{where} has {limits.total_nodes} nodes.")
        gpus = data.get("gpus_per_node") or 0
        if gpus > limits.max_gpus_per_node:
            has = f"at most {limits.max_gpus_per_node}" if limits.max_gpus_per_node else "no"
            self.add_error("gpus_per_node", f"Nodes in {where} have {has} GPUs.")
        gpu_type = data.get("gpu_type") or ""
        if gpu_type and gpu_type not in limits.gpu_types:
            offered = ", ".join(limits.gpu_types) or "none"
            self.add_error("gpu_type", f"{where} offers GPU types: {offered}.")
        if gpu_type and not gpus:
            self.add_error("gpu_type", "Ask for at least one GPU per node to choose a GPU type.")
        if limits.max_time_min and (data.get("time_limit_min") or 0) > limits.max_time_min:
            self.add_error("time_limit_min", f"{where} allows at most {limits.max_time_min} minutes.")
        if (data.get("cpus_per_task") or 0) > limits.max_cpus_per_node:
            self.add_error("cpus_per_task", f"Nodes in {where} have {limits.max_cpus_per_node} CPUs.")
        if (data.get("mem_mb") or 0) > limits.max_mem_mb_per_node:
            self.add_error("mem_mb", f"Nodes in {where} have {limits.max_mem_mb_per_node} MB of memory.")


class JobTemplateForm(forms.ModelForm):
    class Meta:
        model = JobTemplate
        fields = ["name", "description", "partition", "nodes", "gpus_per_node", "gpu_type",
                  "cpus_per_task", "mem_mb", "time_limit_min", "script"]
        widgets = {"script": forms.Textarea(attrs={"rows": 14, "spellcheck": "false"})}

    def clean_script(self) -> str:
        script = self.cleaned_data["script"].replace("\r\n", "\n")
        if not script.startswith("#!"):
            raise forms.ValidationError("The script must start with an interpreter line such as #!/bin/bash.")
        return script

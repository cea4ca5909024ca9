"""Create the demo logins and teams, mirror them into Slurm, and print every login."""

from __future__ import annotations

import json
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.jobs.models import JobTemplate
from portal.quotas.services import sync_teams_to_slurm
from portal.slurm.errors import SlurmError
from portal.teams.models import Membership, Team

# (username, is_admin, [(team, role)])
DEMO_USERS = [
    ("admin", True, []),
    ("alice", False, [("vision", Membership.Role.MEMBER)]),
    ("bob", False, [("vision", Membership.Role.MEMBER)]),
    ("carol", False, [("nlp", Membership.Role.LEAD)]),
]
TEAMS = {"vision": "Computer vision", "nlp": "Language models"}
EXAMPLES = settings.BASE_DIR / "examples"

# Every template keeps its files under $CHECKPOINT_DIR; if the site has not provisioned it, fall
# back to the home directory. $SLURM_JOB_ID survives a requeue, so the fallback still resumes.
CHECKPOINT_PREAMBLE = """\
CKPT="${CHECKPOINT_DIR:-$HOME/checkpoints/$SLURM_JOB_ID}"
if ! mkdir -p "$CKPT" 2>/dev/null; then
  CKPT="$HOME/checkpoints/$SLURM_JOB_ID"; mkdir -p "$CKPT"
  echo "note: \\$CHECKPOINT_DIR is not writable, using $CKPT"
fi
echo "job $SLURM_JOB_ID on ${SLURMD_NODENAME:-$(hostname)}, restart ${SLURM_RESTART_COUNT:-0}," \\
     "GPUs: ${SLURM_JOB_GPUS:-none}"
"""


def _training_script() -> str:
    code = (EXAMPLES / "train_with_checkpoints.py").read_text()
    return ("#!/bin/bash\n"
            "# Training loop that checkpoints to $CHECKPOINT_DIR every 10 steps and on SIGTERM, and resumes\n"
            "# from the last checkpoint when Slurm requeues the job (node failure, preemption, requeue).\n"
            "# The steps are simulated; replace train_step() with your own (see examples/README.md).\n"
            "set -euo pipefail\n" + CHECKPOINT_PREAMBLE +
            'python3 - --checkpoint-dir "$CKPT" --steps 120 --step-seconds 1 --save-every 10 <<\'PY\'\n'
            + code + "PY\n")


EVAL_SCRIPT = """#!/bin/bash
# Evaluate a trained checkpoint on one GPU and write the metrics next to it.
# Set MODEL_DIR to the checkpoint directory of a training job (shown on its job page).
set -euo pipefail
""" + CHECKPOINT_PREAMBLE + """MODEL_DIR="${MODEL_DIR:-$CKPT}"
python3 - "$MODEL_DIR" "$CKPT" <<'PY'
import json, random, sys, time
from pathlib import Path

model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
ckpt = model_dir / "checkpoint.json"
state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "loss": 2.5}
print(f"evaluating {'checkpoint at step %d' % state['step'] if ckpt.exists() else 'an untrained model'}", flush=True)
rng, correct, seen = random.Random(42), 0, 0
skill = max(0.1, 1.0 - state["loss"] / 2.5)  # a lower training loss -> a better simulated model
for batch in range(1, 21):
    time.sleep(0.5)
    correct += sum(rng.random() < skill for _ in range(64))
    seen += 64
    print(f"batch {batch}/20 running accuracy {correct / seen:.3f}", flush=True)
metrics = {"step": state["step"], "accuracy": round(correct / seen, 4), "samples": seen}
(out_dir / "eval.json").write_text(json.dumps(metrics))
print("metrics", json.dumps(metrics), flush=True)
PY
"""

PREPROCESS_SCRIPT = """#!/bin/bash
# Turn raw text into shards on CPUs, in parallel over the CPUs Slurm gave the job.
# Shards that already exist are skipped, so a requeued job only does what is left.
set -euo pipefail
""" + CHECKPOINT_PREAMBLE + """python3 - "$CKPT/shards" "${SLURM_CPUS_PER_TASK:-1}" <<'PY'
import hashlib, json, multiprocessing, os, random, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

out, workers = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
WORDS = "the a model data train loss gpu node batch token shard epoch vision language".split()

def make_shard(index):
    path = out / f"shard-{index:04d}.jsonl"
    if path.exists():
        return index, "skipped"
    rng = random.Random(index)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 32))) for _ in range(2000)]
    records = [{"id": f"{index}-{n}", "tokens": len(text.split()), "hash": hashlib.sha1(text.encode()).hexdigest()}
               for n, text in enumerate(lines)]
    time.sleep(0.5)  # stands in for real parsing work
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\\n" for r in records))
    os.replace(tmp, path)  # atomic: a half-written shard is never mistaken for a finished one
    return index, "written"

# fork: Python 3.14 starts workers with forkserver by default, which re-reads the main script
# (here stdin, gone by then) and fails.
with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
    for index, what in pool.map(make_shard, range(24)):
        print(f"shard {index:04d} {what}", flush=True)
print(f"done: {len(list(out.glob('shard-*.jsonl')))} shards in {out}", flush=True)
PY
"""


def demo_templates() -> list[dict]:
    """Three templates every demo team gets; all of them run on the local cluster as they are."""
    return [
        {"name": "Training with checkpoints", "partition": "gpu", "gpus_per_node": 1, "gpu_type": "h100",
         "cpus_per_task": 4, "mem_mb": 8192, "time_limit_min": 30, "script": _training_script(),
         "description": "A 1-GPU training loop that saves to $CHECKPOINT_DIR and resumes after a requeue."},
        {"name": "Single-GPU evaluation", "partition": "gpu", "gpus_per_node": 1, "gpu_type": "h100",
         "cpus_per_task": 4, "mem_mb": 8192, "time_limit_min": 10, "script": EVAL_SCRIPT,
         "description": "Scores a training checkpoint (set MODEL_DIR) and writes eval.json."},
        {"name": "CPU preprocessing", "partition": "cpu", "gpus_per_node": 0, "gpu_type": "",
         "cpus_per_task": 4, "mem_mb": 4096, "time_limit_min": 15, "script": PREPROCESS_SCRIPT,
         "description": "Shards raw text on CPUs in parallel; skips shards a previous run finished."},
    ]


def _passwords() -> dict[str, str]:
    """Random demo passwords, generated once per checkout and kept outside the repo."""
    path = settings.VAR_DIR / "demo-logins.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    for name, _, _ in DEMO_USERS:
        known.setdefault(name, secrets.token_urlsafe(9))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(known, fh, indent=2)
    return known


class Command(BaseCommand):
    help = "Seed the demo users (admin, alice, bob, carol), teams (vision, nlp) and their job templates."

    def add_arguments(self, parser):
        parser.add_argument("--skip-slurm", action="store_true",
                            help="only the database; do not touch Slurm accounts")

    def handle(self, *args, skip_slurm: bool = False, **options):
        passwords = _passwords()
        self._seed_db(passwords)
        if not skip_slurm:
            try:
                sync_teams_to_slurm()
            except SlurmError as exc:
                raise CommandError(f"could not mirror teams into Slurm: {exc.message}") from None
        self.stdout.write("Demo logins:")
        for name, is_admin, teams in DEMO_USERS:
            role = "admin" if is_admin else ", ".join(f"{t} {r}" for t, r in teams)
            self.stdout.write(f"  {name:<6} {passwords[name]:<14} ({role})")

    @transaction.atomic
    def _seed_db(self, passwords: dict[str, str]) -> None:
        users = get_user_model()
        teams = {name: Team.objects.get_or_create(name=name, defaults={"description": desc})[0]
                 for name, desc in TEAMS.items()}
        for name, is_admin, memberships in DEMO_USERS:
            user, _ = users.objects.get_or_create(username=name)
            user.is_staff = user.is_superuser = is_admin
            user.set_password(passwords[name])
            user.save()
            for team, role in memberships:
                Membership.objects.update_or_create(user=user, team=teams[team], defaults={"role": role})
        for team in teams.values():
            for fields in demo_templates():
                # get_or_create: a lead's later edits to a seeded template survive a re-seed.
                JobTemplate.objects.get_or_create(team=team, name=fields["name"], defaults=fields)

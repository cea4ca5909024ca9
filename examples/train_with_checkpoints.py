#!/usr/bin/env python3
"""A training loop that survives being stopped: it checkpoints often and resumes where it left off.

On a big cluster, jobs are stopped all the time: a GPU fails and the node is drained, the
job is preempted, someone runs `scontrol requeue`, the time limit runs out. A job submitted
with --requeue (the portal's default) is started again by Slurm from the top of its script,
usually on another node. This loop loses at most a few steps when that happens, because:

1. It saves its state to $CHECKPOINT_DIR every --save-every steps. A save is atomic (write a
   temporary file, fsync it, rename it over the old one), so a kill in the middle of a save
   never leaves a half-written checkpoint behind.
2. It saves once more when Slurm sends SIGTERM. Slurm sends SIGTERM, waits KillWait seconds,
   then sends SIGKILL; the final save fits well inside that window.
3. On start it loads the checkpoint, if there is one, and continues from its step: the one
   in $PORTAL_RESUME_FROM when the cluster's TaskProlog found one (the checkpoint convention,
   see docs), else its own $CHECKPOINT_DIR/checkpoint.json.
4. It is fenced: before every save it re-reads $CHECKPOINT_DIR/.portal-generation. When that
   names a newer attempt than its own $PORTAL_GENERATION, this copy is a stale one (say, on a
   hung node that woke up after the job was requeued elsewhere): it does not write, and exits
   with code 75, so it can never overwrite the new attempt's checkpoints.

checkpoint.json holds the step, so the portal's scanner (slurm_plugins/checkpoint_scan.py)
can tell which step a job will resume from; being renamed into place, it is always complete.

The training itself is simulated (a loss that falls with some noise), so the example needs
only the Python standard library and runs anywhere, with or without GPUs. Replace
`train_step` with your framework's step and put its state (model and optimizer state dicts,
RNG state, data-loader position) in the checkpoint.

Run it locally:

    CHECKPOINT_DIR=/tmp/ckpt python3 examples/train_with_checkpoints.py --steps 30 --step-seconds 0.1
    # press Ctrl-C half way, run it again: it resumes

Run it on the cluster: the portal's "Training with checkpoints" template embeds this file, or
see examples/README.md for an sbatch script.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

CHECKPOINT_FILE = "checkpoint.json"
GENERATION_FILE = ".portal-generation"
EXIT_FENCED = 75  # EX_TEMPFAIL: a newer attempt of this job owns the checkpoint directory


class Fenced(Exception):
    """A newer attempt of this job has started; this copy must not write."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="total training steps")
    parser.add_argument("--step-seconds", type=float, default=1.0, help="simulated time per step")
    parser.add_argument("--save-every", type=int, default=10, help="checkpoint every N steps")
    parser.add_argument("--no-save-on-signal", action="store_true",
                        help="stop on SIGTERM without saving, as after a GPU that fell off the bus, whose state "
                             "is gone (benchmarks use it to measure the worst case)")
    parser.add_argument("--checkpoint-dir", default=os.environ.get("CHECKPOINT_DIR", "checkpoints"),
                        help="where checkpoints live (default: $CHECKPOINT_DIR)")
    return parser.parse_args(argv)


def load_checkpoint(directory: Path) -> dict | None:
    return load_checkpoint_file(directory / CHECKPOINT_FILE)


def resume_state(directory: Path) -> dict | None:
    """$PORTAL_RESUME_FROM when it names a checkpoint of this format, else the directory's own."""
    resume = os.environ.get("PORTAL_RESUME_FROM", "")
    # It names a checkpoint in $CHECKPOINT_DIR: use it only when that is where this run keeps its own.
    if resume and directory.resolve() in Path(resume).resolve().parents:
        path = Path(resume)
        state = load_checkpoint_file(path / CHECKPOINT_FILE if path.is_dir() else path)
        if state is not None:
            print(f"resuming from {path} (PORTAL_RESUME_FROM)", flush=True)
            return state
    return load_checkpoint(directory)


def load_checkpoint_file(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # A damaged checkpoint should not kill the job: start over, loudly.
        print(f"warning: ignoring unreadable checkpoint {path}: {exc}", flush=True)
        return None


def own_generation() -> int | None:
    """This attempt's number from the TaskProlog; None (no fencing) when run outside the cluster."""
    try:
        return int(os.environ["PORTAL_GENERATION"])
    except (KeyError, ValueError):
        return None


def current_generation(directory: Path) -> int | None:
    try:
        return int((directory / GENERATION_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def check_fence(directory: Path, generation: int | None) -> None:
    """Raise Fenced when the directory's generation file names a newer attempt than ours."""
    current = current_generation(directory)
    if generation is not None and current is not None and current > generation:
        raise Fenced(f"generation {current} owns {directory}, this copy is generation {generation}")


def save_checkpoint(directory: Path, state: dict, generation: int | None = None) -> None:
    """Write atomically: a reader (or the next run) sees the old checkpoint or the new one, never half."""
    check_fence(directory, generation)
    tmp = directory / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / CHECKPOINT_FILE)


def train_step(step: int, loss: float) -> float:
    """Stand-in for a real step: the loss falls towards 0.1 with a little noise."""
    # Seeded by step, so a resumed run draws the same curve (not for cryptography).
    noise = random.Random(step).uniform(-0.02, 0.02)  # noqa: S311
    return max(0.05, 0.1 + (loss - 0.1) * math.exp(-0.05) + noise)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between steps and saves before leaving."""

    def __init__(self) -> None:
        self.signal: int | None = None
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, _frame) -> None:
        self.signal = signum


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    directory = Path(args.checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if directory.stat().st_uid != os.geteuid():
        # A link into someone else's tree: never resume from, or write over, their checkpoints.
        print(f"error: checkpoint directory {directory} belongs to uid {directory.stat().st_uid}, "
              "not to you", flush=True)
        return 2
    try:
        return train(args, directory, restarts)
    except Fenced as exc:
        print(f"fenced, not saving: {exc}; exiting", flush=True)
        return EXIT_FENCED


def train(args: argparse.Namespace, directory: Path, restarts: int) -> int:
    generation = own_generation()
    state = resume_state(directory) or {"step": 0, "loss": 2.5, "runs": 0}
    state["runs"] += 1
    if state["step"]:
        print(f"resumed from step {state['step']} (run {state['runs']}, Slurm restart {restarts})", flush=True)
    else:
        print(f"starting fresh, checkpoints in {directory}", flush=True)
    if state["step"] >= args.steps:
        print(f"already finished: {state['step']} steps, loss {state['loss']:.4f}", flush=True)
        return 0

    stop = StopFlag()
    while state["step"] < args.steps:
        time.sleep(args.step_seconds)
        state["loss"] = train_step(state["step"], state["loss"])
        state["step"] += 1
        print(f"step {state['step']}/{args.steps} loss {state['loss']:.4f}", flush=True)
        if state["step"] % args.save_every == 0:
            save_checkpoint(directory, state, generation)
            print(f"checkpoint saved at step {state['step']}", flush=True)
        if stop.signal is not None and args.no_save_on_signal:
            print(f"stopping on signal {stop.signal}; not saving (--no-save-on-signal)", flush=True)
            return 128 + stop.signal
        if stop.signal is not None:
            save_checkpoint(directory, state, generation)
            print(f"stopping on signal {stop.signal}; checkpoint saved at step {state['step']}", flush=True)
            return 128 + stop.signal

    save_checkpoint(directory, state, generation)
    print(f"training finished: {state['step']} steps, final loss {state['loss']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

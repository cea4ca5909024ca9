"""Benchmark: two teams with shares 70/30, both keeping more work queued than the GPU nodes can
run; the 70-share team should receive 63-77% of the GPU-hours of a measured window.

For each phase (baseline first: equal shares 50/50; then 70/30) it makes two fresh teams in a
database of its own (BENCH_DB_NAME, default portal_bench_share), `bss-<id>-<phase>a` with alice
and `bss-<id>-<phase>b` with bob, sets their shares through the portal's service
(update_team_policy, audited as the bench admin) and reconciles them into Slurm, then reads the
Fairshare back from sacctmgr. Fresh accounts per phase: fair share works on accumulated usage
(PriorityDecayHalfLife=7-0), so a second phase on the same accounts would first repay the first.

Each team keeps QUEUE_FACTOR x the GPUs of the nodes queued or running: 1-GPU jobs of --job-s
seconds, submitted with plain `sbatch` as alice / bob (their default accounts are untouched),
limited to --nodes with --exclude of the partition's other nodes, resubmitted as they finish. The
first --warmup seconds are not measured: with both teams at zero usage, Slurm's fair share first
has to build usage before it can tell them apart (and priorities are recomputed only every
PriorityCalcPeriod, 1 minute here). GPU-hours per team over the window [warmup, warmup + window]
come from sacct (AllocTRES gres/gpu x the part of each run inside the window, running jobs up to
the window's end).

Cleans up at the end, also on failure or Ctrl-C: cancels its jobs, removes the bench accounts
(with alice's and bob's associations to them).

    .venv/bin/python bench/share_split.py                                    # gpu[07-08], ~24 min
    .venv/bin/python bench/share_split.py --nodes 'gpu[01-08]' --warmup 420 --window 900   # ~45 min

While it runs, its pending jobs sit in the partition above most others' priority: other jobs
of the partition then start only at backfill passes (reason Priority), even on idle nodes.
"""

from __future__ import annotations

import argparse
import pwd
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from common import machine, own_database_setup  # noqa: E402

DB = own_database_setup("portal_bench_share")

from django.contrib.auth import get_user_model  # noqa: E402

from portal.quotas.reconcile import reconcile_teams  # noqa: E402
from portal.quotas.services import update_team_policy  # noqa: E402
from portal.slurm.parse import expand_hostlist  # noqa: E402
from portal.teams.models import Membership, Team  # noqa: E402

GPUS_PER_NODE = 4
QUEUE_FACTOR = 1.5
USERS = ("alice", "bob")
TOP_UP_EVERY_S = 3.0


def run(args: list[str], *, check: bool = True) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=check).stdout


def partition_nodes(partition: str) -> list[str]:
    return expand_hostlist(run(["sinfo", "-h", "-p", partition, "-o", "%N"]).strip())


def make_teams(tag: str, shares: tuple[int, int]) -> list[Team]:
    User = get_user_model()
    admin, _ = User.objects.get_or_create(username="bss-admin", defaults={"is_staff": True, "is_superuser": True})
    teams = []
    for suffix, user, share in zip("ab", USERS, shares, strict=True):
        team = Team.objects.create(name=f"{tag}{suffix}")
        Membership.objects.create(user=User.objects.get_or_create(username=user)[0], team=team)
        update_team_policy(team=team, changes={"shares": share}, by=admin)
        teams.append(team)
    # A write can vanish when other people's sacctmgr writes run at the same moment; the next
    # reconcile repairs it, as beat would.
    for _ in range(3):
        plan = reconcile_teams()
        if not plan.failed and reconcile_teams(dry_run=True).empty:
            return teams
    raise SystemExit(f"reconcile did not converge: {plan.lines(verb='did')}")


def fairshare_in_slurm(account: str) -> str:
    out = run(["sacctmgr", "-nP", "show", "assoc", f"account={account}", "format=account,user,fairshare"])
    for line in out.split():
        _, user, share = line.split("|")
        if not user:
            return share
    return "?"


def default_accounts() -> dict[str, str]:
    return {u: run(["sacctmgr", "-nP", "show", "user", u, "format=defaultaccount"]).strip() for u in USERS}


def queued(account: str) -> int:
    return len(run(["squeue", "-h", "-A", account, "-t", "PENDING,RUNNING,CONFIGURING", "-o", "%i"]).split())


def submit(user: str, account: str, count: int, *, partition: str, exclude: str, job_s: int) -> None:
    args = ["runuser", "-u", user, "--", "sbatch", "--parsable", "-A", account, "-p", partition, "--gres=gpu:1",
            "-c", "1", "--mem=512", "-t", str(max(2, job_s // 60 + 2)), "-o", "/dev/null",
            "-D", pwd.getpwnam(user).pw_dir,
            "-J", f"{account}-split", "--wrap", f"sleep {job_s}"]
    if exclude:
        args[5:5] = ["--exclude", exclude]
    for _ in range(count):
        run(args)


def keep_queues_full(teams: list[Team], until: float, *, capacity: int, partition: str, exclude: str,
                     job_s: int) -> None:
    depth = int(capacity * QUEUE_FACTOR)
    while time.time() < until:
        for team, user in zip(teams, USERS, strict=True):
            missing = depth - queued(team.name)
            if missing > 0:
                submit(user, team.name, missing, partition=partition, exclude=exclude, job_s=job_s)
        time.sleep(TOP_UP_EVERY_S)


def gpu_hours(account: str, start: float, end: float) -> float:
    since = datetime.fromtimestamp(start - 3600).strftime("%Y-%m-%dT%H:%M:%S")
    out = run(["sacct", "-a", "-X", "-n", "-P", "-A", account, "-S", since, "-o", "Start,End,AllocTRES"])
    total = 0.0
    for line in out.splitlines():
        started, ended, tres = line.split("|")
        if started in ("Unknown", "None", ""):
            continue
        gpus = next((int(v) for k, _, v in (p.partition("=") for p in tres.split(",")) if k == "gres/gpu"), 0)
        t0 = datetime.fromisoformat(started).timestamp()
        t1 = end if ended in ("Unknown", "None", "") else datetime.fromisoformat(ended).timestamp()
        overlap = min(t1, end) - max(t0, start)
        if overlap > 0:
            total += gpus * overlap / 3600
    return total


def cancel_jobs(accounts: list[str]) -> None:
    for account in accounts:   # scancel -A takes one account (a list cancels nothing)
        run(["scancel", "-A", account], check=False)


def accounts_left(names: list[str]) -> list[str]:
    out = run(["sacctmgr", "-nP", "show", "account", "where", f"name={','.join(names)}", "format=account"],
              check=False)
    return [line for line in out.split() if line in names]


def remove_teams(teams: list[Team]) -> None:
    # A second Ctrl-C (or one reaching scancel/sacctmgr, in the same process group) must not cut it short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    names = [t.name for t in teams]
    cancel_jobs(names)
    deadline = time.time() + 60
    while time.time() < deadline and any(queued(n) for n in names):
        time.sleep(1)
    for team in teams:
        team.delete()   # records a RetiredTeam: the reconciler removes the account (portal description)
    for _ in range(10):   # Slurm refuses while a job is still completing; the next run removes it
        reconcile_teams()
        if not names or not accounts_left(names):
            return
        cancel_jobs(names)
        time.sleep(5)


def phase(label: str, shares: tuple[int, int], args: argparse.Namespace, *, tag: str, exclude: str,
          capacity: int, created: list[Team]) -> tuple[float, float]:
    teams = make_teams(tag, shares)
    created.extend(teams)
    held = {t.name: fairshare_in_slurm(t.name) for t in teams}
    print(f"\n{label}: shares {shares[0]}/{shares[1]} set through update_team_policy; Slurm holds Fairshare "
          + ", ".join(f"{n}={v}" for n, v in held.items()), flush=True)
    start = time.time()
    window_start, window_end = start + args.warmup, start + args.warmup + args.window
    keep_queues_full(teams, window_end, capacity=capacity, partition=args.partition, exclude=exclude,
                     job_s=args.job_s)
    time.sleep(2)   # let sacct record the last starts
    hours = [gpu_hours(t.name, window_start, window_end) for t in teams]
    warm = [gpu_hours(t.name, start, window_start) for t in teams]
    total = sum(hours) or float("nan")
    share_a = hours[0] / total
    possible = capacity * args.window / 3600
    print(f"  warm-up {args.warmup:.0f} s excluded (GPU-h {warm[0]:.2f} / {warm[1]:.2f}); "
          f"window {args.window:.0f} s on {capacity} GPUs ({possible:.2f} GPU-h possible)")
    print(f"  GPU-hours in window: {teams[0].name} (share {shares[0]}) {hours[0]:.3f}, "
          f"{teams[1].name} (share {shares[1]}) {hours[1]:.3f}; used {sum(hours) / possible:.0%} of the nodes")
    whole = (hours[0] + warm[0]) / (sum(hours) + sum(warm) or float("nan"))
    # Slurm balances usage accumulated since the accounts were made (decay: 7-day half-life), so
    # a warm-up that went one team's way is paid back inside the window: both figures are shown.
    print(f"  split: window {share_a:.1%} / {1 - share_a:.1%}; whole phase incl. warm-up {whole:.1%} / {1 - whole:.1%}",
          flush=True)
    cancel_jobs([t.name for t in teams])
    return share_a, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="gpu[07-08]", help="GPU nodes the jobs may use (default gpu[07-08])")
    parser.add_argument("--partition", default="gpu")
    parser.add_argument("--window", type=float, default=480, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=180, help="unmeasured seconds before the window")
    # Priorities are recomputed once a minute (PriorityCalcPeriod=1) and the team ahead then takes
    # every GPU that frees up: with 30 s jobs that was every GPU each minute, and a 3-minute window
    # split 56/44 for 70/30. Longer jobs hand over fewer GPUs per recomputation.
    parser.add_argument("--job-s", type=int, default=120, help="length of each 1-GPU job")
    parser.add_argument("--no-baseline", action="store_true", help="skip the equal-shares phase")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    nodes = expand_hostlist(args.nodes)
    exclude = ",".join(n for n in partition_nodes(args.partition) if n not in nodes)
    capacity = GPUS_PER_NODE * len(nodes)
    tag = f"bss-{uuid.uuid4().hex[:6]}-"
    before = default_accounts()
    print(f"share split: nodes {args.nodes} ({capacity} GPUs), {args.job_s} s 1-GPU jobs, each team keeps "
          f"{int(capacity * QUEUE_FACTOR)} queued or running; {machine()}")
    print("settings changed by this bench: team shares only (fresh bss-* accounts); slurm.conf as deployed "
          "(PriorityCalcPeriod=1, PriorityDecayHalfLife=7-0, PriorityWeightFairshare=10000)")
    created: list[Team] = []
    results = {}
    try:
        if not args.no_baseline:
            results["baseline 50/50"] = phase("baseline", (50, 50), args, tag=tag + "e", exclude=exclude,
                                              capacity=capacity, created=created)
        results["70/30"] = phase("shares 70/30", (70, 30), args, tag=tag + "s", exclude=exclude,
                                 capacity=capacity, created=created)
    finally:
        remove_teams(created)
        after = default_accounts()
        left = accounts_left([t.name for t in created]) if created else []
        print(f"\ncleanup: jobs cancelled; accounts {', '.join(t.name for t in created)} "
              f"{f'NOT REMOVED: {left}' if left else 'removed'}; default accounts "
              f"{'unchanged' if after == before else f'CHANGED {before} -> {after}'}")
    print("\n| phase | first team's share of GPU-hours: window | whole phase | target |\n|---|---|---|---|")
    for label, (split, whole) in results.items():
        target = "63-77%" if label == "70/30" else "about 50%"
        verdict = (" (within)" if 0.63 <= split <= 0.77 else " (OUTSIDE)") if label == "70/30" else ""
        print(f"| {label} | {split:.1%}{verdict} | {whole:.1%} | {target} |")


if __name__ == "__main__":
    main()

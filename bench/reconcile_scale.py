"""Benchmark: reconciling 1,000 teams and 10,000 users with 1% drift (target <= 10 s, and at most
one sacctmgr call per changed object).

Seeds a database of its own (BENCH_DB_NAME, default portal_bench_recon) with TEAMS bench teams
(`bsc-tNNNN`) of USERS_PER_TEAM Django users each (`bscuNNNNN`; the first is the lead), every team
with a policy (shares from {10, 20, 30, 50, 100}, max_gpus from {4, 8, 16}). Slurm gets them in
step: one `add account` call for every account, then the reconciler itself (batched) adds limits,
associations and coordinators. Then, RUNS times:

  1. drift by hand in sacctmgr, 1% of the objects (teams + users), the same drift every run:
     30% removed associations, 30% changed Fairshare or GrpTRES, 20% extra coordinators,
     20% missing coordinators;
  2. reconcile, batched (the portal's way): DB read, the two sacctmgr reads, the plan (pure
     Python) and the apply timed apart; sacctmgr calls counted; a dry run must then be empty;
  3. the same drift again, then the baseline: the same plan applied one sacctmgr call per change;
  4. where the loopback route has quickack (cluster/ctl up sets it), the same drift once more and
     the batched reconcile with quickack off: what the writes cost without it (Slurm 22.05's
     RPCs then wait ~40 ms per round trip on delayed ACKs). Put back on straight after.

Every run reads the coordinators incrementally (portal/quotas/coordinators.py), as the portal
does. After the runs: beat's full coordinator read timed twice (it runs off the reconcile path),
then the drift again with no coordinator copy, reconciled the worker's way (coordinators left
for the full read; then that read and the next run timed), and once more the command line's way
(every coordinator read first).

Slurm side: by default a scratch slurmdbd and slurmctld (bench/scratch_accounting.py: the local
cluster's own config and binaries, cluster `benchacct`, a database of their own), stopped and
dropped at the end, also on failure or Ctrl-C. With --shared-slurmdbd it writes to the local
cluster's slurmdbd instead and removes every object it made at the end (users first: Slurm
refuses to remove an account that is still some user's default); slurmdbd 22.05 removes
associations in quadratic time, so never do that above ~100 teams.

    .venv/bin/python bench/reconcile_scale.py                       # 1,000 teams, 10,000 users
    .venv/bin/python bench/reconcile_scale.py --teams 100 --runs 2  # a quick one
    .venv/bin/python bench/reconcile_scale.py --on trixie           # Slurm 24.11's slurmdbd
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import scratch_accounting  # noqa: E402
from common import (  # noqa: E402
    SUITES,
    cluster_env,
    loopback_quickack,
    machine,
    own_database_setup,
    percentile,
    set_loopback_quickack,
    slurm_command,
)

# Read before Django loads its settings, which take the cluster's name from the environment.
SHARED = "--shared-slurmdbd" in sys.argv
# --on trixie|sid: the slurmdbd of cluster/rootcluster.py's mini cluster of that suite (Slurm
# 24.11 / 26.05), its accounting database dropped before and after (as the scratch one's is).
SUITE = sys.argv[sys.argv.index("--on") + 1] if "--on" in sys.argv[:-1] else "host"
ROOT_DIR = ""
if SUITE != "host":
    _extra, ROOT_DIR, RELEASE = cluster_env(SUITE, start=False)   # started on an empty database later
    os.environ.update(_extra)
elif not SHARED:
    scratch_accounting.select()
# Every Slurm command the bench runs itself: the root's own clients there.
CLI = slurm_command(ROOT_DIR)
DB = own_database_setup("portal_bench_recon")

from django.contrib.auth import get_user_model  # noqa: E402

from portal.quotas import coordinators  # noqa: E402
from portal.quotas.reconcile import (  # noqa: E402
    _batches,
    apply_plan,
    desired_state,
    plan_changes,
    reconcile_teams,
)
from portal.slurm import gateway, parse  # noqa: E402
from portal.slurm.types import AccountsState  # noqa: E402
from portal.teams.models import Membership, RetiredTeam, Team, TeamPolicy  # noqa: E402

PREFIX = "bsc"
CLUSTER = os.environ.get("SLURM_CLUSTER", "portal")
SHARES = (10, 20, 30, 50, 100)
CAPS = (4, 8, 16)


def team_name(i: int) -> str:
    return f"{PREFIX}-t{i:04d}"


def user_name(i: int) -> str:
    return f"{PREFIX}u{i:05d}"


class Calls:
    """Counts the sacctmgr writes the gateway makes (reads are counted apart)."""

    def __init__(self) -> None:
        self.writes = self.reads = 0
        self.real = gateway.cli

    def __call__(self, args: list[str]) -> str:
        if args[:1] == ["sacctmgr"]:
            if args[1:2] == ["-i"]:
                self.writes += 1
            else:
                self.reads += 1
        return self.real(args)


def sacctmgr(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([*CLI, "sacctmgr", "-i", *args], input=stdin, capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def seed_database(teams: int, per_team: int) -> None:
    User = get_user_model()
    wipe_database()
    users = User.objects.bulk_create([User(username=user_name(i)) for i in range(teams * per_team)])
    rows = Team.objects.bulk_create([Team(name=team_name(t)) for t in range(teams)])
    Membership.objects.bulk_create(
        Membership(user=users[t * per_team + k], team=rows[t],
                   role=Membership.Role.LEAD if k == 0 else Membership.Role.MEMBER)
        for t in range(teams) for k in range(per_team))
    TeamPolicy.objects.bulk_create(TeamPolicy(team=row, shares=SHARES[t % len(SHARES)], max_gpus=CAPS[t % len(CAPS)])
                                   for t, row in enumerate(rows))


def wipe_database() -> None:
    Team.objects.filter(name__startswith=f"{PREFIX}-").delete()
    get_user_model().objects.filter(username__startswith=f"{PREFIX}u").delete()
    # Deleting a team records a RetiredTeam (so the reconciler removes its account); not here.
    RetiredTeam.objects.filter(name__startswith=f"{PREFIX}-").delete()


def seed_slurm(teams: int) -> float:
    started = time.monotonic()
    names = ",".join(team_name(t) for t in range(teams))
    sacctmgr("add", "account", names, "description=portal bench team", f"cluster={CLUSTER}")
    plan = reconcile_teams()
    # Parallel sacctmgr writes (other people's tests) were seen to lose writes: check, and repair once.
    if not reconcile_teams(dry_run=True).empty:
        print("  setup: a second pass was needed (a write was lost)")
        reconcile_teams()
    print(f"  setup: {len(plan.changes)} changes by the reconciler, {len(plan.failed)} refused")
    return time.monotonic() - started


def make_drift(teams: int, per_team: int, fraction: float, seed: int = 10) -> list[list[str]]:
    """sacctmgr commands (one per drifted object) that change what Slurm holds behind the portal."""
    rng = random.Random(seed)
    count = max(4, round((teams + teams * per_team) * fraction))
    kinds = ["assoc"] * round(count * 0.3) + ["limits"] * round(count * 0.3) + ["extra_coord"] * round(count * 0.2)
    kinds += ["missing_coord"] * (count - len(kinds))
    used_teams, used_users, commands = set(), set(), []
    for kind in kinds:
        t = rng.choice([x for x in range(teams) if x not in used_teams] or range(teams))
        used_teams.add(t)
        lead = t * per_team
        member = rng.choice([u for u in range(lead + 1, lead + per_team) if u not in used_users])
        used_users.add(member)
        if kind == "assoc":
            commands.append(["remove", "user", "where", f"name={user_name(member)}", f"account={team_name(t)}",
                             f"cluster={CLUSTER}"])
        elif kind == "limits":
            setting = rng.choice(["fairshare=3", "GrpTRES=gres/gpu=99", "GrpTRES=gres/gpu=-1"])
            commands.append(["modify", "account", "where", f"name={team_name(t)}", f"cluster={CLUSTER}", "set",
                             setting])
        elif kind == "extra_coord":
            commands.append(["add", "coordinator", f"account={team_name(t)}", f"names={user_name(member)}"])
        else:
            commands.append(["remove", "coordinator", f"account={team_name(t)}", f"names={user_name(lead)}"])
    return commands


# Another admin's sacctmgr writes, while the reconciler runs: the `ops` account's fair share
# flipped every EVERY seconds, and a reader listing associations as a monitoring script would.
OTHER_WRITER = """
import subprocess, sys, time
n, cli = 0, sys.argv[2:]
while True:
    n += 1
    subprocess.run([*cli, "sacctmgr", "-i", "modify", "account", "where", "name=ops", "set", f"fairshare={1 + n % 2}"],
                   capture_output=True)
    subprocess.run([*cli, "sacctmgr", "-nP", "show", "assoc", "where", "account=ops",
                    "format=account,user,fairshare"], capture_output=True)
    time.sleep(float(sys.argv[1]))
"""


def start_load(queued: int, every: float) -> subprocess.Popen:
    """Jobs held in the queue (slurmctld re-checks them against every association update it is
    sent) and another admin writing to slurmdbd; the writer is returned for stop_load."""
    for _ in range(queued):
        subprocess.run([*CLI, "sbatch", "--hold", "--account=root", "--partition=gpu", "--gres=gpu:1",
                        "--job-name=bench-load", "--output=/dev/null", "--wrap=true"], capture_output=True, check=False)
    held = subprocess.run([*CLI, "squeue", "-h", "-n", "bench-load", "-o", "%i"], capture_output=True, text=True,
                          check=False).stdout.split()
    print(f"  load: {len(held)} held jobs in the queue, another admin's sacctmgr write + read every {every:g} s",
          flush=True)
    return subprocess.Popen([sys.executable, "-c", OTHER_WRITER, str(every), *CLI], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop_load(writer: subprocess.Popen | None) -> None:
    if writer is not None:
        writer.terminate()
        writer.wait(10)
        sacctmgr("modify", "account", "where", "name=ops", "set", "fairshare=1")  # as cluster/ctl made it
    subprocess.run([*CLI, "scancel", "-n", "bench-load"], capture_output=True, check=False)


def apply_drift(commands: list[list[str]]) -> float:
    # One sacctmgr process reading the commands on stdin (sequential, like a person typing them).
    started = time.monotonic()
    sacctmgr(stdin="\n".join(" ".join(c) for c in commands) + "\nexit\n")
    return time.monotonic() - started


def timed_reconcile(*, batched: bool, wait_for_coordinators: bool = True) -> dict[str, float]:
    calls = Calls()
    gateway.cli = calls
    try:
        t0 = time.monotonic()
        want = desired_state()
        t1 = time.monotonic()
        actual = gateway.read_accounts_state(
            describe=want.retired,
            users=lambda: coordinators.current_users(wait_for_full_read=wait_for_coordinators))
        t2 = time.monotonic()
        plan = plan_changes(want, actual)
        t3 = time.monotonic()
        apply_plan(plan, batched=batched)
        t4 = time.monotonic()
    finally:
        gateway.cli = calls.real
    after = reconcile_teams(dry_run=True)
    return {"db": t1 - t0, "read": t2 - t1, "plan": t3 - t2, "apply": t4 - t3, "total": t4 - t0,
            "changes": len(plan.changes), "failed": len(plan.failed), "writes": calls.writes,
            "reads": calls.reads, "left": len(after.changes), "assocs": len(actual.associations)}


def synthetic_state(want, drift: list[list[str]]) -> tuple[str, str]:
    """sacctmgr's two outputs as Slurm would print them for `want` with `drift` applied: the
    plan and the parsing timed at full scale without writing 11,000 objects to a shared slurmdbd."""
    assocs = set(want.associations)
    coords = set(want.coordinators)
    limits = {a: (share, dict(tres)) for a, (share, tres) in want.limits.items()}
    for command in drift:
        words = dict(w.split("=", 1) for w in command if "=" in w)
        if command[:2] == ["remove", "user"]:
            assocs.discard((words["name"], words["account"]))
        elif command[:2] == ["add", "coordinator"]:
            coords.add((words["names"], words["account"]))
        elif command[:2] == ["remove", "coordinator"]:
            coords.discard((words["names"], words["account"]))
        elif "fairshare" in words:
            limits[words["name"]] = (words["fairshare"], limits[words["name"]][1])
        else:
            limits[words["name"]] = (limits[words["name"]][0], {} if words["GrpTRES"].endswith("-1") else
                                     {"gres/gpu": "99"})
    rows = [f"{a}||{share}|{','.join(f'{k}={v}' for k, v in tres.items())}" for a, (share, tres) in limits.items()]
    rows += [f"{a}|{u}|1|" for u, a in sorted(assocs)]
    users: dict[str, list[str]] = {}
    for u, _ in sorted(assocs):
        users.setdefault(u, [])
    for u, a in coords:
        users.setdefault(u, []).append(a)
    defaults = {u: a for u, a in sorted(assocs, reverse=True)}
    user_rows = [f"{u}|{defaults.get(u, '')}|{','.join(sorted(c))}" for u, c in users.items()]
    return "\n".join(rows) + "\n", "\n".join(user_rows) + "\n"


def plan_only(teams: int, per_team: int, fraction: float, runs: int) -> None:
    """Time the reconciler's pure-Python part at full scale: DB read, parsing sacctmgr's output
    and the plan, on a synthetic Slurm state (no sacctmgr call)."""
    drift = make_drift(teams, per_team, fraction)
    timings: dict[str, list[float]] = {"db": [], "parse": [], "plan": []}
    for _ in range(runs):
        t0 = time.monotonic()
        want = desired_state()
        t1 = time.monotonic()
        assoc_text, user_text = synthetic_state(want, drift)
        t2 = time.monotonic()
        actual = AccountsState(associations=tuple(parse.association_limits_from_sacctmgr(assoc_text)),
                               users=parse.users_from_sacctmgr(user_text))
        t3 = time.monotonic()
        plan = plan_changes(want, actual)
        t4 = time.monotonic()
        timings["db"].append(t1 - t0)
        timings["parse"].append(t3 - t2)
        timings["plan"].append(t4 - t3)
    batches = _batches(plan)
    kinds: dict[str, int] = {}
    for batch in batches:
        kinds[batch.changes[0].action] = kinds.get(batch.changes[0].action, 0) + 1
    print(f"\nplan only (synthetic Slurm state, {len(actual.associations)} associations, {len(drift)} drifted, "
          f"{len(plan.changes)} changes planned): {runs} runs; seconds")
    print(f"  the batched apply would make {len(batches)} sacctmgr writes for {len(plan.changes)} changes: "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print("| phase | p50 | p95 | max |\n|---|---|---|---|")
    for phase, values in timings.items():
        print(row(phase, values))


def cleanup(teams: int, per_team: int) -> None:
    # A second Ctrl-C (or one reaching sacctmgr, in the same process group) must not cut it short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if ROOT_DIR:
        started = time.monotonic()
        reset_root_cluster()
        print(f"cleanup: the {SUITE} mini cluster stopped, its accounting database dropped "
              f"({time.monotonic() - started:.1f} s; its next start makes it anew)")
        wipe_database()
        return
    if not SHARED:
        started = time.monotonic()
        scratch_accounting.stop()
        print(f"cleanup: scratch slurmdbd and slurmctld stopped, their database dropped "
              f"({time.monotonic() - started:.1f} s)")
        wipe_database()
        return
    users = ",".join(user_name(i) for i in range(teams * per_team))
    sacctmgr("remove", "user", "where", f"name={users}", f"cluster={CLUSTER}")
    sacctmgr("remove", "account", "where", f"name={','.join(team_name(t) for t in range(teams))}")
    left = subprocess.run(["sacctmgr", "-nP", "show", "assoc", "format=account,user"], capture_output=True,
                          text=True, check=False).stdout
    stray = [line for line in left.splitlines() if line.startswith(f"{PREFIX}-") or f"|{PREFIX}u" in line]
    print(f"cleanup: bench accounts and users removed from Slurm ({len(stray)} associations left)")
    wipe_database()


def reset_root_cluster() -> None:
    subprocess.run([sys.executable, str(ROOT / "cluster/rootcluster.py"), "reset", SUITE], check=True,
                   capture_output=True)


def fresh_root_accounting() -> None:
    """The mini cluster restarted on an empty accounting database (rootcluster registers its
    accounts again): the bench's 11,000 objects are then removed with one DROP DATABASE."""
    reset_root_cluster()
    cluster_env(SUITE)
    print(f"  {SUITE} mini cluster ({RELEASE}) restarted on an empty accounting database", flush=True)


def row(label: str, values: list[float]) -> str:
    return (f"| {label} | {percentile(values, 50):.2f} | {percentile(values, 95):.2f} | {max(values):.2f} |")


def report(kind: str, results: list[dict[str, float]]) -> None:
    print(f"\n{kind}: {len(results)} runs; seconds")
    print("| phase | p50 | p95 | max |\n|---|---|---|---|")
    for phase in ("db", "read", "plan", "apply", "total"):
        print(row(phase, [r[phase] for r in results]))
    for i, r in enumerate(results, 1):
        phases = ("db", "read", "plan", "apply", "total")
        print(f"  run {i}: " + ", ".join(f"{phase} {r[phase]:.2f}" for phase in phases))
        print(f"  changes {r['changes']:.0f}, sacctmgr writes {r['writes']:.0f} (reads {r['reads']:.0f}), "
              f"refused {r['failed']:.0f}, left for a second run {r['left']:.0f}, associations read {r['assocs']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--users-per-team", type=int, default=10)
    parser.add_argument("--drift", type=float, default=0.01, help="fraction of objects drifted by hand")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--on", choices=SUITES, default="host",
                        help="host: a scratch slurmdbd of the host's Slurm (default); trixie|sid: the slurmdbd of "
                             "that suite's mini cluster (24.11 / 26.05), its database dropped before and after")
    parser.add_argument("--shared-slurmdbd", action="store_true",
                        help="write to the local cluster's slurmdbd, not a scratch one (small sizes only)")
    parser.add_argument("--queued", type=int, default=200,
                        help="held jobs in the queue while it runs (with another admin's writes); 0: no load")
    parser.add_argument("--other-writes-every", type=float, default=2.0, metavar="S",
                        help="seconds between the other admin's sacctmgr writes (with --queued > 0)")
    parser.add_argument("--plan-only", action="store_true",
                        help="no Slurm writes: time the DB read, parsing and plan on a synthetic Slurm state")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    teams, per_team = args.teams, args.users_per_team
    print(f"reconcile scale: {teams} teams, {teams * per_team} users, drift {args.drift:.1%}; {machine()}")
    print("settings changed by this bench: loopback quickack off for one reconcile per run, where it was on "
          "(bench accounts bsc-*, users bscu*, removed at the end); Slurm: "
          + (f"the {SUITE} mini cluster ({RELEASE}), its accounting database made anew" if ROOT_DIR else
             "the local cluster's slurmdbd" if SHARED else "a scratch slurmdbd + slurmctld on the local config"))
    seed_database(teams, per_team)
    if args.plan_only:
        try:
            plan_only(teams, per_team, args.drift, args.runs)
        finally:
            wipe_database()
        return
    batched, baseline, slow_acks = measure(args, quickack=loopback_quickack())
    if batched:
        report("batched apply (the portal's reconciler)", batched)
        report("baseline: the same plan, one sacctmgr call per change", baseline)
    if slow_acks:
        report("setting changed: loopback quickack off (batched, as the portal)", slow_acks)


def measure(args: argparse.Namespace, *, quickack: bool) -> tuple[list, list, list]:
    """Seed Slurm, start the load, then the drifted reconciles; everything undone at the end."""
    teams, per_team = args.teams, args.users_per_team
    batched, baseline, slow_acks = [], [], []
    print(f"  loopback quickack: {'on (as cluster/ctl up sets it)' if quickack else 'off'}")
    writer = None
    try:
        if ROOT_DIR:
            fresh_root_accounting()
        elif not SHARED:
            scratch_accounting.start()
        # A copy an earlier run kept (same cluster name, a database since dropped) is not this one's.
        coordinators.forget()
        print(f"  setup: {seed_slurm(teams):.1f} s to create {teams} accounts and {teams * per_team} associations")
        if args.queued:
            writer = start_load(args.queued, args.other_writes_every)
        drift = make_drift(teams, per_team, args.drift)
        print(f"  drift: {len(drift)} objects changed by hand per run")
        for run in range(args.runs):
            # Run 1 comes straight after the setup's writes (slurmdbd and slurmctld still busy with
            # them, the held jobs just queued); later runs show the steady state.
            print(f"  run {run + 1}: drift applied in {apply_drift(drift):.1f} s", flush=True)
            batched.append(timed_reconcile(batched=True))
            apply_drift(drift)
            baseline.append(timed_reconcile(batched=False))
            print(f"    batched {batched[-1]['total']:.2f} s ({batched[-1]['writes']} writes), "
                  f"one call per change {baseline[-1]['total']:.2f} s ({baseline[-1]['writes']} writes)", flush=True)
            if quickack:
                slow_acks.append(_without_quickack(drift))
                print(f"    batched with quickack off {slow_acks[-1]['total']:.2f} s", flush=True)
        background_and_cold(drift)
    except Exception:
        # Before the cleanup, which can take long at full scale: the error must not wait for it.
        traceback.print_exc()
        sys.stdout.flush()
        raise
    finally:
        stop_load(writer)
        if quickack and not loopback_quickack():
            set_loopback_quickack(True)
        cleanup(teams, per_team)
    return batched, baseline, slow_acks


def background_and_cold(drift: list[list[str]]) -> None:
    """What the runs above leave out: beat's full coordinator read (refresh_coordinators_task,
    every 10 min, off the reconcile path), and cold runs (no copy of the coordinators, as after
    the cache was lost): the worker's way (coordinators left to a full read it asks for, then
    the next run) and the command line's (it reads them all first)."""
    # The bench runs the full read itself; nothing may go to a worker of the local cluster.
    coordinators.hand_off = lambda *_: True
    for i in range(2):
        print(f"  beat's full coordinator read {i + 1}: {timed_refresh()}", flush=True)
    apply_drift(drift)
    coordinators.forget()
    show_cold("cold run, the worker's way (coordinators left for the full read)", timed_reconcile(
        batched=True, wait_for_coordinators=False))
    print(f"    then the full read it asked for: {timed_refresh()}", flush=True)
    show_cold("    then the next run (the coordinator changes)", timed_reconcile(batched=True))
    apply_drift(drift)
    coordinators.forget()
    show_cold("cold run, the command line's way (reads every coordinator first)", timed_reconcile(batched=True))


def timed_refresh() -> str:
    started = time.monotonic()
    result = coordinators.refresh()
    return f"{time.monotonic() - started:.2f} s ({result['users']} users, {result['missed']} the copy had wrong)"


def show_cold(label: str, run: dict[str, float]) -> None:
    print(f"  {label}: {run['total']:.2f} s (read {run['read']:.2f} s, apply {run['apply']:.2f} s, "
          f"{run['changes']} changes in {run['writes']} writes, left for a second run {run['left']})", flush=True)


def _without_quickack(drift: list[list[str]]) -> dict[str, float]:
    apply_drift(drift)
    set_loopback_quickack(False)
    try:
        return timed_reconcile(batched=True)
    finally:
        set_loopback_quickack(True)


if __name__ == "__main__":
    main()

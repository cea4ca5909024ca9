"""Node health sensor cost and fault-to-drain latency on the local cluster (target: <= 300 ms a run).

1. N runs of slurm_plugins/healthcheck as slurmd runs it (root, bare environment, a healthy
   emulated node), with the portal down (a closed port: the report is spooled) and up (a real
   gunicorn portal on a bench database: the report is signed, sent and stored).
2. The same for the prolog with the portal up: what it adds to every job's start.
3. Fault -> DRAIN through the cluster's own HealthCheckProgram: `./cluster/ctl fault gpu08
   --xid 48`, then poll sinfo until Slurm shows gpu08 drained (with the portal down, the
   sensor drains; with it up, that is the portal policy's job and this part is skipped).

    .venv/bin/python bench/sensor.py [--runs 200] [--drains 10]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import ROOT, ensure_database, free_port, gunicorn, machine, percentile, summary_ms

from slurm_plugins import emulated, report
from slurm_plugins.config import load

DB = "portal_bench_health"
NODE = "gpu08"
CTL = str(ROOT / "cluster/ctl")
CLUSTER_CONF = ROOT / "cluster/state/etc/health.conf"


def write_conf(tmp: Path, portal_url: str) -> Path:
    gpu_dir = tmp / "gpu"
    gpu_dir.mkdir(parents=True, exist_ok=True)
    emulated.write_state(str(gpu_dir), NODE, emulated.healthy_state(NODE, 4))
    conf = tmp / f"health-{abs(hash(portal_url))}.conf"
    conf.write_text(f"[portal]\nurl = {portal_url}\ntimeout = 0.5\n"
                    f"key_file = {ROOT}/cluster/state/nodes/%n/health.key\n"
                    f"[sensor]\nstate_dir = {tmp}/nodes/%n\n[gpu]\nemulated_state_dir = {gpu_dir}\n"
                    "[expected_gpus]\ndefault = 4\n")
    return conf


def time_runs(hook: str, conf: Path, runs: int, env: dict | None = None) -> tuple[list[float], float]:
    """Wall time of each run, and CPU seconds (user + system) per run."""
    environ = {"SLURMD_NODENAME": NODE, "PORTAL_HEALTH_CONF": str(conf), **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run([str(ROOT / "slurm_plugins" / hook)], env=environ, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{hook} failed ({proc.returncode}): {proc.stderr.decode()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs
    return times, cpu


def show(label: str, times: list[float], cpu: float) -> None:
    verdict = "OK" if percentile(times, 95) <= 0.300 else "OVER the 300 ms target"
    print(f"  {label:<34} {summary_ms(times)}  cpu={cpu * 1000:.1f} ms/run  "
          f"[{verdict}]")


def slurm_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True,
                          check=False).stdout.strip()


def resume(node: str) -> None:
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, check=False)


def fault_to_drain(trials: int) -> list[float] | None:
    config = load({"SLURMD_NODENAME": NODE}, str(CLUSTER_CONF))
    outcome, _ = report.post(config.portal_url, NODE, report.Envelope({}), b"x", 0.5)
    if outcome != report.UNREACHABLE:
        print(f"  skipped: the portal at {config.portal_url} is up, so its policy drains (not the sensor)")
        return None
    latencies = []
    for _ in range(trials):
        subprocess.run([CTL, "heal", NODE], capture_output=True, check=True)
        resume(NODE)
        deadline = time.monotonic() + 30
        while "drain" in slurm_state(NODE) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Faults land at a random point of the health check cycle, as real ones do.
        time.sleep(1.0 + random.uniform(0, health_interval()))
        started = time.monotonic()
        subprocess.run([CTL, "fault", NODE, "--xid", "48", "--gpu", "1"], capture_output=True, check=True)
        while "drain" not in slurm_state(NODE):
            if time.monotonic() - started > 30:
                raise SystemExit(f"{NODE} was not drained within 30 s")
            time.sleep(0.05)
        latencies.append(time.monotonic() - started)
    subprocess.run([CTL, "heal", NODE], capture_output=True, check=True)
    resume(NODE)
    return latencies


def health_interval() -> int:
    conf = (ROOT / "cluster/state/etc/slurm.conf").read_text()
    return next((int(line.split("=", 1)[1]) for line in conf.splitlines()
                 if line.startswith("HealthCheckInterval=")), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--drains", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"sensor runs ({args.runs} each, healthy emulated {NODE}, 4 GPUs):")
    with tempfile.TemporaryDirectory() as tmp:
        down = write_conf(Path(tmp) / "down", f"http://127.0.0.1:{free_port()}")
        times, cpu_down = time_runs("healthcheck", down, args.runs)
        show("healthcheck, portal down (spool)", times, cpu_down)
        env = ensure_database(DB)
        with gunicorn(env) as base:   # the shipped web settings (2 x cores + 1 single-threaded workers)
            up = write_conf(Path(tmp) / "up", base)
            time_runs("healthcheck", up, 10)    # warm the portal up (first requests connect to DB and broker)
            times, cpu_up = time_runs("healthcheck", up, args.runs)
            show("healthcheck, portal up", times, cpu_up)
            show("prolog, portal up", *time_runs("prolog", up, args.runs, {"SLURM_JOB_ID": "1",
                                                                            "SLURM_JOB_GPUS": "0,1"}))
    interval = health_interval()
    if interval:
        for label, cpu in (("portal down", cpu_down), ("portal up", cpu_up)):
            print(f"health checks on this cluster, {label}: 10 nodes every {interval} s x {cpu * 1000:.0f} ms "
                  f"CPU = {10 * cpu / interval * 100:.1f}% of one core")
    print(f"fault -> DRAIN through the cluster's own health check ({args.drains} trials, "
          f"HealthCheckInterval={interval}):")
    latencies = fault_to_drain(args.drains)
    if latencies:
        verdict = "OK" if percentile(latencies, 95) <= 5.0 else "OVER the 5 s target"
        print(f"  p50={percentile(latencies, 50):.2f} s  p95={percentile(latencies, 95):.2f} s  "
              f"max={max(latencies):.2f} s  [{verdict}]")


if __name__ == "__main__":
    main()

"""The numbers and words on a finished job's page match what Slurm measured.

Real jobs on the shared cluster, real tracker cycles, and the page read through Django's
test client; each figure is compared with `sacct` itself.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from portal.jobs.models import Job
from portal.slurm import gateway
from portal.slurm.parse import memory_mb
from tests.conftest import wait_until
from tests.jobs.test_tracking import cycle_until, fresh_tracker, portal_job, sbatch, slurm_jobs, vision  # noqa: F401
from tests.jobs.views_support import client_for, submit

pytestmark = [pytest.mark.usefixtures("slurm_accounts", "fresh_tracker"), pytest.mark.django_db, pytest.mark.slow]

# Busy for 3 s holding 200 MB; sampled every second so sacct has its MaxRSS.
BURN = "python3 -c 'a = bytearray(200 << 20)\nimport time\nt = time.time()\nwhile time.time() - t < 3: pass'"


def _sacct(slurm_id: int) -> list[dict[str, str]]:
    # -S: job ids restart when a checkout's cluster is made anew, and slurmdbd keeps every
    # earlier cluster's jobs; only this test's few minutes hold the job it submitted.
    out = subprocess.run(["sacct", "-a", "-n", "-P", "-D", "-S", "now-5minutes", "-j", str(slurm_id), "-o",
                          "JobIDRaw,TotalCPU,CPUTimeRAW,MaxRSS,ReqMem,NodeList,ElapsedRaw"],
                         check=True, capture_output=True, text=True).stdout
    keys = ("id", "total_cpu", "cpu_raw", "max_rss", "req_mem", "nodes", "elapsed")
    return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines()]


def _seconds(total_cpu: str) -> float:
    """sacct's TotalCPU, [D-][HH:]MM:SS[.mmm]: a short job's reads 00:03.012 or 00:00:03."""
    days, _, rest = total_cpu.rpartition("-")
    hours, minutes, seconds = ([0.0, 0.0] + [float(part) for part in rest.split(":")])[-3:]
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def _kib(max_rss: str) -> float:
    """sacct's MaxRSS in KiB: it prints a whole number of a larger unit that way (3072K is "3M")."""
    scale = {"K": 1, "M": 1024, "G": 1024 ** 2}
    return float(max_rss[:-1]) * scale[max_rss[-1]] if max_rss[-1] in scale else float(max_rss) / 1024


def _seff(slurm_id: int) -> tuple[str, str]:
    """CPU and memory efficiency as seff computes them, from sacct's own fields ("" if never sampled)."""
    # slurmdbd can lag: wait until it holds the job's own row with its requested memory (a CI
    # run once read ReqMem as nothing there and divided by zero).
    rows = wait_until(lambda: (found := _sacct(slurm_id)) and found[0]["id"] == str(slurm_id)
                      and memory_mb(found[0]["req_mem"]) and found, timeout=30, what=f"sacct's row of job {slurm_id}")
    job = rows[0]
    cpu = 100 * _seconds(job["total_cpu"]) / int(job["cpu_raw"])
    rss_kb = max((_kib(r["max_rss"]) for r in rows if r["max_rss"]), default=None)
    if rss_kb is None:
        return f"{cpu:.2f}%", ""
    return f"{cpu:.2f}%", f"{100 * (rss_kb / 1024) / memory_mb(job['req_mem']):.2f}%"


def _accounted(slurm_id: int) -> Job:
    return cycle_until(lambda: (job := Job.objects.filter(slurm_job_id=slurm_id, accounted=True).first()) and job,
                       what=f"sacct's figures for job {slurm_id}", timeout=120)


def _fact(html: str, label: str) -> str:
    match = re.search(rf"<dt>{re.escape(label)}</dt><dd>([^<]*)</dd>", html)
    assert match, f"{label!r} not on the page"
    return match.group(1)


def test_cpu_and_memory_use_and_efficiency_match_sacct(alice, vision, unique, slurm_jobs):  # noqa: F811
    # The cpu partition: other people fault GPU nodes on this shared cluster.
    sampled = ("-p", "cpu", "--acctg-freq=1", "--mem=500M")
    burner = sbatch("alice", "vision", f"fig-burn-{unique}", *sampled, wrap=BURN)
    sleeper = sbatch("alice", "vision", f"fig-sleep-{unique}", *sampled, wrap="sleep 3")
    slurm_jobs.extend([burner, sleeper])
    client = client_for(alice)

    pages = {sid: client.get(f"/jobs/{_accounted(sid).pk}/").content.decode() for sid in (burner, sleeper)}

    for sid, html in pages.items():
        cpu_eff, mem_eff = _seff(sid)
        job = _sacct(sid)[0]
        assert _fact(html, "CPU efficiency") == cpu_eff
        assert _fact(html, "Memory efficiency").startswith(f"{mem_eff} of 500.0" if mem_eff else "not measured")
        assert _fact(html, "CPU time used") == f"{_seconds(job['total_cpu']):.3g} s"
        assert _fact(html, "CPU time allocated").startswith(f"{int(job['cpu_raw'])}s (1 CPU")
    assert float(_seff(burner)[0].rstrip("%")) > 50    # busy the whole time
    assert float(_seff(sleeper)[0].rstrip("%")) < 5    # asleep: allocated, hardly used
    assert float(_seff(burner)[1].rstrip("%")) > 30    # 200 MB of the 500 MB asked for


def test_a_timed_out_job_says_so_alike_in_header_and_timeline(alice, vision, unique, slurm_jobs):  # noqa: F811
    # OverTimeLimit is 0 here and slurmctld checks limits every 30 s: it ends within about 90 s.
    job = submit(alice, name=f"fig-timeout-{unique}", script="#!/bin/bash\nsleep 300\n", time_limit_min=1)
    slurm_jobs.append(job.slurm_job_id)
    done = _accounted(job.slurm_job_id)

    html = client_for(alice).get(f"/jobs/{done.pk}/").content.decode()
    header = html[html.index('id="job-status"'):html.index("Timeline")]
    timeline = html[html.index('class="timeline"'):]
    assert done.state == "TIMEOUT"
    assert "timed out after 1 min (killed by SIGTERM)" in header
    assert "timed out after 1 min (killed by SIGTERM)" in timeline
    assert "exit code 0" not in html and _fact(html, "Exit code") == "143"


def test_a_job_cancelled_after_a_requeue_shows_where_and_how_long_it_ran(alice, vision, unique, slurm_jobs):  # noqa: F811
    job = portal_job(alice, unique, "#!/bin/bash\nsleep 300\n")
    slurm_jobs.append(job.slurm_job_id)
    cycle_until(lambda: Job.objects.get(pk=job.pk).state == "RUNNING", what="the job to run")
    time.sleep(2)  # long enough for sacct to count the run
    gateway.requeue_job("alice", job.slurm_job_id)
    cycle_until(lambda: Job.objects.get(pk=job.pk).state == "PENDING", what="the job to wait again")
    gateway.cancel_job("alice", job.slurm_job_id)
    done = _accounted(job.slurm_job_id)

    ran = next(r for r in _sacct(job.slurm_job_id) if r["nodes"] != "None assigned" and "." not in r["id"])
    html = client_for(alice).get(f"/jobs/{done.pk}/").content.decode()
    assert done.state == "CANCELLED" and done.restart_count == 1
    assert "not placed yet" not in html
    assert f'>{ran["nodes"]}</a></dd>' in html   # the node, linked to its page
    assert _fact(html, "Elapsed") == f"{int(ran['elapsed'])}s" and int(ran["elapsed"]) > 0

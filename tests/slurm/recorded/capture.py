"""Record real slurmrestd answers, with `scontrol show job` facts for the same jobs, for the
parser tests in tests/slurm/test_rest_versions.py. Not a test; run by hand against a cluster:

    .venv/bin/python -m tests.slurm.recorded.capture openapi --url URL --key JWT_KEY --out NAME
        GET /openapi/v3 only (safe on a shared cluster): saved as openapi/NAME.json, reduced to
        the document's openapi/info fields and its paths with their methods.
    .venv/bin/python -m tests.slurm.recorded.capture jobs --url URL --key JWT_KEY --root ROOT
        submits small jobs as alice through every API version the daemon serves that the
        portal speaks (v0.0.40+), and records for each version under v0.0.4x/: the request
        bodies the portal sent, the answers, GET job/nodes/partitions, and `scontrol show job
        -o` from the root for the same jobs. Only for a cluster of your own (cluster/rootcluster.py):
        it drains and resumes a node.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import httpx
import jwt

from portal.slurm import rest_versions
from portal.slurm.types import JobSpec

HERE = Path(__file__).resolve().parent
USER = "alice"


def token(key_file: str, user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sun": user, "iat": now, "exp": now + 600}, Path(key_file).read_bytes(), algorithm="HS256")


def client(url: str, key_file: str, user: str = USER) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30,
                        headers={"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token(key_file, user)})


def out_dir(version: str) -> Path:
    """recorded/<API version>/<Slurm release>/: one API version is served by several releases."""
    return HERE / version / RELEASE["name"]


RELEASE = {"name": "unknown"}


def save(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"saved {path.relative_to(HERE)}")


def cmd_openapi(args: argparse.Namespace) -> None:
    with client(args.url, args.key) as http:
        resp = http.get("/openapi/v3")
    resp.raise_for_status()
    doc = resp.json()
    reduced = {"openapi": doc.get("openapi"), "info": doc.get("info"),
               "paths": {path: sorted(ops) for path, ops in doc["paths"].items()}}
    save(HERE / "openapi" / f"{args.out}.json", reduced)
    print("versions:", rest_versions.listed_versions(doc))


def in_root(root: str, *args: str) -> str:
    return subprocess.run(["chroot", root, *args], capture_output=True, text=True, check=True).stdout


def specs(version: str) -> dict[str, JobSpec]:
    base = {"account": "vision", "working_dir": "/tmp", "time_limit_min": 5}
    tag = version.replace(".", "")
    return {
        "running": JobSpec(name=f"rec-{tag}-running", script="#!/bin/bash\nsleep 300\n", gpus_per_node=1,
                           gpu_type="h100", mem_mb=1024, cpus_per_task=2, comment=f"rec-{tag}-running",
                           stdout="/tmp/rec-%j.out", environment={"REC": "1"}, **base),
        "held": JobSpec(name=f"rec-{tag}-held", script="#!/bin/bash\nsleep 300\n", hold=True, requeue=False,
                        nodes=2, comment=f"rec-{tag}-held", **base),
        "exit3": JobSpec(name=f"rec-{tag}-exit3", script="#!/bin/bash\nexit 3\n", **base),
        "killed": JobSpec(name=f"rec-{tag}-killed", script="#!/bin/bash\nkill -9 $$\n", **base),
    }


def wait_job(http: httpx.Client, prefix: str, job_id: int, states: set[str]) -> dict:
    for _ in range(100):
        job = http.get(f"{prefix}/job/{job_id}").json()["jobs"][0]
        if set(job["job_state"]) & states:
            return job
        time.sleep(0.2)
    raise SystemExit(f"job {job_id} never reached {states}")


def capture_version(http: httpx.Client, root: str, version: str) -> None:
    api = rest_versions.for_version(version)
    out = out_dir(version)
    ids = {}
    for name, spec in specs(version).items():
        body = api.submit_body(spec)
        resp = http.post(f"{api.prefix}/job/submit", json=body)
        save(out / f"submit_{name}.json", {"request": body, "status": resp.status_code, "response": resp.json()})
        ids[name] = resp.json()["job_id"]
    wait_job(http, api.prefix, ids["running"], {"RUNNING"})
    for name in ("exit3", "killed"):
        wait_job(http, api.prefix, ids[name], {"COMPLETED", "FAILED", "CANCELLED"})
    record_jobs(http, root, api.prefix, ids, out=out, stem="job")
    # hold/release of the held one (a release then a hold again leaves it held) and a cancel.
    for step, hold in (("release", False), ("hold", True)):
        resp = http.post(f"{api.prefix}/job/{ids['held']}", json=api.hold_body(hold))
        save(out / f"update_{step}.json", {"request": api.hold_body(hold), "status": resp.status_code,
                                           "response": resp.json()})
    record_jobs(http, root, api.prefix, {"held_again": ids["held"]}, out=out, stem="job")
    for step, job_id in (("cancel_running", ids["running"]), ("cancel_finished", ids["exit3"])):
        resp = http.delete(f"{api.prefix}/job/{job_id}")
        save(out / f"{step}.json", {"status": resp.status_code, "response": resp.json()})
    record_fleet(http, root, api, out)


def record_jobs(http: httpx.Client, root: str, prefix: str, ids: dict, *, out: Path, stem: str) -> None:
    for name, job_id in ids.items():
        resp = http.get(f"{prefix}/job/{job_id}")
        facts = in_root(root, "scontrol", "show", "job", "-o", str(job_id)).strip()
        save(out / f"{stem}_{name}.json", {"job_id": job_id, "status": resp.status_code, "response": resp.json(),
                                             "scontrol_show_job": facts})


def record_fleet(http: httpx.Client, root: str, api: rest_versions.RestApi, out: Path) -> None:
    in_root(root, "scontrol", "update", "nodename=gpu02", "state=drain", "reason=recorded drain")
    for name, path in (("nodes", "/nodes"), ("partitions", "/partitions"), ("node_gpu01", "/node/gpu01"),
                       ("ping", "/ping")):
        resp = http.get(api.prefix + path)
        save(out / f"{name}.json", {"status": resp.status_code, "response": resp.json(),
                                    "sinfo": in_root(root, "sinfo", "-h", "-N", "-o", "%N|%t|%T|%E|%G|%c|%C"),
                                    "scontrol_show_partition": in_root(root, "scontrol", "show", "partition", "-o")})
    in_root(root, "scontrol", "update", "nodename=gpu02", "state=resume")
    now = int(time.time()) + 1
    time.sleep(1.5)
    resp = http.get(f"{api.prefix}/jobs", params={"update_time": now})
    save(out / "jobs_update_time_quiet.json", {"update_time": now, "status": resp.status_code,
                                              "response": resp.json() if resp.content else None})


def cmd_errors(args: argparse.Namespace) -> None:
    """Refusals: an unknown job, and bob acting on alice's held job (`--job`), per version.

    bob's cancel of alice's job runs last and once: on 24.11.5 it leaves slurmctld unable to
    answer job reads (recorded as `squeue_after`); restart the mini cluster afterwards.
    """
    with client(args.url, args.key) as alice, client(args.url, args.key, "bob") as bob:
        listed = [v for v in rest_versions.listed_versions(alice.get("/openapi/v3").json())
                  if v in rest_versions.SUPPORTED]
        for version in listed:
            api = rest_versions.for_version(version)
            calls = {"get_unknown": (alice, "GET", "/job/999999", None),
                     "hold_unknown": (alice, "POST", "/job/999999", api.hold_body(True)),
                     "cancel_unknown": (alice, "DELETE", "/job/999999", None),
                     "release_foreign": (bob, "POST", f"/job/{args.job}", api.hold_body(False))}
            for name, call in calls.items():
                record_call(args.root, version, name, *call)
        record_call(args.root, listed[-1], "cancel_foreign", bob, "DELETE", f"/job/{args.job}", None)


def record_call(root: str, version: str, name: str, *call: object) -> None:
    http, method, path, body = call
    assert isinstance(http, httpx.Client)
    resp = http.request(str(method), f"/slurm/{version}{path}", json=body)
    after = subprocess.run(["timeout", "10", "chroot", root, "squeue", "-h", "-o", "%i %T %r"],
                           capture_output=True, text=True, check=False)
    save(out_dir(version) / f"error_{name}.json",
         {"method": method, "path": path, "request": body, "status": resp.status_code,
          "response": resp.json() if resp.content else None,
          "squeue_after": after.stdout if after.returncode == 0 else f"squeue failed: exit {after.returncode}"})


def cmd_reads(args: argparse.Namespace) -> None:
    """GETs only (safe on a shared cluster): one job, nodes and partitions, with the facts from
    the cluster's own scontrol (`--scontrol`, a command line, e.g. "chroot ROOT scontrol")."""
    scontrol = args.scontrol.split()
    prefix = f"/slurm/{args.version}"
    with client(args.url, args.key) as http:
        for name, path in (("job_read", f"/job/{args.job}"), ("nodes_read", "/nodes"),
                           ("partitions_read", "/partitions")):
            resp = http.get(prefix + path)
            facts = {"scontrol_show_job": subprocess.run([*scontrol, "show", "job", "-o", str(args.job)],
                                                         capture_output=True, text=True, check=True).stdout.strip()}
            if name != "job_read":
                facts = {"scontrol_show_node": subprocess.run([*scontrol, "show", "node", "-o"], capture_output=True,
                                                              text=True, check=True).stdout,
                         "scontrol_show_partition": subprocess.run([*scontrol, "show", "partition", "-o"],
                                                                   capture_output=True, text=True, check=True).stdout}
            save(out_dir(args.version) / f"{name}.json", {"status": resp.status_code, "response": resp.json(), **facts})


def cmd_jobs(args: argparse.Namespace) -> None:
    with client(args.url, args.key) as http:
        listed = rest_versions.listed_versions(http.get("/openapi/v3").json())
        for version in listed:
            if version in rest_versions.SUPPORTED and version != "v0.0.38":
                capture_version(http, args.root, version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("openapi")
    one.add_argument("--url", required=True)
    one.add_argument("--key", required=True)
    one.add_argument("--out", required=True)
    two = sub.add_parser("jobs")
    two.add_argument("--url", required=True)
    two.add_argument("--key", required=True)
    two.add_argument("--root", required=True)
    three = sub.add_parser("errors")
    three.add_argument("--url", required=True)
    three.add_argument("--key", required=True)
    three.add_argument("--job", required=True, type=int)
    three.add_argument("--root", required=True)
    four = sub.add_parser("reads")
    four.add_argument("--url", required=True)
    four.add_argument("--key", required=True)
    four.add_argument("--job", required=True, type=int)
    four.add_argument("--version", required=True)
    four.add_argument("--scontrol", default="scontrol")
    parser.add_argument("--release", default="unknown", help="the Slurm release, e.g. 24.11: names the subdirectory")
    args = parser.parse_args()
    RELEASE["name"] = args.release
    {"openapi": cmd_openapi, "jobs": cmd_jobs, "errors": cmd_errors, "reads": cmd_reads}[args.cmd](args)


if __name__ == "__main__":
    main()

"""The Compose stack end to end, through the containerised portal's API (`make test-docker`).

`make test-docker` builds the images and starts the stack first (docker/stack.py up); these
tests then drive it only as its users would: HTTP to the proxy on 127.0.0.1:18080, and for the
Slurm side what the stack's own slurmctld holds (`scontrol` in its container). Nothing is
mocked: the jobs run on the containerised slurmd nodes, the GPUs are the emulated backend.
Run with pytest -p no:django: these tests import nothing of the portal.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))
import stack  # noqa: E402 - docker/stack.py, the stack's own control script

from tests.polling import wait_until  # noqa: E402 - the suite's, free of Django

PORTAL = "http://127.0.0.1:18080"
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def in_service(service: str, *cmd: str, user: str | None = None, check: bool = True) -> str:
    args = ["exec", "-T", *(["--user", user] if user else []), service, *cmd]
    proc = stack.compose(*args, check=False, capture=True)
    if check and proc.returncode != 0:
        pytest.fail(f"{service}: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def manage(*args: str) -> str:
    return in_service("web", "python3", "manage.py", *args, user="portal")


def scontrol(kind: str, name: str) -> dict[str, str]:
    """What the stack's slurmctld holds, as key=value pairs (`scontrol show -o`)."""
    out = in_service("slurmctld", "scontrol", "show", "-o", kind, str(name))
    return dict(re.findall(r"(\w+(?::\w+)?)=(\S*)", out))


@pytest.fixture(scope="module")
def seeded() -> None:
    """The demo logins and teams in the containerised portal, mirrored into its Slurm."""
    manage("seed_demo")


def client_for(user: str) -> httpx.Client:
    token = manage("issue_token", user, "--name", f"docker-test-{uuid.uuid4().hex[:6]}").strip()
    return httpx.Client(base_url=PORTAL, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def alice(seeded) -> httpx.Client:
    return client_for("alice")


@pytest.fixture(scope="module")
def admin(seeded) -> httpx.Client:
    return client_for("admin")


def job_state(client: httpx.Client, job_id: int) -> dict:
    resp = client.get(f"/api/v1/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def submit(client: httpx.Client, script: str, **fields) -> dict:
    body = {"name": f"docker-{uuid.uuid4().hex[:6]}", "team": "vision", "script": script,
            "cpus_per_task": 1, "time_limit_min": 5, **fields}
    resp = client.post("/api/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


# ---------------------------------------------------------------- the stack itself

def test_every_service_is_up_and_healthy():
    states = stack.service_states()
    assert set(states) == {"postgres", "redis", "mariadb", "slurmdbd", "slurm-init", "slurmctld", "dgpu01",
                           "dgpu02", "slurmrestd", "migrate", "web", "worker", "beat", "proxy"}
    assert stack.all_ready(states), states


def test_no_container_has_an_address_in_a_private_range():
    for container in stack.containers():
        assert container["HostConfig"]["NetworkMode"] == "host", container["Name"]
        for net in container["NetworkSettings"]["Networks"].values():
            if net.get("IPAddress"):
                assert not any(ipaddress.ip_address(net["IPAddress"]) in p for p in PRIVATE), container["Name"]
    networks = stack.docker("network", "ls", "--format", "{{.Driver}}", capture=True).stdout.split()
    assert "bridge" not in networks


def test_the_proxy_serves_the_pages_with_their_static_files_and_htmx():
    login = httpx.get(f"{PORTAL}/accounts/login/", timeout=10)
    assert login.status_code == 200
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', login.text)
    htmx = [a for a in assets if "htmx" in a]
    assert htmx, "the login page links no htmx"
    for asset in assets:
        resp = httpx.get(f"{PORTAL}{asset}", timeout=10)
        assert resp.status_code == 200, asset
    assert "htmx" in httpx.get(f"{PORTAL}{htmx[0]}", timeout=10).text[:2000]


def test_secrets_are_mounted_not_baked_into_an_image():
    for image in stack.IMAGES:
        tag = f"{stack.PREFIX}-{image}:latest"
        files = stack.docker("run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c",
                             "ls /run/secrets /run/stack /etc/munge/munge.key 2>/dev/null; true",
                             capture=True).stdout
        assert files.strip() == "", f"{tag} holds {files!r}"


# ---------------------------------------------------------------- through the portal

def test_alice_submits_a_job_that_runs_as_alice_on_a_containerised_node(alice):
    job = submit(alice, "#!/bin/bash\necho \"user=$(id -un) node=$SLURMD_NODENAME\"\n", gpus_per_node=1)
    final = wait_until(lambda: (s := job_state(alice, job["id"]))["state"] in
                       {"COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT"} and s,
                       timeout=120, what="the job to end")
    assert final["state"] == "COMPLETED", final
    held = scontrol("job", final["slurm_job_id"])
    assert held["UserId"].startswith("alice("), held["UserId"]
    assert held["Account"] == "vision"
    assert held["NodeList"] in {"dgpu01", "dgpu02"}
    assert "gres/gpu=1" in (held.get("AllocTRES") or held["TRES"]).split(","), held  # 22.05 says TRES=
    out = alice.get(f"/api/v1/jobs/{job['id']}/output", params={"stream": "stdout"})
    assert out.status_code == 200, out.text
    assert f"user=alice node={held['NodeList']}" in out.json()["text"]


def test_an_admin_drains_and_resumes_a_node(admin):
    resp = admin.post("/api/v1/nodes/dgpu02/drain", json={"reason": "docker test: maintenance"})
    assert resp.status_code in (200, 202), resp.text
    node = wait_until(lambda: "DRAIN" in (n := scontrol("node", "dgpu02"))["State"] and n,
                      timeout=30, what="dgpu02 to drain")
    assert "docker test: maintenance" in in_service("slurmctld", "scontrol", "show", "node", "dgpu02")
    assert node["State"].startswith(("IDLE", "MIXED", "ALLOCATED"))
    resp = admin.post("/api/v1/nodes/dgpu02/resume", json={})
    assert resp.status_code in (200, 202), resp.text
    wait_until(lambda: "DRAIN" not in scontrol("node", "dgpu02")["State"], timeout=30, what="dgpu02 to resume")


def test_alice_may_not_drain_a_node(alice):
    resp = alice.post("/api/v1/nodes/dgpu02/drain", json={"reason": "not mine to drain"})
    assert resp.status_code == 403
    assert "DRAIN" not in scontrol("node", "dgpu02")["State"]


def test_a_gpu_fault_on_a_containerised_node_drains_it_by_policy(admin):
    inject = ("import sys; sys.path.insert(0, '/opt/portal'); from slurm_plugins import emulated; "
              "emulated.update_state('/var/lib/portal-gpu', 'dgpu01', 4, "
              "lambda st: emulated.inject_xid(st, 1, 79))")
    in_service("dgpu01", "python3", "-c", inject)
    try:
        wait_until(lambda: "DRAIN" in scontrol("node", "dgpu01")["State"],
                   timeout=90, what="the policy to drain dgpu01 (health check every 5 s)")
        reason = re.search(r"Reason=(.*)", in_service("slurmctld", "scontrol", "show", "node", "dgpu01"))
        # XID 79: the GPU fell off the bus, so the sensor reports it lost; the portal drained.
        assert reason and reason.group(1).startswith("portal: ") and "GPU 1 is lost" in reason.group(1), reason
        listed = {n["name"]: n for n in admin.get("/api/v1/nodes").json()}
        assert "DRAIN" in listed["dgpu01"]["flags"], listed["dgpu01"]
    finally:
        heal = ("import sys; sys.path.insert(0, '/opt/portal'); from slurm_plugins import emulated; "
                "emulated.write_state('/var/lib/portal-gpu', 'dgpu01', emulated.healthy_state('dgpu01', 4))")
        in_service("dgpu01", "python3", "-c", heal)
        admin.post("/api/v1/nodes/dgpu01/resume", json={})


# ---------------------------------------------------------------- restarts

def test_restarting_the_portal_and_the_database_loses_nothing(alice):
    before = submit(alice, "#!/bin/bash\ntrue\n", hold=True)
    listed_before = {j["id"] for j in alice.get("/api/v1/jobs").json()["results"]}
    started = time.monotonic()
    stack.compose("restart", "postgres", "web", "worker")
    stack.wait_ready(started, timeout=180)
    after = wait_until(lambda: (r := alice.get(f"/api/v1/jobs/{before['id']}")).status_code == 200 and r.json(),
                       timeout=60, what="the portal to answer again")
    assert after["slurm_job_id"] == before["slurm_job_id"]
    assert after["name"] == before["name"]
    assert {j["id"] for j in alice.get("/api/v1/jobs").json()["results"]} >= listed_before
    assert scontrol("job", before["slurm_job_id"])["JobState"] == "PENDING"
    # And the restarted portal still acts in Slurm.
    resp = alice.post(f"/api/v1/jobs/{before['id']}/cancel")
    assert resp.status_code in (200, 202), resp.text
    wait_until(lambda: scontrol("job", before["slurm_job_id"])["JobState"] == "CANCELLED",
               timeout=60, what="the cancel to reach Slurm")


def test_restarting_slurmctld_keeps_its_jobs(alice):
    job = submit(alice, "#!/bin/bash\ntrue\n", hold=True)
    started = time.monotonic()
    stack.compose("restart", "slurmctld")
    stack.wait_ready(started, timeout=180)
    assert scontrol("job", job["slurm_job_id"])["JobState"] == "PENDING"
    alice.post(f"/api/v1/jobs/{job['id']}/cancel")


def test_stack_status_is_readable():
    proc = subprocess.run([sys.executable, str(HERE.parent / "stack.py"), "status"], capture_output=True,
                          text=True, check=True)
    assert re.search(r"^web\s+healthy$", proc.stdout, re.M), proc.stdout

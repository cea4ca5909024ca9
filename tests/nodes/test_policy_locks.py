"""The policy holds no database lock while Slurm works: scontrol runs outside any transaction.

scontrol here is the real one, slowed by a wrapper first on PATH that marks when the drain call
starts, sleeps, then runs the real scontrol: the drain happens in the real Slurm. Only gpu08.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from portal.nodes.models import Node, NodeAction
from portal.nodes.policy import Thresholds, _drain, cap_blocker
from tests.conftest import wait_until
from tests.nodes.policy_support import own_nodes, slurm_state  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("own_nodes")]
SLOW_S = 3


@pytest.fixture
def slow_drain(tmp_path, monkeypatch) -> Path:
    """scontrol that takes SLOW_S seconds for a drain; `started` appears when the call begins."""
    started = tmp_path / "started"
    wrapper = tmp_path / "bin/scontrol"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *state=drain*) touch {started}; sleep {SLOW_S};; esac\n'
                       f'exec {shutil.which("scontrol")} "$@"\n')   # the cluster's own release's
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    return started


def _run_drain(node_id: int, out: dict) -> None:
    try:
        out["result"] = _drain(node_id, "test: no locks while scontrol runs", Thresholds(drain_cap=1.0))
    except Exception as exc:  # reported by the test thread
        out["error"] = exc
    finally:
        connection.close()


def test_partition_rows_are_writable_while_a_drain_waits_for_scontrol(slow_drain):
    node = Node.objects.get(name="gpu08")
    out: dict = {}
    worker = threading.Thread(target=_run_drain, args=(node.pk, out))
    worker.start()
    wait_until(slow_drain.exists, timeout=15, what="the drain's scontrol call to start")
    began = time.monotonic()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '1s'")  # a held row lock fails this, not hangs it
        updated = Node.objects.filter(partitions__contains=node.partitions[:1]).update(alloc_cpus=F("alloc_cpus"))
    waited = time.monotonic() - began
    worker.join(timeout=30)
    assert out.get("result") == "drained", out
    assert updated >= 2 and waited < 1  # every node of the partition, written during the call
    state, reason = slurm_state("gpu08")  # "draining" while other helpers' jobs still run there
    assert state in ("drained", "draining") and reason == "portal: test: no locks while scontrol runs"
    assert Node.objects.get(pk=node.pk).drain_claimed_at is None
    assert NodeAction.objects.filter(node=node, kind="drain", ok=True).exists()


def test_a_claimed_drain_counts_against_the_cap_until_slurm_answers():
    nodes = {n.name: n for n in Node.objects.filter(name__in=["gpu07", "gpu08"])}
    peers = {n.pk: n for n in Node.objects.filter(partitions__contains=nodes["gpu08"].partitions[:1])}
    now = timezone.now()
    for peer in peers.values():  # other people's drains on the shared cluster are not this test's
        peer.flags, peer.reason = [], ""
    gpu07 = peers[nodes["gpu07"].pk]
    gpu07.drain_claimed_at = now - timedelta(seconds=5)  # another worker is draining gpu07
    share = 1 / len(peers)  # a cap of one node
    assert "already drained automatically (cap 1)" in cap_blocker(peers[nodes["gpu08"].pk], peers, share, now=now)
    gpu07.drain_claimed_at = now - timedelta(minutes=10)  # a claim its worker never cleared: expired
    assert cap_blocker(peers[nodes["gpu08"].pk], peers, share, now=now) == ""

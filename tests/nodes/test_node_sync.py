"""The worker mirrors Slurm's nodes into the database, through a real Celery worker."""

from __future__ import annotations

import pytest

from portal.nodes.models import Node
from portal.nodes.services import sync_nodes
from portal.slurm import gateway
from workers.tasks.nodes import sync_nodes_task


@pytest.mark.django_db(transaction=True)
def test_the_worker_records_every_node(celery_worker_session):
    result = sync_nodes_task.delay().get(timeout=60)
    assert result["created"] == 10
    gpu01 = Node.objects.get(name="gpu01")
    assert (gpu01.gpus, gpu01.gres, gpu01.partitions) == (4, "gpu:h100:4", ["gpu"])
    assert gpu01.last_seen is not None
    assert Node.objects.count() == 10


@pytest.mark.django_db
def test_a_drain_shows_up_on_the_next_sync(cluster):
    sync_nodes()
    try:
        gateway.drain_node("cpu01", "portal-test: sync")
        result = sync_nodes()
        assert result.updated >= 1
        node = Node.objects.get(name="cpu01")
        assert "DRAIN" in node.flags and node.reason == "portal-test: sync"
    finally:
        gateway.resume_node("cpu01")
    sync_nodes()
    assert "DRAIN" not in Node.objects.get(name="cpu01").flags


@pytest.mark.django_db
def test_a_sync_with_no_change_writes_no_changes(cluster):
    sync_nodes()
    again = sync_nodes()
    assert again.created == 0
    assert again.unchanged + again.updated == 10

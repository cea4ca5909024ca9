"""One key derivation: the portal, the node sensor and cluster/ctl give a node the same key."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

from portal.nodes import reports, signing
from slurm_plugins import report as sensor
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
NODES = ["gpu01", "gpu08", "cpu01", "r1n01-ib"]


def _ctl():
    loader = importlib.machinery.SourceFileLoader("cluster_ctl", str(ROOT / "cluster/ctl"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("cluster_ctl", loader))
    loader.exec_module(module)
    return module


@pytest.mark.parametrize("node", NODES)
def test_portal_and_sensor_derive_the_same_key(node):
    master = "4f1d2a9c" * 8
    assert signing.node_key(node, master) == sensor.node_key(master, node)
    assert len(signing.node_key(node, master)) == 64


def test_cluster_ctl_has_no_copy_of_the_derivation():
    ctl = _ctl()
    assert not hasattr(ctl, "node_key")  # it calls slurm_plugins.report.node_key
    assert "hmac" not in vars(ctl)


def test_a_report_the_sensor_signs_with_its_key_file_passes_the_portals_check(master_key, tmp_path):  # noqa: F811
    key_file = tmp_path / "health.key"
    key_file.write_text(sensor.node_key(master_key.read_text().strip(), "gpu03") + "\n")
    envelope = sensor.Envelope({"node": "gpu03", "findings": []})
    headers = envelope.headers(sensor.read_key(str(key_file)))
    timestamp = reports.check_signature(node_name="gpu03", timestamp=headers["X-Health-Timestamp"],
                                        nonce=headers["X-Health-Nonce"], signature=headers["X-Health-Signature"],
                                        body=envelope.raw())
    assert timestamp == envelope.timestamp
    with pytest.raises(reports.ReportRejected):  # and the key is the node's own, not any node's
        reports.check_signature(node_name="gpu04", timestamp=headers["X-Health-Timestamp"],
                                nonce=headers["X-Health-Nonce"], signature=headers["X-Health-Signature"],
                                body=envelope.raw())

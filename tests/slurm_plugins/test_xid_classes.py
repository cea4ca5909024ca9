"""Each XID lands in NVIDIA's resolution bucket: hardware faults drain, application errors do not."""

from __future__ import annotations

import pytest

from slurm_plugins import emulated
from slurm_plugins.findings import classify_xid, xid_finding
from tests.slurm_plugins.helpers import break_gpus, check_only, closed_port_url, healthy_gpus, run_hook, write_config

FATAL_DRAIN = [48, 64, 74, 95, 119, 120]
APPLICATION = [13, 31, 43, 45, 68]
IGNORED = [63, 92]


@pytest.mark.parametrize("xid", FATAL_DRAIN)
def test_hardware_xids_take_the_node_out(xid):
    finding = xid_finding(xid, gpu=2)
    assert (finding.severity, finding.action) == ("fatal", "drain")
    assert finding.takes_node_out
    assert finding.gpu == 2 and finding.xid == xid


def test_xid_79_needs_a_reboot():
    finding = xid_finding(79, gpu=0)
    assert (finding.severity, finding.action) == ("fatal", "reboot")
    assert "fallen off the bus" in finding.detail


@pytest.mark.parametrize("xid", APPLICATION)
def test_application_xids_leave_the_node_in_service(xid):
    finding = xid_finding(xid, gpu=1)
    assert (finding.severity, finding.action) == ("warning", "none")
    assert not finding.takes_node_out


@pytest.mark.parametrize("xid", IGNORED)
def test_informational_xids_are_ignored(xid):
    assert classify_xid(xid)[:2] == ("info", "ignore")


def test_xid_94_asks_to_restart_the_application():
    finding = xid_finding(94, gpu=3)
    assert (finding.severity, finding.action) == ("warning", "restart_app")
    assert not finding.takes_node_out


def test_an_unknown_xid_is_a_warning_not_a_drain():
    assert classify_xid(999)[:2] == ("warning", "none")


def test_a_site_overrides_one_xid_in_health_conf(tmp_path):
    """[xid] in health.conf reclassifies an XID; the others keep their bucket."""
    conf = write_config(tmp_path, portal_url=closed_port_url(), extra="[xid]\n13 = fatal drain\n")
    healthy_gpus(tmp_path / "gpu", "gpu07")
    break_gpus(tmp_path / "gpu", "gpu07", lambda st: (emulated.inject_xid(st, 0, 13), emulated.inject_xid(st, 1, 31)))
    found = {f["xid"]: (f["severity"], f["action"]) for f in check_only("gpu07", conf)}
    assert found == {13: ("fatal", "drain"), 31: ("warning", "none")}


def test_a_bad_override_stops_the_health_check_but_never_a_job(tmp_path):
    conf = write_config(tmp_path, portal_url=closed_port_url(), extra="[xid]\n13 = catastrophic\n")
    health = run_hook("healthcheck", "gpu07", conf)
    assert health.returncode == 2 and "[xid] 13" in health.stderr
    prolog = run_hook("prolog", "gpu07", conf, env={"SLURM_JOB_ID": "1"})
    assert prolog.returncode == 0

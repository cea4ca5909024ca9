"""When nothing changed, a recovery cycle is two indexed queries: it must not slow the tracker."""

from __future__ import annotations

import pytest

from tests.recovery.support import recover

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("slurm_accounts", "fresh_cycles")]


def test_a_quiet_cycle_costs_two_queries(django_assert_max_num_queries):
    recover()   # sets the cursor
    with django_assert_max_num_queries(2):
        result = recover()
    assert result.ran and result.looked_at == 0 and result.acted == {}

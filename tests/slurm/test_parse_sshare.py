"""sshare's text as the team pages read it, on output recorded from the local cluster (22.05,
Fair Tree) while other teams' test accounts were about."""

from __future__ import annotations

from math import inf

from portal.slurm.parse import SSHARE_FIELDS, fair_share_from_sshare
from portal.slurm.types import FairShareRow

# sshare -n -P -a -o Account,User,RawShares,NormShares,RawUsage,EffectvUsage,FairShare,LevelFS
RECORDED = """\
root|||0.000000|205|1.000000||
 root|root|1|0.032258|0|0.000000|1.000000|inf
 bsx5545-a||7|0.225806|0|0.000000||inf
  bsx5545-a|bsxu1|1|0.500000|0|0.000000|1.000000|inf
 nlp||1|0.032258|0|0.000000||inf
  nlp|carol|1|0.500000|0|0.000000|1.000000|inf
  nlp|erin|1|0.500000|0|0.000000|1.000000|inf
 vision||1|0.032258|67|0.329822||0.097805
  vision|alice|1|0.500000|0|0.000000|0.166667|inf
  vision|bob|1|0.500000|67|1.000000|0.083333|0.500000
"""


def test_the_fields_asked_for_are_the_ones_read():
    assert SSHARE_FIELDS.split(",") == ["Account", "User", "RawShares", "NormShares", "RawUsage",
                                        "EffectvUsage", "FairShare", "LevelFS"]


def test_accounts_and_their_users_are_read_and_root_is_left_out():
    rows = fair_share_from_sshare(RECORDED)
    assert [(r.account, r.user) for r in rows] == [
        ("bsx5545-a", ""), ("bsx5545-a", "bsxu1"), ("nlp", ""), ("nlp", "carol"), ("nlp", "erin"),
        ("vision", ""), ("vision", "alice"), ("vision", "bob")]


def test_an_accounts_own_row_has_no_factor_and_a_used_one_its_level():
    rows = {(r.account, r.user): r for r in fair_share_from_sshare(RECORDED)}
    assert rows["vision", ""] == FairShareRow(account="vision", user="", raw_shares=1, norm_shares=0.032258,
                                              raw_usage=67, effective_usage=0.329822, fair_share=None,
                                              level_fs=0.097805)
    assert rows["vision", "bob"].fair_share == 0.083333
    assert rows["vision", "alice"].level_fs == inf     # no usage at all: infinitely under-served
    assert rows["bsx5545-a", ""].raw_shares == 7


def test_parent_shares_and_odd_lines_do_not_break_it():
    text = " lab||parent||0|||\n  lab|dan|1|1.000000|12|1.000000|0.5|1.0\nsshare: warning\n\n"
    rows = fair_share_from_sshare(text)
    assert [(r.account, r.user, r.raw_shares, r.norm_shares) for r in rows] == [
        ("lab", "", None, None), ("lab", "dan", 1, 1.0)]
    assert fair_share_from_sshare("") == []


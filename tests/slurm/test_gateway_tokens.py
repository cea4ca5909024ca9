"""The gateway mints Slurm JWTs only for ordinary users."""

from __future__ import annotations

import jwt
import pytest
from django.conf import settings

from portal.slurm import gateway
from portal.slurm.errors import TokenRefused
from portal.slurm.types import JobSpec


@pytest.mark.parametrize("account", ["root", "slurm", "nobody", "daemon", "portalop", "slurmrest"])
def test_it_refuses_to_mint_for_root_slurm_and_system_accounts(account):
    with pytest.raises(TokenRefused):
        gateway.user_token(account)


def test_it_refuses_users_without_a_unix_account():
    with pytest.raises(TokenRefused, match="not a Unix account"):
        gateway.user_token("charlie-no-such-user")


def test_a_minted_token_names_the_user_and_expires_soon():
    token = gateway.user_token("alice")
    key = open(settings.SLURM["JWT_KEY_FILE"], "rb").read()  # noqa: SIM115
    claims = jwt.decode(token, key, algorithms=["HS256"])
    assert claims["sun"] == "alice"
    assert 0 < claims["exp"] - claims["iat"] <= settings.SLURM["TOKEN_LIFESPAN_S"]


def test_refused_accounts_never_reach_slurm(cluster):
    """Submitting as root must fail before any request is made, with the typed error."""
    spec = JobSpec(name="x", account="root", script="#!/bin/bash\ntrue\n", working_dir="/tmp")
    with pytest.raises(TokenRefused):
        gateway.submit_job("root", spec)

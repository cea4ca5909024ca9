"""Settings helpers fail loudly on bad values."""

from __future__ import annotations

import pytest

from portal.env import ImproperlyConfiguredEnv, env_bool, env_choice, env_int, env_secret


def test_a_malformed_integer_stops_startup(monkeypatch):
    monkeypatch.setenv("X_PORT", "80a")
    with pytest.raises(ImproperlyConfiguredEnv, match="X_PORT"):
        env_int("X_PORT", 1)


def test_an_integer_below_its_minimum_is_refused(monkeypatch):
    monkeypatch.setenv("X_N", "-1")
    with pytest.raises(ImproperlyConfiguredEnv, match="minimum"):
        env_int("X_N", 1, minimum=0)


def test_booleans_accept_only_clear_words(monkeypatch):
    monkeypatch.setenv("X_B", "yes")
    assert env_bool("X_B", False) is True
    monkeypatch.setenv("X_B", "maybe")
    with pytest.raises(ImproperlyConfiguredEnv):
        env_bool("X_B", False)


def test_choices_are_checked(monkeypatch):
    monkeypatch.setenv("X_C", "pyslurmm")
    with pytest.raises(ImproperlyConfiguredEnv, match="expected one of"):
        env_choice("X_C", "cli", {"cli", "pyslurm"})


def test_secret_from_file_and_refusal_without_one(monkeypatch, tmp_path):
    secret = tmp_path / "s"
    secret.write_text("from-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_secret("X_SECRET", dev_file=tmp_path / "dev", allow_generate=False) == "from-file"
    monkeypatch.delenv("X_SECRET_FILE")
    with pytest.raises(ImproperlyConfiguredEnv, match="X_SECRET"):
        env_secret("X_SECRET", dev_file=tmp_path / "dev", allow_generate=False)


def test_a_generated_dev_secret_is_private_and_stable(tmp_path):
    first = env_secret("X_NONE", dev_file=tmp_path / "k", allow_generate=True)
    assert env_secret("X_NONE", dev_file=tmp_path / "k", allow_generate=True) == first
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600

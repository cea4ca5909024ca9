"""The checkpoint scanner on directory layouts recorded from each format's writer.

Layouts (names as the tools write them; contents shrunk to a few bytes):
- examples/train_with_checkpoints.py: checkpoint.json (renamed into place), .checkpoint.json.<pid>.tmp while saving;
- torchtitan (DCP): <dump>/checkpoint/step-N/{__0_0.distcp, __1_0.distcp, .metadata}; .metadata last;
- Megatron-LM: iter_0000200/mp_rank_00/model_optim_rng.pt, then latest_checkpointed_iteration.txt = "200";
- the portal's marker: any subdirectory with PORTAL_COMPLETE (or manifest.json) written last.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from slurm_plugins.checkpoint_scan import (
    GENERATION_FILE,
    MAX_ENTRIES,
    default_dir,
    latest_checkpoint,
    read_generation,
    write_generation,
)
from tests.conftest import ROOT


def tree(root: Path, files: dict[str, str], *, mtime: float | None = None) -> Path:
    """Write `files` (relative path -> content) under `root`; optionally all with one mtime."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
    return root


TORCHTITAN = {"step-100/__0_0.distcp": "w", "step-100/__1_0.distcp": "w", "step-100/.metadata": "m",
              "step-200/__0_0.distcp": "w", "step-200/__1_0.distcp": "w", "step-200/.metadata": "m"}
MEGATRON = {"iter_0000100/mp_rank_00/model_optim_rng.pt": "w", "iter_0000200/mp_rank_00/model_optim_rng.pt": "w",
            "latest_checkpointed_iteration.txt": "200\n"}


def test_it_finds_the_examples_checkpoint_with_its_step(tmp_path):
    tree(tmp_path, {"checkpoint.json": json.dumps({"step": 30, "loss": 0.4, "runs": 2})})
    found = latest_checkpoint(str(tmp_path))
    assert (found.path, found.step, found.format) == (f"{tmp_path}/checkpoint.json", 30, "example")
    assert abs(found.completed_at - (tmp_path / "checkpoint.json").stat().st_mtime) < 1e-6


def test_a_big_example_checkpoint_still_gives_its_step(tmp_path):
    """Model state in checkpoint.json: too big to parse in the hook, the step is read from its head."""
    tree(tmp_path, {"checkpoint.json": json.dumps({"step": 77, "weights": "x" * (2 << 20)})})
    assert latest_checkpoint(str(tmp_path)).step == 77


def test_a_half_written_example_checkpoint_is_ignored(tmp_path):
    tree(tmp_path, {".checkpoint.json.4242.tmp": '{"step": 40, "lo'})
    assert latest_checkpoint(str(tmp_path)) is None
    tree(tmp_path, {"checkpoint.json": '{"step": 40, "lo'})  # garbage, e.g. a non-atomic writer
    assert latest_checkpoint(str(tmp_path)) is None


def test_torchtitan_highest_step_with_metadata_wins(tmp_path):
    tree(tmp_path, {**TORCHTITAN, "step-300/__0_0.distcp": "w"})  # step-300 still being written
    found = latest_checkpoint(str(tmp_path))
    assert (found.path, found.step, found.format) == (f"{tmp_path}/step-200", 200, "torchtitan")


def test_torchtitan_dump_folder_one_level_down(tmp_path):
    tree(tmp_path / "checkpoint", TORCHTITAN)
    assert latest_checkpoint(str(tmp_path)).path == f"{tmp_path}/checkpoint/step-200"


def test_megatron_tracker_names_the_checkpoint(tmp_path):
    tree(tmp_path, MEGATRON)
    found = latest_checkpoint(str(tmp_path))
    assert (found.path, found.step, found.format) == (f"{tmp_path}/iter_0000200", 200, "megatron")


def test_megatron_release_and_missing_or_garbage_trackers(tmp_path):
    tree(tmp_path, {"release/mp_rank_00/model_optim_rng.pt": "w", "latest_checkpointed_iteration.txt": "release"})
    found = latest_checkpoint(str(tmp_path))
    assert (found.path, found.step) == (f"{tmp_path}/release", None)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("300\n")  # iter_0000300 does not exist
    assert latest_checkpoint(str(tmp_path)) is None
    (tmp_path / "latest_checkpointed_iteration.txt").write_bytes(b"\xff\xfe garbage")
    assert latest_checkpoint(str(tmp_path)) is None


def test_marker_directories(tmp_path):
    tree(tmp_path, {"ckpt-a/weights.bin": "w", "ckpt-a/PORTAL_COMPLETE": "40",
                    "ckpt-b/weights.bin": "w", "ckpt-b/PORTAL_COMPLETE": json.dumps({"step": 50}),
                    "ckpt-000060/weights.bin": "w",  # no marker yet: half-written
                    "ckpt-c/weights.bin": "w", "ckpt-c/manifest.json": '{"step": 70, "fi'})  # manifest not done
    found = latest_checkpoint(str(tmp_path))
    assert (found.path, found.step, found.format) == (f"{tmp_path}/ckpt-b", 50, "marker")
    tree(tmp_path, {"ckpt-000060/PORTAL_COMPLETE": ""})  # empty marker: the step from the name
    assert latest_checkpoint(str(tmp_path)).step == 60
    tree(tmp_path, {"ckpt-c/manifest.json": json.dumps({"step": 70, "files": ["weights.bin"]})})
    assert latest_checkpoint(str(tmp_path)).path == f"{tmp_path}/ckpt-c"


def test_across_formats_the_latest_completion_wins(tmp_path):
    now = time.time()
    tree(tmp_path, MEGATRON, mtime=now - 100)
    tree(tmp_path / "titan", TORCHTITAN, mtime=now - 50)
    tree(tmp_path, {"checkpoint.json": json.dumps({"step": 5})}, mtime=now - 200)
    assert latest_checkpoint(str(tmp_path)).format == "torchtitan"
    tree(tmp_path, {"checkpoint.json": json.dumps({"step": 6})}, mtime=now)
    assert latest_checkpoint(str(tmp_path)).format == "example"


def test_symlinks_are_never_followed(tmp_path):
    other = tree(tmp_path / "other", {**TORCHTITAN, "checkpoint.json": json.dumps({"step": 9}),
                                       "done/PORTAL_COMPLETE": "9"})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "step-900").symlink_to(other / "step-200")
    (mine / "checkpoint.json").symlink_to(other / "checkpoint.json")
    (mine / "done").symlink_to(other / "done")
    (mine / "nested").symlink_to(other)
    assert latest_checkpoint(str(mine)) is None
    link = tmp_path / "link"
    link.symlink_to(other)
    assert latest_checkpoint(str(link)) is None  # the directory itself as a link: refused


def test_owner_check_refuses_another_users_tree(tmp_path):
    tree(tmp_path / "theirs", {"checkpoint.json": json.dumps({"step": 3})})
    entry = pwd.getpwnam("bob")
    os.chown(tmp_path / "theirs", entry.pw_uid, entry.pw_gid)
    (tmp_path / "link").symlink_to(tmp_path / "theirs")
    alice = pwd.getpwnam("alice").pw_uid
    assert latest_checkpoint(str(tmp_path / "theirs"), owner_uid=alice) is None
    assert latest_checkpoint(str(tmp_path / "link"), owner_uid=alice) is None
    # The owner may reach their own directory through a link of theirs (~/ckpt -> /scratch/...).
    assert latest_checkpoint(str(tmp_path / "link"), owner_uid=entry.pw_uid).step == 3


def test_garbage_never_crashes_or_blocks(tmp_path):
    os.mkfifo(tmp_path / "checkpoint.json")  # opening a FIFO for reading would block
    os.mkfifo(tmp_path / "latest_checkpointed_iteration.txt")
    tree(tmp_path, {"step-x/.metadata": "", "step-99999999999999999999/.metadata": "",
                    "m/PORTAL_COMPLETE": "not a number", "n/manifest.json": "[1, 2]",
                    "deep/manifest.json": "[" * 100000})
    (tmp_path / "step-7").mkdir()
    os.mkfifo(tmp_path / "step-7/.metadata")  # not a regular file: not a completion
    started = time.monotonic()
    found = latest_checkpoint(str(tmp_path))
    assert time.monotonic() - started < 1
    assert found is not None and found.path == f"{tmp_path}/m" and found.step is None
    assert latest_checkpoint(str(tmp_path / "missing")) is None
    assert latest_checkpoint(str(tmp_path / "m/PORTAL_COMPLETE")) is None  # not a directory


def test_the_scan_is_bounded(tmp_path):
    for i in range(3 * MAX_ENTRIES):
        (tmp_path / f"noise-{i}").mkdir()
    started = time.monotonic()
    latest_checkpoint(str(tmp_path))
    assert time.monotonic() - started < 0.5


def test_generation_file_is_monotonic_and_tolerant(tmp_path):
    assert read_generation(str(tmp_path)) is None
    assert write_generation(str(tmp_path), 1) == 1
    assert write_generation(str(tmp_path), 0) == 1  # an old attempt's late task never lowers it
    assert read_generation(str(tmp_path)) == 1
    assert write_generation(str(tmp_path), 2) == 2
    assert (tmp_path / GENERATION_FILE).read_text() == "2\n"
    assert not [p for p in tmp_path.iterdir() if p.name != GENERATION_FILE]  # no temp file left
    (tmp_path / GENERATION_FILE).write_text("garbage")
    assert read_generation(str(tmp_path)) is None


def test_default_dir():
    assert default_dir("/srv/ck/", "vision", "alice", 123) == "/srv/ck/vision/alice/slurm-123"


@pytest.fixture
def open_tmp():
    """A directory other users can reach (pytest's tmp_path is root's, mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="ckpt-scan-", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103 - traversable by the job users, writable by root only
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_task_prolog_runs_within_budget_and_never_fails(open_tmp):
    """The real script, as a user, on a directory with hundreds of entries: fast, exit 0."""
    directory = tree(open_tmp / "ck", {**TORCHTITAN, **{f"junk/{i}": "" for i in range(300)}})
    entry = pwd.getpwnam("alice")
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    env = ["env", "-i", f"CHECKPOINT_DIR={directory}", "SLURM_JOB_ID=1", "SLURM_RESTART_COUNT=3",
           "SLURM_JOB_ACCOUNT=vision"]
    started = time.monotonic()
    proc = subprocess.run(["runuser", "-u", "alice", "--", *env, str(ROOT / "slurm_plugins/task_prolog")],
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["export PORTAL_GENERATION=3", f"export PORTAL_RESUME_FROM={directory}/step-200"]
    assert (directory / GENERATION_FILE).read_text() == "3\n"
    assert elapsed < 0.5  # ~50 ms here, including runuser; the budget is ~100 ms
    (directory / GENERATION_FILE).unlink()
    os.chmod(directory, 0o555)  # noqa: S103 - unwritable: a warning, never a failure
    proc = subprocess.run(["runuser", "-u", "alice", "--", *env, str(ROOT / "slurm_plugins/task_prolog")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "cannot write the generation file" in proc.stderr
    assert "print portal checkpoint: warning: cannot write the generation file" in proc.stdout  # into the job's output
    assert f"export PORTAL_RESUME_FROM={directory}/step-200" in proc.stdout


@pytest.mark.parametrize("value", ["", "/nonexistent/dir", "relative"])
def test_task_prolog_survives_bad_checkpoint_dirs(value):
    env = ["env", "-i", f"CHECKPOINT_DIR={value}", "SLURM_JOB_ID=abc", "SLURM_RESTART_COUNT=x"]
    proc = subprocess.run(["runuser", "-u", "alice", "--", *env, str(ROOT / "slurm_plugins/task_prolog")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "export PORTAL_GENERATION=0" in proc.stdout and "unset PORTAL_RESUME_FROM" in proc.stdout

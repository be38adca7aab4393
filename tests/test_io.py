"""Atomic outputs: a write is complete or absent; what a killed writer left is ignored by git and
DVC and removed by the next write of the same destination."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lifecycle.core.io import atomic_dir, atomic_path, write_json_atomic
from tests.conftest import ROOT


def test_a_write_that_fails_leaves_the_old_file_and_nothing_beside_it(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_folder_that_fails_leaves_the_old_folder_and_nothing_beside_it(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "kept.txt").write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "raw") as staging:
            (staging / "new.txt").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept.txt", "raw"]


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    """SIGKILL runs no cleanup: the temporaries stay until the same destination is written again."""
    (tmp_path / ".report.json.k1ll3d.tmp").write_text("half")
    (tmp_path / ".raw.k1ll3d.tmpdir" / "images").mkdir(parents=True)
    (tmp_path / ".other.json.k1ll3d.tmp").write_text("another destination's: not ours to remove")
    write_json_atomic({"a": 1}, tmp_path / "report.json")
    with atomic_dir(tmp_path / "raw") as staging:
        (staging / "x.txt").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.k1ll3d.tmp", "raw", "report.json"]


@pytest.mark.parametrize("leftover", ["data/.raw.k1ll3d.tmpdir/images/img_1.png", "metrics/.train.k1ll3d.tmpdir/metrics.json",
                                      "metrics/.ingest.json.k1ll3d.tmp", "models/train/.model.pt.k1ll3d.tmp"])
def test_git_and_dvc_ignore_what_a_killed_writer_leaves(leftover):
    """So a crash never makes `git status` dirty, nor slips into an output DVC hashes."""
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", leftover], cwd=ROOT)
    assert ignored.returncode == 0, f"git does not ignore {leftover}"
    dvc = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", "-q", leftover], cwd=ROOT)
    assert dvc.returncode == 0, f"DVC would hash {leftover} into an output"

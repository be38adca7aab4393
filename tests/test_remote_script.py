"""scripts/remote.py, fast: the DVC command it runs, and the one sentence it says when the
remote cannot be used, before anything moves (tests/test_remote.py runs it end to end)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lifecycle.core.errors import UserError

from .conftest import ROOT, env_with_venv

spec = importlib.util.spec_from_file_location("remote_script", ROOT / "scripts" / "remote.py")
remote = importlib.util.module_from_spec(spec)
spec.loader.exec_module(remote)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """An empty git + DVC repository."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env_with_venv())
    return root


def add_remote(root: Path, url: str, name: str = "storage") -> None:
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", name, url], cwd=root, check=True,
                   capture_output=True, env=env_with_venv())


@pytest.mark.parametrize(("argv", "command"), [
    (["push"], ["push", "--run-cache"]),
    (["pull", "data/raw", "-r", "nfs"], ["pull", "--run-cache", "data/raw", "-r", "nfs"]),
    (["exp", "push", "origin", "lr-big"], ["exp", "push", "--run-cache", "origin", "lr-big"]),
    (["exp", "pull", "origin", "lr-big", "--no-run-cache"], ["exp", "pull", "origin", "lr-big", "--no-run-cache"]),
])
def test_each_verb_runs_the_plain_dvc_command_with_its_run_cache(argv, command):
    verb, name, rest = remote.parse(argv)
    assert remote.dvc_command(verb, rest) == [sys.executable, "-m", "dvc", *command]
    assert name == ("nfs" if "nfs" in argv else None)


def test_an_unknown_verb_or_a_bare_remote_flag_is_one_sentence():
    with pytest.raises(UserError, match="unknown command 'fetch'"):
        remote.parse(["fetch"])
    with pytest.raises(UserError, match="-r/--remote needs the name of a DVC remote"):
        remote.parse(["push", "-r"])
    with pytest.raises(UserError, match="-r/--remote needs the name of a DVC remote"):
        remote.parse(["pull", "data/raw", "--remote"])


def test_the_remote_flag_is_found_in_any_of_its_spellings_and_everything_passes_through():
    for argv in (["push", "-r", "nfs", "-j", "4"], ["push", "--remote=nfs"], ["push", "-rnfs", "models/best"]):
        assert remote.parse(argv) == (("push",), "nfs", argv[1:])


@pytest.mark.slow
def test_no_remote_configured_says_how_to_add_one(repository: Path):
    with pytest.raises(UserError, match=r"no DVC remote is configured; add the team's once and commit it: dvc remote add -d"):
        remote.main(["pull"], root=repository)
    add_remote(repository, str(repository.parent / "store"))
    with pytest.raises(UserError, match="there is no DVC remote named 'other'"):
        remote.main(["pull", "-r", "other"], root=repository)


@pytest.mark.slow
def test_a_folder_remote_that_is_missing_a_file_or_empty_is_refused_before_dvc_runs(repository: Path, tmp_path: Path):
    share = tmp_path / "share" / "dvc-store"
    add_remote(repository, str(share))
    for verb in (["push"], ["pull"], ["check"]):
        with pytest.raises(UserError, match=rf"the folder {share} does not exist \(is the share mounted\?"):
            remote.main(verb, root=repository)
    assert not share.exists()                                           # never created on the local disk

    share.parent.mkdir()
    share.write_text("a file\n")
    with pytest.raises(UserError, match=f"{share} is not a folder"):
        remote.main(["push"], root=repository)

    share.unlink()
    share.mkdir()                                                        # an empty folder: a new remote ...
    assert remote.main(["check"], root=repository) == 0
    with pytest.raises(UserError, match="holds no DVC data"):          # ... has nothing to pull
        remote.main(["pull"], root=repository)
    assert remote.main(["push"], root=repository) == 0                  # and can be pushed to


@pytest.mark.slow
def test_a_cloud_remote_without_its_package_names_the_install_command(repository: Path):
    add_remote(repository, "s3://team-bucket/cats-vs-dogs")
    try:
        import dvc_s3  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"needs a package: .*dvc-s3.*pip install 'dvc\[s3\]==\d"):
            remote.main(["check"], root=repository)
    else:
        pytest.skip("dvc-s3 is installed here")


@pytest.mark.slow
def test_the_script_prints_one_error_line_and_exits_2(repository: Path, tmp_path: Path):
    add_remote(repository, str(tmp_path / "not-mounted"))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "remote.py"), "pull"], cwd=repository,
                            capture_output=True, text=True, env=env_with_venv())
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: the DVC remote 'storage' (")


def test_the_run_cache_outputs_to_push_are_every_object_its_entries_name_that_the_cache_holds(tmp_path: Path):
    objects, runs = tmp_path / "files" / "md5", tmp_path / "runs"
    def put(name: str, data: bytes) -> None:
        (objects / name[:2]).mkdir(parents=True, exist_ok=True)
        (objects / name[:2] / name[2:]).write_bytes(data)

    put("aa" + "1" * 30, b"model")
    put("bb" + "2" * 30, b"curve")
    put("cc" + "3" * 26 + ".dir", json.dumps([{"md5": "bb" + "2" * 30, "relpath": "loss.tsv"},
                                             {"md5": "dd" + "4" * 30, "relpath": "gone.tsv"}]).encode())
    entry = runs / "ke" / "key" / "value"
    entry.parent.mkdir(parents=True)
    entry.write_text(yaml.safe_dump({"cmd": "python -m stages.train", "outs": [
        {"path": "models/train", "hash": "md5", "md5": "aa" + "1" * 30},
        {"path": "metrics/train/plots", "hash": "md5", "md5": "cc" + "3" * 26 + ".dir"},  # uncached, committed
        {"path": "metrics/other.json", "hash": "md5", "md5": "ee" + "5" * 30},            # not held here
    ]}))
    assert remote.run_outputs(objects, runs) == {"aa" + "1" * 30, "cc" + "3" * 26 + ".dir", "bb" + "2" * 30}


def test_a_stage_run_leaves_its_run_cache_entry_where_the_script_looks(repository: Path):
    """The one use of DVC's internals (cache_folders, checked against DVC 3.67.1): fails when they move."""
    from dvc.repo import Repo

    env = env_with_venv()
    (repository / "input.txt").write_text("input\n")  # a stage without deps always runs: DVC caches no run of it
    subprocess.run([sys.executable, "-m", "dvc", "stage", "add", "-q", "-n", "make", "-d", "input.txt", "-o",
                    "made.txt", "cp input.txt made.txt"], cwd=repository, check=True, env=env)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=repository, check=True, env=env)
    made = yaml.safe_load((repository / "dvc.lock").read_text())["stages"]["make"]["outs"][0]["md5"]
    with Repo(str(repository)) as repo:
        objects, runs = remote.cache_folders(repo)
    assert remote.run_outputs(objects, runs) == {made}

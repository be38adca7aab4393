"""Share outputs and experiments through the team's DVC remote: check that it answers, then run
the plain DVC command with its run-cache, and say in one sentence what went wrong if not.

    python scripts/remote.py check                      # does the default remote answer?
    python scripts/remote.py push [targets...]          # dvc push --run-cache
    python scripts/remote.py pull [targets...]          # dvc pull --run-cache
    python scripts/remote.py exp push origin <exp>...   # dvc exp push --run-cache origin <exp>...
    python scripts/remote.py exp pull origin <exp>...   # dvc exp pull --run-cache origin <exp>...

``-r NAME`` (anywhere after the verb, as for DVC) picks a remote other than the default.
Any other DVC option passes through unchanged.

Why a wrapper: DVC reports a remote it cannot reach in ways that hide the cause. A folder
remote whose share is not mounted makes ``dvc pull`` list every missing file hash, and
``dvc push`` silently creates the folder on the local disk, where no colleague will ever
see it; ``dvc exp push`` sends the experiment's git ref before its data, so a remote that is
down leaves a ref on origin whose outputs nobody can pull. Checking first turns these into
one sentence before anything moves. A transfer that breaks later (the remote goes away
midway) loses nothing either: DVC writes every file to its destination atomically, content-
addressed, so what arrived is whole and a rerun sends only the rest.

The run-cache needs one more step. DVC 3 pushes the run-cache's entries (which stage ran on
which deps and params, and what it wrote) but not what they wrote, unless a pushed revision
holds it: never the copies of uncached outputs (every stage's metrics and curves, committed
to git) that a restore checks out. So after a successful push this also sends every object
the local run-cache refers to (what is already there is skipped). With it a colleague's
``dvc exp run --pull -S lr=0.01`` (or ``dvc repro --pull``) restores a run anyone pushed
instead of computing it again.

Exit status: DVC's own on a failed transfer; 2 when the remote cannot be reached or is not
configured (nothing was transferred). Nothing in the pipeline imports this file.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file, from anywhere

from lifecycle.core.errors import UserError, run_stage  # noqa: E402

USAGE = __doc__.split("\n\n")[1]
TRANSFERS = {("push",), ("pull",), ("exp", "push"), ("exp", "pull")}
RETRY = "nothing was transferred; run the same command again once it answers"


def parse(argv: list[str]) -> tuple[tuple[str, ...], str | None, list[str]]:
    """(verb, remote name or None, the rest of the arguments) from the command line."""
    verb: tuple[str, ...] = tuple(argv[:2]) if argv[:1] == ["exp"] else tuple(argv[:1])
    if verb not in TRANSFERS | {("check",)}:
        raise UserError(f"unknown command {' '.join(argv[:2]) or '(none)'!r}; use one of:\n{USAGE}")
    rest = argv[len(verb):]
    flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    flags.add_argument("-r", "--remote")
    try:
        known, _ = flags.parse_known_args(rest)  # every other DVC option passes through untouched
    except argparse.ArgumentError as error:
        raise UserError(f"{error.argument_name} needs the name of a DVC remote (dvc remote list shows them).") from None
    return verb, known.remote, rest


def find_remote(root: Path, name: str | None):
    """The DVC remote ``name`` (default: the configured default), or a UserError saying how to add one."""
    from dvc.config import NoRemoteError, RemoteNotFoundError
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = name or repo.config["core"].get("remote")
        try:
            return repo.cloud.get_remote(name)
        except NoRemoteError:
            raise UserError(
                "no DVC remote is configured; add the team's once and commit it: "
                "dvc remote add -d storage <url> (s3://bucket/path, /mnt/share/dvc-store, ...) && "
                "git commit .dvc/config -m 'DVC remote'."
            ) from None
        except RemoteNotFoundError:
            raise UserError(f"there is no DVC remote named '{name}' (dvc remote list shows the configured ones).") from None
        except ImportError as error:  # e.g. "s3 is supported, but requires 'dvc-s3' to be installed"
            from importlib.metadata import version

            scheme = str(repo.config["remote"][name]["url"]).split("://")[0]
            raise UserError(f"the DVC remote '{name}' needs a package: {error}; install it with: "
                            f"pip install 'dvc[{scheme}]=={version('dvc')}'.") from None


def why_unreachable(remote, pulling: bool) -> str | None:
    """Why ``remote`` cannot be used right now, as a clause; None when it answers.

    A folder (local or NFS) is checked strictly: it must exist (DVC would create a missing
    one, on the local disk when the share is not mounted), be a folder we may use, and, to
    pull from, hold DVC data. Any other store is asked whether its root exists; an error
    (no network, no credentials, no such bucket) is the reason.
    """
    if remote.fs.protocol == "local":
        folder = Path(remote.path)
        if not folder.exists():
            return (f"the folder {folder} does not exist (is the share mounted? for a new remote, "
                    f"create it once: mkdir -p {folder})")
        if not folder.is_dir():
            return f"{folder} is not a folder"
        if not os.access(folder, os.R_OK | os.X_OK | (0 if pulling else os.W_OK)):
            return f"this user may not {'read' if pulling else 'write to'} the folder {folder}"
        if pulling and not (folder / "files").is_dir():
            return f"the folder {folder} holds no DVC data (nothing was pushed there, or the share is not mounted)"
        return None
    try:
        remote.fs.exists(remote.path)
    except Exception as error:  # whatever the store's client raises is the reason, in its own words
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
    return None


def cache_folders(repo) -> tuple[Path, Path]:
    """(the cache's object folder ``files/md5``, the run-cache's folder ``runs``) of an open DVC repo.

    DVC has no public interface for either: this is the one place that reads its internals
    (``repo.cache.local.path``, ``repo.stage_cache.cache_dir``), checked against DVC 3.67.1;
    tests/test_remote_script.py fails when a stage run no longer leaves its entry there.
    """
    return Path(repo.cache.local.path), Path(repo.stage_cache.cache_dir)


def run_outputs(objects: Path, runs: Path) -> set[str]:
    """The md5 of every object the run-cache entries under ``runs`` refer to that ``objects`` holds."""
    import json

    import yaml

    def held(name: str) -> bool:
        return (objects / name[:2] / name[2:]).is_file()

    found: set[str] = set()
    for entry in sorted(runs.glob("*/*/*")):
        for out in (yaml.safe_load(entry.read_text()) or {}).get("outs", []):
            name = out.get("md5")
            if not name or out.get("hash", "md5") != "md5" or not held(name):
                continue
            found.add(name)
            if name.endswith(".dir"):  # a folder: its manifest lists its files
                listing = json.loads((objects / name[:2] / name[2:]).read_text())
                found |= {item["md5"] for item in listing if held(item["md5"])}
    return found


def push_run_outputs(root: Path, name: str | None) -> int:
    """Send what the local run-cache's entries wrote to the remote; returns how many objects went."""
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo

    with Repo(str(root)) as repo:
        objects = {HashInfo("md5", value) for value in run_outputs(*cache_folders(repo))}
        if not objects:
            return 0
        try:
            result = repo.cloud.push(objects, remote=name)
        except Exception as error:  # the remote went away between DVC's push and this one
            raise UserError(f"pushing the run-cache's outputs failed ({type(error).__name__}: "
                            f"{str(error).strip()[:300]}); nothing local was lost, run the same command "
                            f"again once the remote answers.") from None
    if result.failed:
        raise UserError(f"{len(result.failed)} output(s) of the run-cache could not be pushed; "
                        f"run the same command again once the remote answers.")
    return len(result.transferred)


def dvc_command(verb: tuple[str, ...], rest: list[str]) -> list[str]:
    """The DVC command line: the verb, --run-cache (unless the user said otherwise), the rest."""
    run_cache = [] if {"--run-cache", "--no-run-cache"} & set(rest) else ["--run-cache"]
    return [sys.executable, "-m", "dvc", *verb, *run_cache, *rest]


def main(argv: list[str] | None = None, root: Path | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    root = Path(root or Path.cwd())
    verb, name, rest = parse(argv)
    remote = find_remote(root, name)
    reason = why_unreachable(remote, pulling=verb[-1] == "pull")
    where = f"the DVC remote '{remote.name}' ({remote.path})"
    if reason:
        raise UserError(f"{where} cannot be reached: {reason}; {RETRY}.")
    if verb == ("check",):
        print(f"{where} answers.")
        return 0
    command = dvc_command(verb, rest)
    done = subprocess.run(command, cwd=root)
    if done.returncode == 0 and verb[-1] == "push" and "--no-run-cache" not in rest:
        sent = push_run_outputs(root, remote.name)
        if sent:
            print(f"{sent} run-cache output file(s) pushed")
    if done.returncode != 0:
        print(f"error: `dvc {' '.join(command[3:])}` with {where} failed (exit {done.returncode}; DVC's "
              f"message is above). Nothing local was lost and every file that arrived is whole (DVC moves "
              f"each into place only once complete); run the same command again once the remote answers: "
              f"it transfers only what is still missing.", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    run_stage(lambda: sys.exit(main()))

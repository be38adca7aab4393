"""Provenance of a pipeline state: which commit, branch and DVC experiment produced it.

Tags (:data:`TAG_COMMIT`, ...) for the workspace's run (:func:`workspace_tags`) or for a
past git revision or DVC experiment (:func:`revision_tags`), and the real repository root
when DVC runs the pipeline in a temporary copy (:func:`real_root`). Reads git; writes nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import yaml

from lifecycle.core import numerics, paths
from lifecycle.core.errors import UserError

# Tags of a mirrored run. One run per pipeline state: the single-valued tags describe the
# newest mirror of it (its commit) or the first (its experiment name, which also names the
# run); the two lists keep every experiment and every commit that produced the state.
TAG_STATE = "pipeline.state"          # the state id (tracking.snapshot.pipeline_state)
TAG_COMMIT = "git.commit"             # the newest commit that produced the state
TAG_BRANCH = "git.branch"
TAG_DIRTY = "git.dirty"               # code or params differed from that commit
TAG_EXP_NAME = "dvc.exp_name"         # the first DVC experiment that produced the state
TAG_EXP_NAMES = "dvc.exp_names"       # every DVC experiment that produced it, space-separated, oldest first
TAG_COMMITS = "git.commits"           # every commit that produced it, likewise
TAG_BASELINE = "dvc.baseline_rev"
TAG_SOURCE = "mirror.source"          # pipeline (the mirror stage) or backfill <rev>
TAG_NUMERICS = "numerics."            # + stage: the machine that last ran it here (lifecycle/core/numerics.py), JSON


def real_root(root: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The repository the user works in, also when DVC runs the pipeline in a temporary copy.

    Queued and ``--temp`` experiments run in ``<repo>/.dvc/tmp/exps/<tmpdir>``, a fresh
    ``git init`` that DVC fills by pushing commits into it: its git common dir is its own, so
    git cannot lead back to ``<repo>``. DVC says where it is in ``DVC_ROOT`` (the parent repo
    for temporary runs); the folder layout says the same when the variable is missing.
    """
    root = Path(root or paths.ROOT).resolve()
    environ = os.environ if environ is None else environ
    dvc_root = environ.get("DVC_ROOT")
    if dvc_root:
        parent = Path(dvc_root).resolve()
        if parent != root and (parent / ".dvc").is_dir() and root.is_relative_to(parent / ".dvc"):
            return parent
    parts = root.parts
    for index in range(1, len(parts) - 1):
        if parts[index] == ".dvc" and parts[index + 1] == "tmp":
            return Path(*parts[:index])
    return root


def _git(cwd: Path, *args: str, strip: bool = True) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() if strip else result.stdout


def pipeline_outputs(lock_file: Path) -> set[str]:
    """Paths the pipeline writes: every out in dvc.lock, dvc.lock itself, the mirrored folders."""
    outputs = {"dvc.lock", *paths.MIRRORED_FOLDERS}
    try:
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return outputs
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            outputs.add(str(out.get("path", "")).rstrip("/"))
    return outputs


def is_dirty(root: Path) -> bool | None:
    """Whether tracked files other than the pipeline's outputs differ from HEAD (None: no git).

    Outputs (metrics, dvc.lock, ...) change in every run, so they do not count: dirty means
    the code or params that produced the run are not those of the commit.
    """
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "-z", strip=False)
    if status is None:
        return None
    outputs = pipeline_outputs(Path(root) / "dvc.lock")
    entries = status.split("\0")
    changed = [entry[3:] for entry in entries if len(entry) > 3 and entry[2] == " "]
    for path in changed:
        if Path(path).name == ".gitignore":
            continue
        if not any(path == out or path.startswith(f"{out}/") for out in outputs):
            return True
    return False


def workspace_tags(root: Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Provenance of the pipeline running in ``root`` (a workspace or DVC's temporary copy)."""
    root = Path(root or paths.ROOT)
    environ = os.environ if environ is None else environ
    branch = _git(root, "symbolic-ref", "--short", "-q", "HEAD")
    real = real_root(root, environ)
    if not branch and real != root.resolve():  # DVC's copy has a detached HEAD: the user's branch
        branch = _git(real, "symbolic-ref", "--short", "-q", "HEAD")
    dirty = is_dirty(root)
    return {
        TAG_COMMIT: _git(root, "rev-parse", "HEAD") or "",
        TAG_BRANCH: branch or "",
        TAG_DIRTY: "" if dirty is None else str(dirty).lower(),
        TAG_EXP_NAME: environ.get("DVC_EXP_NAME", ""),
        TAG_BASELINE: environ.get("DVC_EXP_BASELINE_REV", ""),
        TAG_SOURCE: "pipeline",
        **numerics_tags(root),
    }


def numerics_tags(root: Path) -> dict[str, str]:
    """``numerics.<stage>``: the whole numerics fingerprint each torch stage left in ``root``.

    Tags, not part of the pipeline state: two machines that compute the same bytes make one
    state (one run), whose tags say which machine mirrored it last. A revision backfilled
    from git has none: the machine that computed it is not in the repository.
    """
    return {f"{TAG_NUMERICS}{stage}": json.dumps({k: v for k, v in found.items() if k != "stage"}, sort_keys=True)
            for stage, found in numerics.recorded(root).items()}


def experiment_refs(root: Path) -> dict[str, tuple[str, str]]:
    """DVC experiments of the repository: commit -> (experiment name, baseline commit)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            listing = repo.experiments.ls(all_commits=True)
    except DvcException as error:  # another dvc command holds the repository's lock, or no DVC here
        raise UserError(f"cannot list the DVC experiments of {root}: {str(error).splitlines()[0]}") from None
    return {commit: (name, baseline) for baseline, found in listing.items() for name, commit in found if commit}


def revision_tags(root: Path, rev: str) -> tuple[str, dict[str, str]]:
    """The commit of a git revision or DVC experiment name, and its provenance tags."""
    experiments = experiment_refs(root)
    commit = _git(root, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}")
    if commit is None:
        named = [sha for sha, (name, _) in experiments.items() if name == rev]
        if not named:
            raise UserError(
                f"'{rev}' is neither a git revision nor a DVC experiment of {root} "
                "(see git log and dvc exp list --all-commits)."
            )
        commit = named[0]
    name, baseline = experiments.get(commit, ("", ""))
    if _git(root, "show-ref", "--verify", "-q", f"refs/heads/{rev}") is not None:
        branch = rev
    else:
        listing = _git(root, "branch", "--contains", baseline or commit, "--format=%(refname:short)") or ""
        branch = ",".join(listing.split()[:3])
    return commit, {
        TAG_COMMIT: commit,
        TAG_BRANCH: branch,
        TAG_DIRTY: "false",
        TAG_EXP_NAME: name,
        TAG_BASELINE: baseline,
        TAG_SOURCE: f"backfill {rev}",
    }

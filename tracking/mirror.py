"""The mirror's commands: spool a pipeline state (the workspace, or past revisions and DVC
experiments), then send everything the spool holds. Used by ``stages/mirror.py``.

Never fails the pipeline: what cannot be sent stays in the spool, with one warning, and is
sent by the next mirror or by ``python -m stages.mirror --flush``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from lifecycle.core import paths
from tracking.provenance import real_root, revision_tags, workspace_tags
from tracking.sink import describe_error, send
from tracking.spool import (
    LOCK_WAIT_S,
    copy_revision,
    copy_workspace,
    spool_dir,
    spool_entries,
    spool_lock,
    spool_state,
)
from tracking.store import display_uri, experiment_name, mlflow_settings, tracking_uri, unreachable


@dataclasses.dataclass
class FlushReport:
    """What a flush sent (run name, run id, uri) and what it kept in the spool (entry, uri, reason)."""

    spool: Path
    sent: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    kept: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def warning(self) -> str | None:
        """One warning for everything kept, or None."""
        if not self.kept:
            return None
        reasons = sorted({f"{display_uri(uri)}: {reason}" for _, uri, reason in self.kept})
        return (
            f"could not mirror {len(self.kept)} pipeline run(s) to MLflow ({'; '.join(reasons)}); "
            f"kept in {self.spool}, sent by the next mirror or by: python -m stages.mirror --flush"
        )


def flush(spool: Path | None = None, lock_wait_s: float = LOCK_WAIT_S) -> FlushReport:
    """Send every spooled entry, oldest first; each one sent leaves the spool."""
    spool = Path(spool or spool_dir())
    report = FlushReport(spool)
    with spool_lock(spool, lock_wait_s) as locked:
        entries = spool_entries(spool)
        if not locked:
            report.kept += [(e.folder.name, e.record["tracking_uri"], "another mirror is sending") for e in entries]
            return report
        down: dict[str, str] = {}
        for entry in entries:
            uri = entry.record["tracking_uri"]
            if uri not in down:
                reason = unreachable(uri)
                if reason:
                    down[uri] = reason
            if uri in down:
                report.kept.append((entry.folder.name, uri, down[uri]))
                continue
            try:
                with mlflow_settings():
                    run_id, name = send(entry)
            except Exception as error:  # a tracking failure never fails the pipeline
                report.kept.append((entry.folder.name, uri, describe_error(error)))
                if unreachable(uri):
                    down[uri] = describe_error(error)
                continue
            shutil.rmtree(entry.folder, ignore_errors=True)
            report.sent.append((name, run_id, uri))
    return report


def mirror_workspace(root: Path | None = None, environ: Mapping[str, str] | None = None) -> FlushReport:
    """Spool the pipeline state of ``root`` (the workspace or DVC's temporary copy), then flush."""
    root = Path(root or paths.ROOT)
    environ = os.environ if environ is None else environ
    spool = spool_dir(root, environ)
    tags = workspace_tags(root, environ)
    uri = tracking_uri(root, environ)
    try:
        spool_state(spool, copy_workspace(root), tags, uri, experiment_name(environ), move_alias=True)
    except Exception as error:  # even then the pipeline goes on; the warning says what was lost
        report = flush(spool)
        report.kept.append((str(root), uri, f"could not even spool it: {describe_error(error)}"))
        return report
    return flush(spool)


def mirror_revisions(
    revs: list[str], root: Path | None = None, environ: Mapping[str, str] | None = None
) -> FlushReport:
    """Backfill: spool the pipeline state of each git revision or DVC experiment, then flush.

    Does not move the ``candidate`` alias (history is not a new candidate) unless the
    registered model has none yet.
    """
    root = real_root(root, environ)
    environ = os.environ if environ is None else environ
    spool = spool_dir(root, environ)
    for rev in revs:
        commit, tags = revision_tags(root, rev)
        uri = tracking_uri(root, environ)
        spool_state(spool, copy_revision(root, commit), tags, uri, experiment_name(environ), move_alias=False)
    return flush(spool)

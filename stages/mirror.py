"""Mirror (the last stage): copy this pipeline state into MLflow, so runs can be compared in
``mlflow ui`` and the selected model deployed from the Model Registry. DVC's files stay the
source of truth; a tracking failure never fails the pipeline (the state waits in the spool).

in: params.yaml, metrics/, plots/, models/best/ (and dvc.lock as an artifact)
out: one MLflow run per pipeline state (``MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db at
     the real repository root), and the receipt .mlflow-receipt.json (gitignored): the state's
     id, so that DVC runs this stage on a fresh clone and skips it when nothing changed
params: all of params.yaml but promote.* (each key becomes an MLflow param; the gate's settings are no
        part of a model's state)

    python -m stages.mirror                     # the workspace (what `dvc repro` runs)
    python -m stages.mirror --rev v1 --rev exp-a  # backfill git revisions / DVC experiments
    python -m stages.mirror --all-experiments   # backfill every DVC experiment
    python -m stages.mirror --flush             # send what the spool holds (exit 1 if any is left)
"""
from __future__ import annotations

import argparse
import sys

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import write_json_atomic
from tracking import mirror
from tracking.provenance import experiment_refs, real_root
from tracking.snapshot import pipeline_state
from tracking.store import display_uri


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.mirror", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", default=[], metavar="REV",
                        help="a git revision or DVC experiment name to mirror after the fact (repeatable)")
    parser.add_argument("--all-experiments", action="store_true", help="mirror every DVC experiment of the repository")
    parser.add_argument("--flush", action="store_true", help="only send what the spool holds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.flush:
        report = mirror.flush()
    elif args.rev or args.all_experiments:
        revs = list(args.rev)
        if args.all_experiments:
            revs += sorted(name for name, _ in experiment_refs(real_root()).values())
        report = mirror.mirror_revisions(revs)
    else:
        report = mirror.mirror_workspace()
        write_json_atomic({"pipeline_state": pipeline_state(paths.ROOT)}, paths.MIRROR_RECEIPT)
    for name, run_id, uri in report.sent:
        print(f"mirror: {name} -> MLflow run {run_id} at {display_uri(uri)}")
    if not report.sent and not report.kept:
        print("mirror: nothing to send")
    warning = report.warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
        if args.flush:
            raise SystemExit(1)


if __name__ == "__main__":
    run_stage(main)

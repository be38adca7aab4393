"""Mirror (the last stage): copy this pipeline state into MLflow, so runs can be compared in
``mlflow ui`` and the selected model deployed from the Model Registry. DVC's files stay the
source of truth; a tracking failure never fails the pipeline (the state waits in the spool).

in: params.yaml, metrics/, plots/, models/best/ (and dvc.lock as an artifact)
out: one MLflow run per pipeline state (``MLFLOW_TRACKING_URI``, else sqlite:///mlflow.db at
     the real repository root); nothing in the repository
params: all of params.yaml (each key becomes an MLflow param)

    python -m stages.mirror                     # the workspace (what `dvc repro` runs)
    python -m stages.mirror --rev v1 --rev exp-a  # backfill git revisions / DVC experiments
    python -m stages.mirror --all-experiments   # backfill every DVC experiment
    python -m stages.mirror --flush             # send what the spool holds (exit 1 if any is left)
"""
from __future__ import annotations

import argparse
import sys

from lifecycle import tracking
from lifecycle.errors import run_stage


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
        report = tracking.flush()
    elif args.rev or args.all_experiments:
        revs = list(args.rev)
        if args.all_experiments:
            revs += sorted(name for name, _ in tracking.experiment_refs(tracking.real_root()).values())
        report = tracking.mirror_revisions(revs)
    else:
        report = tracking.mirror_workspace()
    for name, run_id, uri in report.sent:
        print(f"mirror: {name} -> MLflow run {run_id} at {tracking.display_uri(uri)}")
    if not report.sent and not report.kept:
        print("mirror: nothing to send")
    warning = report.warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
        if args.flush:
            raise SystemExit(1)


if __name__ == "__main__":
    run_stage(main)

"""Labels from a labelling tool: ``python -m serving.feedback labels.csv [--log-dir served]``.

The CSV has the columns ``request_id,label`` (the ids /predict answered with). Each row is
checked and recorded as ``POST /feedback`` would (:func:`lifecycle.prediction_log.label_request`):
an id no longer in the log or a label the model does not know is listed, not recorded. Exit 1
when any row was refused.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import pandas as pd

from lifecycle import prediction_log
from lifecycle.core import paths
from lifecycle.core.errors import UserError, run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.feedback", description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", type=Path, help="a CSV with the columns request_id,label")
    parser.add_argument("--log-dir", type=Path, default=paths.SERVED, help="the prediction log (default: served/)")
    args = parser.parse_args(argv)
    try:
        rows = pd.read_csv(args.csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {args.csv}: {error}") from None
    missing = {"request_id", "label"} - set(rows.columns)
    if missing:
        raise UserError(f"{args.csv} has no column {', '.join(sorted(missing))} (it needs request_id,label).")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    recorded, refused = 0, []
    for line, row in enumerate(rows.itertuples(index=False), start=2):
        try:
            prediction_log.label_request(args.log_dir, row.request_id.strip(), row.label.strip(), f"csv:{args.csv.name}", now)
            recorded += 1
        except prediction_log.LabelRefused as error:
            refused.append(f"{args.csv.name}:{line}: {error}")
    print(f"feedback: {recorded} label(s) recorded in {args.log_dir / prediction_log.FEEDBACK_FILE}"
          + (f"; {len(refused)} refused:" if refused else ""))
    for problem in refused:
        print(f"  {problem}", file=sys.stderr)
    if refused:
        raise SystemExit(1)


if __name__ == "__main__":
    run_stage(main)

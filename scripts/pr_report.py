"""Write one markdown report for a pull request: params diff, metrics diff, changed plots.

    python scripts/pr_report.py --base origin/main --out pr-report.md [--plots-dir pr-plots] [--plots-url URL]

Compares the workspace (after ``dvc repro``) with ``--base``, or ``--head`` with it when given.
``--plots-dir`` also renders every plot, old against new, as ``dvc plots diff`` HTML (the CI
workflow uploads it as an artifact and links it with ``--plots-url``). Without ``--out`` the
report goes to stdout. The logic lives in lifecycle/report.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file, from anywhere

from lifecycle.errors import run_stage  # noqa: E402
from lifecycle.io import write_bytes_atomic  # noqa: E402
from lifecycle.report import build_report, render_plots  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the revision to compare against (default: main)")
    parser.add_argument("--head", default=None, help="the revision to compare (default: the workspace)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the repository (default: the current folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here (default: stdout)")
    parser.add_argument("--plots-dir", type=Path, default=None, help="also render the plots as HTML into this folder")
    parser.add_argument("--plots-url", default=None, help="where readers find the rendered plots (linked in the report)")
    parser.add_argument("--title", default=None, help="the report's heading")
    args = parser.parse_args()

    report = build_report(args.repo, args.base, args.head, args.plots_url, args.title)
    if args.plots_dir is not None:
        render_plots(args.repo, args.base, args.head, args.plots_dir)
    if args.out is None:
        sys.stdout.write(report)
    else:
        write_bytes_atomic(report.encode(), args.out)
        print(f"pr_report: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)

"""Did this run reproduce a revision's numbers, within their noise?

    python -m scripts.reproduce_check [REV]      # REV: default HEAD

Bits cannot always match: another CPU vendor, CUDA against CPU, arm64 against x86-64, a new
torch release change the last digits of training, and then every metric in metrics/. This
compares the workspace's metrics with REV's (``dvc metrics diff REV --all``) and, for each
headline metric, says whether the workspace's value lies inside REV's 95% interval
(``<metric>_low``, ``<metric>_high``, written by evaluate; the rule is scripts/noise.py's, the
one the pull-request report uses). Numbers without an interval that changed are listed, not
judged.

exit 0: every headline metric reproduced within noise. exit 1: at least one is beyond noise
or missing. exit 2: REV is not a commit, or has no metrics with intervals to judge by.
Nothing in the pipeline imports this file, so editing it reruns no stage.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file, from anywhere

from lifecycle.core.errors import UserError, run_stage  # noqa: E402
from scripts.noise import BEYOND, MISSING, has_intervals, interval_text, judge, metrics_diff, unjudged_changes  # noqa: E402

EXIT_BEYOND_NOISE = 1


def check(repo: Path, revision: str) -> tuple[list[str], bool]:
    """The report's lines, and whether everything reproduced within noise."""
    found = subprocess.run(["git", "rev-parse", "--short", "--verify", "--quiet", f"{revision}^{{commit}}"],
                           cwd=repo, capture_output=True, text=True)
    if found.returncode != 0:
        raise UserError(f"'{revision}' is not a commit of the repository at {repo}.")
    diff = metrics_diff(repo, revision)
    if not has_intervals(diff, "old"):
        raise UserError(f"the metrics at {revision} carry no intervals (<metric>_low, <metric>_high), so there is "
                        f"nothing to judge a difference by; compare with a revision whose evaluate wrote them.")
    judgements = judge(diff)
    width = max(len(f"{j.file}:{j.key}") for j in judgements)
    lines = [f"workspace against {revision} ({found.stdout.strip()}): is each headline metric inside {revision}'s 95% interval?",
             f"{'metric':<{width}}  {revision:>8}  {'interval':<18}  {'workspace':>9}  {'diff':>8}  verdict"]
    for j in judgements:
        new = "-" if j.new is None else f"{j.new:.4f}"
        change = "-" if j.new is None else f"{j.new - j.old:+.4f}"
        lines.append(f"{j.file + ':' + j.key:<{width}}  {j.old:>8.4f}  {interval_text(j):<18}  {new:>9}  {change:>8}  {j.verdict}")
    failed = [j for j in judgements if j.verdict in (BEYOND, MISSING)]
    others = unjudged_changes(diff)
    if others:
        lines.append(f"not judged (no interval), changed: {', '.join(others)}")
    if failed:
        lines.append(f"NOT reproduced: {len(failed)} of {len(judgements)} headline metrics beyond noise or missing.")
    else:
        identical = all(j.new == j.old for j in judgements)
        lines.append(f"reproduced: all {len(judgements)} headline metrics " + ("identical." if identical else "within noise."))
    return lines, not failed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.reproduce_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", nargs="?", default="HEAD", help="the revision to compare with (default: HEAD)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the repository (default: the current folder)")
    args = parser.parse_args(argv)
    lines, reproduced = check(args.repo, args.revision)
    print("\n".join(lines))
    if not reproduced:
        raise SystemExit(EXIT_BEYOND_NOISE)


if __name__ == "__main__":
    run_stage(main)

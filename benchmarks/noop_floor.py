"""The no-op floor: a no-op ``dvc repro`` of this pipeline against one of a one-stage DVC repository.

    python benchmarks/noop_floor.py [--repo .] [--runs 7] [--profile]

Makes, in a temporary folder, the smallest DVC project there is (git + ``dvc init``, the
same ``core`` config as this repository: no analytics, no update check; one params file
with one key; one stage with one script dep and one output), and a second one with as many
such stages as this pipeline has (what DVC costs per stage, whatever the stage holds);
runs both once, then times ``dvc repro`` in each and in ``--repo`` (this repository, whose
pipeline must be up to date: run ``dvc repro`` first), in turn, ``--runs`` times each, and
prints the medians and ratios. Runs in turn share whatever load the machine has, so the
ratios mean something on a busy machine where the seconds do not.

``--profile`` adds where a no-op of ``--repo`` spends its time (``dvc repro --cprofile-dump``):
DVC's own start-up (imports, reading dvc.yaml and params), checking each stage's deps
and outs (hashing: state lookups, directory walks), and the rest.
"""
from __future__ import annotations

import argparse
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale import environment  # noqa: E402  (PATH with this interpreter first, no DVC_EXP_NAME)
from table_row import load_average, print_row  # noqa: E402

UP_TO_DATE = "Data and pipelines are up to date."

STAGE = """  square{index}:
    cmd: python square.py {index}
    deps:
      - square.py
    params:
      - number
    outs:
      - square{index}.txt
"""
SCRIPT = ('import sys, yaml\nn = yaml.safe_load(open("params.yaml"))["number"]\n'
          'open(f"square{sys.argv[1]}.txt", "w").write(f"{n * n}\\n")\n')


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=environment(), capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return result


def minimal_repository(folder: Path, stages: int = 1) -> Path:
    """The smallest DVC project with ``stages`` stages: each one dep, one param, one output; already reproduced."""
    folder.mkdir(parents=True)
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "bench@example.com"],
                    ["git", "config", "user.name", "bench"]):
        subprocess.run(command, cwd=folder, check=True)
    dvc(["init", "-q"], folder)
    dvc(["config", "core.analytics", "false"], folder)
    dvc(["config", "core.check_update", "false"], folder)
    (folder / "dvc.yaml").write_text("stages:\n" + "".join(STAGE.format(index=i) for i in range(stages)))
    (folder / "params.yaml").write_text("number: 7\n")
    (folder / "square.py").write_text(SCRIPT)
    dvc(["repro", "-q"], folder)
    return folder


def timed_noop(repo: Path) -> float:
    start = time.perf_counter()
    result = dvc(["repro"], repo)
    seconds = time.perf_counter() - start
    if UP_TO_DATE not in result.stdout:
        raise SystemExit(f"dvc repro in {repo} was not a no-op (run dvc repro there first):\n{result.stdout}")
    return seconds


def profile(repo: Path) -> None:
    """Where a no-op ``dvc repro`` of ``repo`` spends its time, by phase."""
    with tempfile.TemporaryDirectory() as scratch:
        dump = Path(scratch) / "repro.prof"
        dvc(["repro", "--cprofile-dump", str(dump)], repo)
        stats = pstats.Stats(str(dump))
    total = stats.total_tt

    def cumulative(fragment: str, function: str) -> float:
        return max((row[3] for (file, _, name), row in stats.stats.items()
                    if fragment in file and name == function), default=0.0)

    checking = cumulative("dvc/stage/__init__.py", "changed")
    deps = cumulative("dvc/stage/__init__.py", "changed_deps")
    outs = cumulative("dvc/stage/__init__.py", "changed_outs")
    builds = cumulative("dvc_data/hashfile/build.py", "build")
    print(f"profile of one no-op dvc repro in {repo} (inside the command; python start-up and imports before "
          f"dvc's main are not in it): {total:.2f} s")
    print(f"  checking stages for changes: {checking:.2f} s (deps {deps:.2f} s, outs {outs:.2f} s; "
          f"hashing paths, state lookups and directory walks included: {builds:.2f} s)")
    print(f"  everything else (reading dvc.yaml, params and dvc.lock, building the graph, locks, "
          f"the run-cache): {total - checking:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the pipeline to time (default: this repository)")
    parser.add_argument("--runs", type=int, default=7, help="no-op runs of each, alternating")
    parser.add_argument("--profile", action="store_true", help="also profile one no-op of --repo")
    args = parser.parse_args()
    stages = len(dvc(["stage", "list", "--name-only"], args.repo).stdout.split())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="noop-floor-") as scratch:
        repos = {
            "this pipeline": args.repo,
            "one-stage DVC repository": minimal_repository(Path(scratch) / "one"),
            f"{stages} one-dep stages, one param each": minimal_repository(Path(scratch) / "many", stages),
        }
        for repo in repos.values():  # warm each: the OS cache and DVC's state database
            timed_noop(repo)
        seconds: dict[str, list[float]] = {name: [] for name in repos}
        for _ in range(args.runs):
            for name, repo in repos.items():
                seconds[name].append(timed_noop(repo))
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    print(f"no-op dvc repro, median of {args.runs} alternating runs (load average before/after "
          f"{load_before:.1f}/{os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs):")
    for name, times in seconds.items():
        print(f"  {name + ':':<40} {medians[name]:.2f} s   {sorted(round(t, 2) for t in times)}")
    names = list(repos)
    print(f"  ratio, this pipeline / one stage: {medians[names[0]] / medians[names[1]]:.2f}; "
          f"{stages} minimal stages / one stage: {medians[names[2]] / medians[names[1]]:.2f}")
    if args.profile:
        profile(args.repo)
    print_row("no-op `dvc repro` of this pipeline / of a one-stage DVC repository, same run",
              f"{medians[names[0]]:.2f} s vs {medians[names[1]]:.2f} s: ratio **{medians[names[0]] / medians[names[1]]:.2f}** "
              f"({stages} minimal stages: {medians[names[2]] / medians[names[1]]:.2f}; load {load_average()})")


if __name__ == "__main__":
    main()

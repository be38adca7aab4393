"""The pipeline at Kaggle scale: wall time and peak memory of every stage at 2,000, 8,000 and 25,000 photos.

    python benchmarks/scale.py [--sizes 2000 8000 25000] [--workdir /tmp/scale] [--data-only]

1. Writes (or reuses) ``WORKDIR/photos``: 25,000 synthetic photos in the Kaggle Dogs vs.
   Cats layout (``cat.0.jpg``, ``dog.0.jpg``, ...; 300-500 px JPEGs of 20-60 KB, half cats;
   benchmarks/kaggle_photos.py).
2. For each size N, hard-links the first N photos (N/2 per class) into ``WORKDIR/kaggle-N``
   and makes a fresh copy of this repository's tracked files in ``WORKDIR/repo-N`` (its own
   git and DVC cache) with ``ingest.source: kaggle`` and ``ingest.path`` that folder, every
   model stage at one epoch (tune: one candidate of one epoch) and the other params as
   committed.
3. Runs every stage there in pipeline order with ``dvc repro --single-item STAGE``, so each
   figure is what a user waits for: the stage itself, plus DVC hashing its deps and caching
   its outs. Peak memory is polled (every 50 ms) as the summed RSS of the stage's process and
   its children (a process pool's workers included; pages they share are counted once per
   process, so this is an upper bound), and of the whole ``dvc`` command tree.
4. Times a no-op ``dvc repro`` (median of 3; with ``--data-only``, ``dvc repro synthesize``)
   and ``dvc status`` (of the whole pipeline, every dep hashed) at each size.

Prints a markdown table (the one in docs/scale.md) and writes the figures to
``benchmarks/results/scale.json``. The machine and its load (``os.getloadavg``) are printed
with them: on a shared machine, re-run when the load is low.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from kaggle_photos import photo_name, write_photos  # noqa: E402

DATA_STAGES = ["ingest", "preprocess", "impute", "featurize", "split", "synthesize"]
OTHER_STAGES = [
    "augment", "eda", "visualize",
    "pretrain", "train", "finetune", "frozen_features", "transfer", "tune",
    "evaluate@train", "evaluate@finetune", "evaluate@transfer", "select", "predict", "mirror",
]
# One epoch of every model stage; everything else as committed in params.yaml.
ONE_EPOCH = {
    "epochs": 1,
    "pretrain": {"epochs": 1},
    "finetune": {"epochs": 1},
    "transfer": {"epochs": 1},
    "tune": {"grid": {"lr": [0.001], "max_epochs": [1]}},
}
POLL_SECONDS = 0.05
MIB = 2**20


def deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def environment() -> dict[str, str]:
    """This interpreter's folder first on PATH (an activated virtualenv); no experiment name leaks in."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("DVC_EXP_NAME", None)
    return env


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=environment(), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd} ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def kaggle_folder(photos: Path, folder: Path, count: int) -> Path:
    """``folder`` holding exactly photos 0 .. count-1, hard-linked (no copy, no extra disk)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for index in range(count):
        os.link(photos / photo_name(index), folder / photo_name(index))
    return folder


def repository_copy(destination: Path, params: dict) -> Path:
    """The tracked files of this repository (no data, models, metrics, lock or cache) as a fresh git repository."""
    if destination.exists():
        shutil.rmtree(destination)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, tracked.split("\0")):
        source = ROOT / name
        if source.is_file() and not name.startswith(("metrics/", "plots/")) and name != "dvc.lock":
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    (destination / "params.yaml").write_text(yaml.safe_dump(deep_merge(committed, params), sort_keys=False))
    for command in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "bench@example.com"],
                    ["git", "config", "user.name", "bench"], ["git", "add", "-A"], ["git", "commit", "-qm", "scale"]):
        run(command, destination)
    return destination


class PeakMemory:
    """Polls a process tree until it ends: peak summed RSS of the tree, and of the stage's own subtree."""

    def __init__(self, root_pid: int, stage_marker: str) -> None:
        self.root = psutil.Process(root_pid)
        self.marker = stage_marker
        self.tree_peak = 0
        self.stage_peak = 0
        self._stage: psutil.Process | None = None
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while self.root.is_running() and self.root.status() != psutil.STATUS_ZOMBIE:
            self.tree_peak = max(self.tree_peak, _tree_rss(self.root))
            if self._stage is None:
                self._stage = self._find_stage()
            if self._stage is not None:
                self.stage_peak = max(self.stage_peak, _tree_rss(self._stage))
            time.sleep(POLL_SECONDS)

    def _find_stage(self) -> psutil.Process | None:
        try:
            children = self.root.children(recursive=True)
        except psutil.Error:
            return None
        for process in children:
            try:
                if self.marker in process.cmdline():
                    return process
            except psutil.Error:
                continue
        return None

    def join(self) -> None:
        self._thread.join()


def _tree_rss(root: psutil.Process) -> int:
    """Summed RSS of ``root`` and its descendants (0 for any that ended meanwhile)."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def measure_stage(repo: Path, stage: str) -> dict:
    """``dvc repro --single-item stage`` in ``repo``: wall seconds and peak memory."""
    command = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=repo, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    module = stage.split("@")[0]
    peak = PeakMemory(process.pid, f"stages.{module}")
    output, _ = process.communicate()
    seconds = time.perf_counter() - start
    peak.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {repo}:\n{output}")
    return {"stage": stage, "seconds": round(seconds, 2), "stage_peak_mib": round(peak.stage_peak / MIB), "dvc_tree_peak_mib": round(peak.tree_peak / MIB)}


def median_seconds(repo: Path, args: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run([sys.executable, "-m", "dvc", *args], repo)
        times.append(time.perf_counter() - start)
    if args[0] == "repro" and "up to date" not in result.stdout:
        raise SystemExit(f"dvc repro in {repo} was not a no-op:\n{result.stdout}")
    return round(statistics.median(times), 2)


def measure_size(workdir: Path, photos: Path, count: int, stages: list[str]) -> dict:
    folder = kaggle_folder(photos, workdir / f"kaggle-{count}", count)
    repo = repository_copy(workdir / f"repo-{count}",
                           deep_merge(ONE_EPOCH, {"ingest": {"source": "kaggle", "path": str(folder)}}))
    rows = []
    for stage in stages:
        row = measure_stage(repo, stage)
        rows.append(row)
        print(f"  {count:>6} {stage:<18} {row['seconds']:>7.1f} s  stage {row['stage_peak_mib']:>5} MiB  "
              f"with dvc {row['dvc_tree_peak_mib']:>5} MiB  (load {os.getloadavg()[0]:.1f})", flush=True)
    # A no-op of everything that ran: the whole pipeline, or with --data-only the data stages.
    noop_target = [] if stages[-1] == OTHER_STAGES[-1] else [stages[-1]]
    noop = median_seconds(repo, ["repro", *noop_target])
    status = median_seconds(repo, ["status"])
    data = [r for r in rows if r["stage"] in DATA_STAGES]
    return {
        "photos": count,
        "stages": rows,
        "data_stages_seconds": round(sum(r["seconds"] for r in data), 1),
        "data_stages_peak_mib": max(r["dvc_tree_peak_mib"] for r in data),
        "noop_repro_seconds": noop,
        "noop_repro_target": " ".join(["dvc repro", *noop_target]),
        "status_seconds": status,
    }


def table(results: list[dict]) -> str:
    sizes = [r["photos"] for r in results]
    head = "| stage | " + " | ".join(f"{n:,} photos: s / MiB" for n in sizes) + " |"
    lines = [head, "| --- |" + " --- |" * len(sizes)]
    for i, row in enumerate(results[0]["stages"]):
        cells = [f"{r['stages'][i]['seconds']:.1f} / {r['stages'][i]['stage_peak_mib']:,}" for r in results]
        lines.append(f"| `{row['stage']}` | " + " | ".join(cells) + " |")
    lines.append("| **data stages, ingest to synthesize** (s / peak MiB incl. dvc) | "
                 + " | ".join(f"**{r['data_stages_seconds']:.1f}** / {r['data_stages_peak_mib']:,}" for r in results) + " |")
    lines.append(f"| no-op `{results[0]['noop_repro_target']}`, median of 3 (s) | "
                 + " | ".join(f"{r['noop_repro_seconds']:.2f}" for r in results) + " |")
    lines.append("| `dvc status` of the whole pipeline, median of 3 (s) | " + " | ".join(f"{r['status_seconds']:.2f}" for r in results) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 25000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--data-only", action="store_true", help="only the data stages, ingest to synthesize")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args()
    if any(n % 2 for n in args.sizes):
        raise SystemExit("--sizes must be even (half cats, half dogs)")
    stages = DATA_STAGES if args.data_only else DATA_STAGES + OTHER_STAGES

    start = time.perf_counter()
    sizes = write_photos(args.workdir / "photos", max(args.sizes))
    print(f"photos: {len(sizes)} in {args.workdir / 'photos'}, {sum(sizes) / MIB:.0f} MiB "
          f"({time.perf_counter() - start:.0f} s, existing ones reused)", flush=True)
    machine = {"cpus": len(os.sched_getaffinity(0)), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
               "python": platform.python_version(), "load_before": os.getloadavg()}
    results = [measure_size(args.workdir, args.workdir / "photos", n, stages) for n in args.sizes]
    machine["load_after"] = os.getloadavg()
    print(table(results))
    print(f"machine: {machine['cpus']} CPUs, {machine['memory_gib']} GiB; load average (1, 5, 15 min) "
          f"before {machine['load_before']}, after {machine['load_after']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The row of docs/benchmarks.md a benchmark measures, printed last, so the table is refreshed
by pasting, never retyped: ``| what | figure | command | machine | date |``.

The machine is the CPU's model name (/proc/cpuinfo) and its core count, or the CUDA card when
the figure was measured on one; the date is today's (UTC). Standard library only: the
benchmarks that print a row run with most of the project's dependencies blocked.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return model or platform.processor() or platform.machine()


def machine(gpu: str | None = None) -> str:
    """``Intel(R) Xeon(R) ..., 2 cores`` (the cores this process may use), or the card's name on a GPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    host = f"{cpu_model()}, {cores} cores"
    return f"{gpu} (host: {host})" if gpu else host


def command() -> str:
    """The command line that ran this benchmark, as a reader would type it."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, sys.argv[1:])])


def load_average() -> str:
    """The 1-minute load average: on a shared machine the figures move with it."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


def row(what: str, figure: str, gpu: str | None = None) -> str:
    """One Markdown table row; a ``|`` inside a cell is escaped."""
    cells = [what, figure, f"`{command()}`", machine(gpu), datetime.datetime.now(datetime.timezone.utc).date().isoformat()]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def print_row(what: str, figure: str, gpu: str | None = None) -> None:
    print(f"docs/benchmarks.md row:\n{row(what, figure, gpu)}")

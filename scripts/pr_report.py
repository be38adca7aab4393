"""Write one markdown report for a pull request: params diff, metrics diff, changed plots.

    python scripts/pr_report.py --base origin/main --out pr-report.md [--plots-dir pr-plots] [--plots-url URL]

Compares the workspace (after ``dvc repro``) with ``--base``, or ``--head`` with it when given.
``--plots-dir`` draws each changed plot, old against new, as a PNG in that folder and embeds it
in the report with a link relative to the report (``![...](pr-plots/<plot>.png)``), which
``cml comment update`` uploads with the comment; a changed image plot is copied there, old and
new. The folder also gets every plot as ``dvc plots diff`` HTML (the CI workflow uploads it as
an artifact and links it with ``--plots-url``). Without ``--out`` the report goes to stdout and
links are relative to the current folder. Nothing in the pipeline imports this file, so
editing it reruns no stage.

The report holds three sections, each computed by DVC from git alone (metrics and plot data
are committed, ``cache: false``), so it works offline and on a fresh CI checkout:

- params: ``dvc params diff <base> --md``, the knobs the change turned;
- metrics: ``dvc metrics diff <base> --md``, what they did to the numbers, and below it each
  changed headline metric marked beyond or within noise: whether the new value lies inside
  base's 95% interval (``<metric>_low``/``_high``; the rule is scripts/noise.py's, the one
  ``python -m scripts.reproduce_check`` uses);
- plots: ``dvc plots diff <base> --json``, reduced to the plots whose data changed, each with
  a small table of what moved (every row when the data is short, the last, lowest and
  highest value of each numeric column when it is a long curve), and with ``--plots-dir`` an
  image of it, old against new (scripts/pr_plots.py draws it from the same JSON).

The workspace (or ``head``) is compared against ``base``; in CI the workspace is the pull
request's checkout after ``dvc repro``. A DVC command that fails puts its error into its
section instead of losing the rest of the report.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file, from anywhere

from lifecycle.core.errors import UserError, run_stage  # noqa: E402
from lifecycle.core.io import write_bytes_atomic  # noqa: E402
from scripts.noise import BEYOND, has_intervals, interval_text, judge, metrics_diff  # noqa: E402
from scripts.pr_plots import file_stem, render_vega  # noqa: E402

MARKER = "<!-- dvc-pr-report -->"  # lets the workflow update its own comment instead of adding one per push
WORKSPACE = "workspace"             # DVC's name for the uncommitted state
SHORT_DATA_ROWS = 12                # plots with at most this many rows are shown row by row


@dataclasses.dataclass
class PlotChange:
    name: str
    status: str                       # "changed", "added" or "removed"
    kind: str                         # "vega" (data) or "image"
    table: str = ""                   # markdown: what moved
    spec: dict = dataclasses.field(default_factory=dict)   # the Vega-Lite spec, without its data
    old: Any = None                   # base's rows (vega) or file bytes (image); None: not there
    new: Any = None                   # the head's, likewise
    images: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (revision, caption, link) once drawn


def run_dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)


def check_revision(repo: Path, revision: str) -> str:
    """The short hash of ``revision``, or a :class:`UserError` naming it."""
    result = subprocess.run(
        ["git", "rev-parse", "--short", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=repo, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise UserError(
            f"'{revision}' is not a commit of the repository at {repo}; fetch it first (in CI: actions/checkout with fetch-depth: 0)."
        )
    return result.stdout.strip()


def _dvc_section(repo: Path, args: list[str], nothing: str) -> str:
    result = run_dvc(repo, *args)
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}").splitlines()[-1]
        print(f"warning: dvc {' '.join(args)} failed: {message}", file=sys.stderr)
        return f"> :warning: `dvc {' '.join(args)}` failed: {message}"
    table = result.stdout.strip()
    header_only = sum(line.startswith("|") for line in table.splitlines()) <= 2  # dvc prints an empty table
    return nothing if header_only else table


def revisions(base: str, head: str | None) -> list[str]:
    return [base] if head is None else [base, head]


def params_section(repo: Path, base: str, head: str | None = None) -> str:
    return _dvc_section(repo, ["params", "diff", *revisions(base, head), "--md"], "_No param changed._")


def metrics_section(repo: Path, base: str, head: str | None = None) -> str:
    return _dvc_section(repo, ["metrics", "diff", *revisions(base, head), "--md"], "_No metric changed._")


def noise_section(repo: Path, base: str, head: str | None = None) -> str:
    """Each changed headline metric, marked beyond or within noise against base's interval."""
    try:
        diff = metrics_diff(repo, base, head)
    except UserError as error:
        print(f"warning: {error}", file=sys.stderr)
        return f"> :warning: {error}"
    if not has_intervals(diff, "old"):
        return f"_`{base}`'s metrics carry no intervals, so no change can be judged against its noise._"
    judgements = judge(diff)
    changed = [j for j in judgements if j.new != j.old]
    if not changed:
        return f"_No headline metric changed ({len(judgements)} compared)._"
    beyond = sum(j.verdict == BEYOND for j in changed)
    rows = [[f"`{j.file}:{j.key}`", _cell(j.old), interval_text(j), _cell(j.new),
             "-" if j.new is None else f"{j.new - j.old:+.4f}",
             f"**{j.verdict}**" if j.verdict != "within noise" else j.verdict] for j in changed]
    table = _markdown(["headline metric", base, f"{base}'s 95% interval", head or WORKSPACE, "change", "noise"], rows)
    return (f"{len(changed)} of {len(judgements)} headline metrics changed, {beyond} beyond noise (the new value "
            f"outside `{base}`'s 95% interval):\n\n{table}")


def plot_changes(repo: Path, base: str, head: str | None = None) -> tuple[list[PlotChange], list[str], list[str]]:
    """The plots whose data differ between ``base`` and the head, the unchanged ones, and errors."""
    head_name = head or WORKSPACE
    with tempfile.TemporaryDirectory() as images:
        result = run_dvc(repo, "plots", "diff", *revisions(base, head), "--json", "-o", images)
        if result.returncode != 0:
            message = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
            return [], [], [f"`dvc plots diff` failed: {message[0]}"]
        document = json.loads(result.stdout or "{}")
        changes, unchanged = [], []
        for name, entries in sorted(document.get("data", {}).items()):
            change = _compare_plot(name, entries, base, head_name)
            if change is None:
                unchanged.append(name)
            else:
                changes.append(change)
    errors = sorted({_describe_error(error) for error in document.get("errors", []) if error.get("rev") == head_name})
    return changes, unchanged, errors


def _describe_error(error: dict[str, Any]) -> str:
    where = error.get("source") or error.get("name") or "plots"
    return f"`{where}` could not be read at {error.get('rev')}: {error.get('msg') or error.get('type')}"


def _compare_plot(name: str, entries: list[dict[str, Any]], base: str, head: str) -> PlotChange | None:
    kind = entries[0].get("type", "vega") if entries else "vega"
    if kind == "image":
        files = {entry["revisions"][0]: _read(entry.get("url")) for entry in entries}
        old, new = files.get(base), files.get(head)
        status = _status(old, new)
        return None if status is None else PlotChange(name, status, "image", old=old, new=new)
    rows = {base: [], head: []}
    for entry in entries:
        for row in entry.get("content", {}).get("data", {}).get("values", []):
            if row.get("rev") in rows:
                rows[row["rev"]].append({k: v for k, v in row.items() if k != "rev"})
    present = {rev for entry in entries for rev in entry.get("revisions", [])}
    old = rows[base] if base in present else None
    new = rows[head] if head in present else None
    status = _status(old, new)
    if status is None:
        return None
    spec = {key: value for key, value in entries[0].get("content", {}).items() if key != "data"}
    return PlotChange(name, status, "vega", data_table(old or [], new or [], base, head), spec, old, new)


def _read(url: str | None) -> bytes | None:
    """An image plot's bytes (DVC wrote them to a temporary folder), None when the revision has none."""
    return Path(url).read_bytes() if url and Path(url).is_file() else None


def _status(old: Any, new: Any) -> str | None:
    if old is None and new is None:
        return None
    if old is None:
        return "added"
    if new is None:
        return "removed"
    return None if old == new else "changed"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    number = _number(value)
    if number is not None:
        return f"{number:.5g}"
    return str(value).replace("|", "\\|")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def data_table(old: list[dict], new: list[dict], base: str, head: str) -> str:
    """What moved in a plot's data: row by row when short, a summary per column when long."""
    columns = list(dict.fromkeys([key for row in old + new for key in row]))
    if not old or not new:  # an added or removed plot: its data, no arrows
        old = new = old or new
    if max(len(old), len(new)) <= SHORT_DATA_ROWS:
        rows = []
        for i in range(max(len(old), len(new))):
            before = old[i] if i < len(old) else {}
            after = new[i] if i < len(new) else {}
            cells = []
            for column in columns:
                a, b = before.get(column), after.get(column)
                cells.append(_cell(b) if a == b else f"{_cell(a)} → {_cell(b)}")
            rows.append(cells)
        return _markdown(columns, rows)
    numeric = [c for c in columns if all(_number(row.get(c)) is not None for row in old + new if c in row)]
    rows = []
    for column in numeric:
        values = {rev: [_number(row[column]) for row in data if column in row] for rev, data in ((base, old), (head, new))}
        if values[base] == values[head]:
            continue  # the x axis, or a series the change left alone
        cells = [f"`{column}`", f"{len(old)} → {len(new)}"]
        for pick in (lambda v: v[-1], min, max):
            a = pick(values[base]) if values[base] else None
            b = pick(values[head]) if values[head] else None
            cells.append(_cell(b) if a == b else f"{_cell(a)} → {_cell(b)}")
        rows.append(cells)
    if not rows:  # only text columns moved (a confusion matrix's rows): its drawing shows it, a table cannot
        return ""
    return _markdown(["column", "rows", "last", "lowest", "highest"], rows)


def plots_section(changes: list[PlotChange], unchanged: list[str], errors: list[str], plots_url: str | None) -> str:
    parts = []
    if not changes:
        parts.append("_No plot changed._")
    else:
        count = len(changes) + len(unchanged)
        parts.append(f"{len(changes)} of {count} plots changed:")
        for change in changes:
            note = "image" if change.kind == "image" else "data"
            parts.append(f"\n**`{change.name}`** ({note} {change.status})")
            if change.images:
                parts.append("\n" + _embedded(change.images))
            if change.table:
                parts.append("\n" + change.table)
    if unchanged and changes:
        parts.append("\nUnchanged: " + ", ".join(f"`{name}`" for name in unchanged) + ".")
    parts += [f"\n> :warning: {error}" for error in errors]
    if plots_url:
        parts.append(f"\n[All plots rendered, old against new]({plots_url}) (`dvc plots diff` HTML).")
    return "\n".join(parts)


def _embedded(images: list[tuple[str, str, str]]) -> str:
    """Markdown showing the drawn images: one line, or a table with a column per revision."""
    if len(images) == 1:
        _, caption, link = images[0]
        return f"![{caption}]({link})"
    return _markdown([f"`{revision}`" for revision, _, _ in images], [[f"![{caption}]({link})" for _, caption, link in images]])


def draw_changes(changes: list[PlotChange], base: str, head: str, out_dir: Path, link_base: Path) -> None:
    """Write each changed plot as images into ``out_dir`` and note their links relative to ``link_base``.

    A data plot becomes one PNG (old against new); an image plot is copied, old and new, under
    its own extension. File names come from the plot names, so a rerun rewrites the same files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    for change in changes:
        if change.kind == "image":
            stem, suffix = file_stem(str(Path(change.name).with_suffix("")), taken), Path(change.name).suffix.lower() or ".png"
            drawn = [(rev, f"{change.name} at {rev}", out_dir / f"{stem}.{side}{suffix}", data)
                     for rev, side, data in ((base, "old", change.old), (head, "new", change.new)) if data is not None]
        else:
            png = render_vega(change.name, change.spec, change.old, change.new, base, head)
            drawn = [(head, f"{change.name}: {base} against {head}", out_dir / f"{file_stem(change.name, taken)}.png", png)]
        for revision, caption, path, data in drawn:
            write_bytes_atomic(data, path)
            link = Path(os.path.relpath(path.resolve(), link_base.resolve())).as_posix()
            change.images.append((revision, caption.replace("]", ")").replace("[", "("), link))


def render_plots(repo: Path, base: str, head: str | None, out_dir: Path) -> bool:
    """Write ``dvc plots diff``'s HTML page (index.html and images) into ``out_dir``."""
    result = run_dvc(repo, "plots", "diff", *revisions(base, head), "-o", str(out_dir.resolve()))
    if result.returncode != 0:
        print(f"warning: dvc plots diff -o {out_dir} failed: {result.stderr.strip()}", file=sys.stderr)
    return result.returncode == 0


def build_report(repo: Path, base: str, head: str | None = None, plots_url: str | None = None, title: str | None = None,
                 plots_dir: Path | None = None, link_base: Path | None = None) -> str:
    """The whole markdown report comparing ``head`` (default: the workspace) against ``base``.

    With ``plots_dir``, each changed plot is drawn there and embedded, linked relative to
    ``link_base`` (the report's folder; default: the current one).
    """
    base_hash = check_revision(repo, base)
    head_label = WORKSPACE if head is None else head
    head_hash = check_revision(repo, head or "HEAD")
    changes, unchanged, errors = plot_changes(repo, base, head)
    if plots_dir is not None:
        draw_changes(changes, base, head_label, plots_dir, link_base or Path.cwd())
    sections = [
        MARKER,
        f"## {title or 'DVC report'}: `{head_label}` ({head_hash}) against `{base}` ({base_hash})",
        "### Params",
        params_section(repo, base, head),
        "### Metrics",
        metrics_section(repo, base, head),
        noise_section(repo, base, head),
        "### Plots",
        plots_section(changes, unchanged, errors, plots_url),
    ]
    return "\n\n".join(sections) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the revision to compare against (default: main)")
    parser.add_argument("--head", default=None, help="the revision to compare (default: the workspace)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the repository (default: the current folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here (default: stdout)")
    parser.add_argument("--plots-dir", type=Path, default=None,
                        help="draw the changed plots as PNGs into this folder, embed them, and render all plots as HTML there")
    parser.add_argument("--plots-url", default=None, help="where readers find the rendered plots (linked in the report)")
    parser.add_argument("--title", default=None, help="the report's heading")
    args = parser.parse_args()

    link_base = args.out.parent if args.out is not None else Path.cwd()
    report = build_report(args.repo, args.base, args.head, args.plots_url, args.title, args.plots_dir, link_base)
    if args.plots_dir is not None:
        render_plots(args.repo, args.base, args.head, args.plots_dir)
    if args.out is None:
        sys.stdout.write(report)
    else:
        write_bytes_atomic(report.encode(), args.out)
        print(f"pr_report: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)

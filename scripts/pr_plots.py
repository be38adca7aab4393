"""Draw a changed DVC plot, old against new, as a PNG a pull-request comment can show inline.

In: one plot of ``dvc plots diff --json`` (its Vega-Lite spec and the rows of each revision).
Out: PNG bytes drawn with matplotlib, no network and no browser. ``dvc plots diff -o`` writes
HTML that needs JavaScript, which a comment cannot run, so the report draws each plot that
changed again, in the shape its DVC template gives it:

- two nominal axes (the ``confusion`` template): one heatmap of counts per revision, side by side;
- one nominal and one numeric axis (``bar_horizontal``, ``bar``): grouped bars, old and new;
- two numeric axes (``linear``, ``simple``, ``smooth``, ``scatter``): one colour per file and
  field the plot draws, old dashed and faded, new solid (points: old as crosses).

Same rows, same matplotlib: same bytes (no timestamp or version in the PNG).
"""
from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from matplotlib.figure import Figure

NOMINAL = {"nominal", "ordinal"}
SERIES_KEYS = ("filename", "field")      # what DVC adds to tell apart the curves of one plot
POINT_MARKS = {"point", "circle", "square"}
NEW_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def file_stem(name: str, taken: set[str]) -> str:
    """A file name for plot ``name`` made of [a-z0-9-], unique within ``taken`` (which it joins)."""
    stem = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80].strip("-") or "plot"
    unique, n = stem, 2
    while unique in taken:
        unique, n = f"{stem}-{n}", n + 1
    taken.add(unique)
    return unique


def _walk(spec: Any) -> Iterator[dict]:
    """Every mapping in a Vega-Lite spec, outer ones first (top-level encoding before layers')."""
    queue = [spec]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            yield node
            queue.extend(node.values())
        elif isinstance(node, list):
            queue.extend(node)


def axes(spec: dict) -> tuple[dict, dict]:
    """The x and y encodings (``field``, ``type``, ``title``) a DVC template draws."""
    found: dict[str, dict] = {}
    for node in _walk(spec):
        encoding = node.get("encoding")
        if not isinstance(encoding, dict):
            continue
        for channel in ("x", "y"):
            value = encoding.get(channel)
            if channel not in found and isinstance(value, dict) and value.get("field") and "aggregate" not in value:
                found[channel] = value
    return found.get("x", {}), found.get("y", {})


def _mark(spec: dict) -> str:
    for node in _walk(spec):
        mark = node.get("mark")
        if isinstance(mark, str):
            return mark
        if isinstance(mark, dict) and isinstance(mark.get("type"), str):
            return mark["type"]
    return "line"


def _title(spec: dict, name: str) -> str:
    title = spec.get("title")
    text = title.get("text") if isinstance(title, dict) else title
    return str(text) if text else name


def _number(value: Any) -> float | None:
    try:
        return None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def render_vega(name: str, spec: dict, old: list[dict] | None, new: list[dict] | None,
                old_label: str, new_label: str) -> bytes:
    """PNG bytes of one data plot; ``old`` or ``new`` is None when the plot was added or removed."""
    x, y = axes(spec)
    x_field, y_field = x.get("field", ""), y.get("field", "")
    x_nominal, y_nominal = x.get("type") in NOMINAL, y.get("type") in NOMINAL
    revisions = [(label, rows) for label, rows in ((old_label, old), (new_label, new)) if rows is not None]
    figure = Figure(figsize=(6.4 if x_nominal and y_nominal else 6.0, 3.6), dpi=100, layout="constrained")
    if x_nominal and y_nominal:
        _confusion(figure, revisions, x, y)
    elif x_nominal or y_nominal:
        axis = figure.add_subplot()
        _bars(axis, revisions, x, y, horizontal=y_nominal)
    else:
        axis = figure.add_subplot()
        _curves(axis, revisions, x_field, y_field, points=_mark(spec) in POINT_MARKS)
        axis.set_xlabel(x.get("title") or x_field)
        axis.set_ylabel(y.get("title") or y_field)
    figure.suptitle(_title(spec, name), fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _confusion(figure: Figure, revisions: list[tuple[str, list[dict]]], x: dict, y: dict) -> None:
    x_field, y_field = x["field"], y["field"]
    counts = [Counter((str(row.get(x_field)), str(row.get(y_field))) for row in rows) for _, rows in revisions]
    xs = sorted({key[0] for count in counts for key in count})
    ys = sorted({key[1] for count in counts for key in count})
    top = max((max(count.values(), default=0) for count in counts), default=0) or 1
    for i, ((label, _), count) in enumerate(zip(revisions, counts), start=1):
        axis = figure.add_subplot(1, len(revisions), i)
        grid = [[count.get((a, p), 0) for a in xs] for p in ys]
        axis.imshow(grid, cmap="Blues", vmin=0, vmax=top)
        for row, line in enumerate(grid):
            for column, value in enumerate(line):
                axis.text(column, row, str(value), ha="center", va="center",
                          color="white" if value > top / 2 else "black")
        axis.set_xticks(range(len(xs)), xs)
        axis.set_yticks(range(len(ys)), ys)
        axis.set_xlabel(x.get("title") or x_field)
        axis.set_ylabel(y.get("title") or y_field)
        axis.set_title(label, fontsize=9)


def _bars(axis, revisions: list[tuple[str, list[dict]]], x: dict, y: dict, horizontal: bool) -> None:
    category, value = (y, x) if horizontal else (x, y)
    labels = list(dict.fromkeys(str(row.get(category["field"])) for _, rows in revisions for row in rows))
    width = 0.8 / len(revisions)
    for i, (label, rows) in enumerate(revisions):
        values = {str(row.get(category["field"])): _number(row.get(value["field"])) for row in rows}
        heights = [values.get(c) or 0.0 for c in labels]
        offsets = [k + (i - (len(revisions) - 1) / 2) * width for k in range(len(labels))]
        style = {"color": "0.7" if i == 0 and len(revisions) == 2 else NEW_COLOURS[0], "label": label}
        (axis.barh if horizontal else axis.bar)(offsets, heights, width, **style)
    if horizontal:
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
        axis.invert_yaxis()  # first row on top, as in the file
    else:
        axis.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30, ha="right")
    (axis.set_xlabel if horizontal else axis.set_ylabel)(value.get("title") or value["field"])
    axis.legend(fontsize=7)


def _curves(axis, revisions: list[tuple[str, list[dict]]], x_field: str, y_field: str, points: bool) -> None:
    series_names: list[tuple] = []
    for i, (label, rows) in enumerate(revisions):
        old = i == 0 and len(revisions) == 2
        series: dict[tuple, list[tuple[float, float]]] = {}
        for row in rows:
            xv, yv = _number(row.get(x_field)), _number(row.get(y_field))
            if xv is not None and yv is not None:
                series.setdefault(tuple(row.get(k) for k in SERIES_KEYS if k in row), []).append((xv, yv))
        for key, pairs in series.items():
            if key not in series_names:
                series_names.append(key)
            colour = NEW_COLOURS[series_names.index(key) % len(NEW_COLOURS)]
            name = " ".join(str(part) for part in key if part) or y_field
            style = {"color": colour, "linestyle": "--", "alpha": 0.45} if old else {"color": colour}
            xs, ys = zip(*pairs)
            if points:
                axis.scatter(xs, ys, s=12, marker="x" if old else "o", label=f"{name} ({label})",
                             color=style["color"], alpha=style.get("alpha", 1.0))
            else:
                axis.plot(xs, ys, label=f"{name} ({label})", linewidth=1.4, **style)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)

"""Where the raw data comes from: the synthetic default, or a user's own images.

``ingest`` copies every candidate image into ``data/raw/images`` and writes one manifest
(``image_path,label,...``) so that every later stage sees one layout, whatever the source:

- ``synthetic``: drawn from a seed (:mod:`lifecycle.synthetic`), messy on purpose;
- ``kaggle``: the dogs-vs-cats layout, ``cat.123.jpg`` / ``dog.45.JPG`` in one folder;
- ``imagefolder``: ``<root>/<class>/<image>``, one sub-folder per class;
- ``csv``: an existing manifest (``ingest.manifest``, inside the folder) of image paths
  (relative to the folder, or absolute but inside it) and labels.

Every source but ``synthetic`` reads one folder, ``ingest.path``, which dvc.yaml lists as a dep
of ``ingest``: adding, removing or changing one image reruns ingest and everything downstream.
So an image must lie inside that folder to be used; a manifest row pointing elsewhere is
skipped and counted (``outside_ingest_path``), never silently read from an untracked place.

Files that are plainly not images (``Thumbs.db``, ``.DS_Store``, text) are skipped and
counted; files that look like images are kept even when damaged, because preprocessing
is where each dropped row is accounted for.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd

from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.images import ImageDecodeError, read_header
from lifecycle.core.progress import progress
from lifecycle.core.schema import IngestParams
from lifecycle.synthetic import generate

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclasses.dataclass
class IngestResult:
    manifest: pd.DataFrame
    skipped: Counter = dataclasses.field(default_factory=Counter)


def _classify_file(path: Path) -> str | None:
    """None for a file to keep, else the reason to skip it."""
    if path.name.startswith(".") or path.name.lower() in {"thumbs.db", "desktop.ini"}:
        return "hidden_or_system_file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not_an_image"
    return None


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _require_folder(path: Path, key: str = "ingest.path") -> None:
    if not path.exists():
        raise UserError(f"{key}: folder '{path}' does not exist.")
    if not path.is_dir():
        hint = (" (for source csv, name the folder holding the manifest and its images, and the manifest "
                "file in ingest.manifest)" if path.suffix.lower() == ".csv" else "")
        raise UserError(f"{key}: '{path}' is not a folder{hint}.")


def _copy_into(files: list[tuple[Path, str, str]], out_dir: Path) -> pd.DataFrame:
    """Copy (source, manifest path, label) triples under ``out_dir``; return the manifest."""
    rows = []
    for source, name, label in progress(files, desc="ingest: copying images", total=len(files)):
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copyfile(source, target)
        rows.append({"image_path": name, "label": label})
    return pd.DataFrame(rows, columns=["image_path", "label"])


def _require_some_readable(files: list[Path], where: Path) -> None:
    for path in files:
        try:
            read_header(path)
            return
        except ImageDecodeError:
            continue
    raise UserError(f"ingest.path: '{where}' holds no readable image.")


def from_kaggle(root: Path, out_dir: Path) -> IngestResult:
    _require_folder(root)
    skipped: Counter = Counter()
    kept = []
    for path in _files_under(root):
        reason = _classify_file(path)
        label = path.name.split(".", 1)[0].strip().lower()
        if reason is None and label not in {"cat", "dog"}:
            reason = "name_not_cat_or_dog"
        if reason:
            skipped[reason] += 1
            continue
        kept.append((path, f"images/{path.relative_to(root).as_posix()}", label))
    _require_some_readable([source for source, _, _ in kept], root)
    return IngestResult(_copy_into(kept, out_dir), skipped)


def from_imagefolder(root: Path, out_dir: Path) -> IngestResult:
    _require_folder(root)
    skipped: Counter = Counter()
    kept = []
    for path in _files_under(root):
        relative = path.relative_to(root)
        reason = _classify_file(path)
        if reason is None and len(relative.parts) < 2:
            reason = "not_in_a_class_folder"
        if reason:
            skipped[reason] += 1
            continue
        kept.append((path, f"images/{relative.as_posix()}", relative.parts[0]))
    _require_some_readable([source for source, _, _ in kept], root)
    return IngestResult(_copy_into(kept, out_dir), skipped)


def from_csv(root: Path, manifest_name: str, out_dir: Path, path_column: str, label_column: str) -> IngestResult:
    _require_folder(root)
    csv_path = root / manifest_name
    if not csv_path.is_file():
        raise UserError(f"ingest.manifest: '{manifest_name}' is not a file in ingest.path '{root}'.")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"ingest.manifest: '{csv_path}' is not a readable CSV ({error}).".replace("\n", " ")) from None
    for key, column in (("ingest.path_column", path_column), ("ingest.label_column", label_column)):
        if column not in table.columns:
            raise UserError(f"{key}: column '{column}' is not in '{csv_path}' (columns: {', '.join(table.columns)}).")
    skipped: Counter = Counter()
    base = root.resolve()
    kept, extras = [], []
    for record in table.to_dict("records"):
        raw_path = record[path_column]
        if not isinstance(raw_path, str) or not raw_path.strip():
            skipped["empty_path"] += 1
            continue
        source = Path(raw_path.strip())
        source = source if source.is_absolute() else root / source
        reason = _classify_file(source)
        try:
            name = f"images/{source.resolve().relative_to(base).as_posix()}"
        except ValueError:
            reason = reason or "outside_ingest_path"
        if reason:
            skipped[reason] += 1
            continue
        kept.append((source, name, record[label_column]))
        extras.append({k: v for k, v in record.items() if k not in (path_column, label_column)})
    _require_some_readable([source for source, _, _ in kept if source.is_file()], csv_path)
    manifest = _copy_into(kept, out_dir)
    return IngestResult(pd.concat([manifest, pd.DataFrame(extras, index=manifest.index)], axis=1), skipped)


def ingest(params: IngestParams, seed: int, out_dir: Path) -> IngestResult:
    """Fill ``out_dir`` with ``images/`` from the configured source; return its manifest."""
    if params.source == "synthetic":
        return IngestResult(generate(params.synthetic, seed, out_dir))
    source = Path(params.path).expanduser()
    source = source if source.is_absolute() else paths.ROOT / source
    if params.source == "kaggle":
        return from_kaggle(source, out_dir)
    if params.source == "imagefolder":
        return from_imagefolder(source, out_dir)
    return from_csv(source, params.manifest, out_dir, params.path_column, params.label_column)


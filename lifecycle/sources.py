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
No file outside that folder is read: every path goes through :mod:`lifecycle.core.folders`,
which refuses a link or a manifest row whose real path leaves the folder (``outside_folder``),
never follows a link to a folder (``linked_folder``), never takes a folder named
``dog.5.jpg`` for an image, and copies by the real path with ``O_NOFOLLOW``.

With ``ingest.served``, the images the service answered and someone labelled (``POST
/feedback``, docs/monitoring.md) are added to whichever source: the labels and the images'
sha256 come from the prediction log (``served.log_dir``), the bytes from ``served.images`` (the
service's kept images, or your own store, one file per image named by its sha256), checked
against that sha256. They are then cleaned, deduplicated and split like any other image.

Every file not ingested is a row of :attr:`IngestResult.skipped` (path, reason, detail):
plainly not an image (``Thumbs.db``, ``.DS_Store``, text, a ``.heic``), a name or folder that
gives no label, or one of the refusals above. Files that look like images are kept even when
damaged, because preprocessing is where each dropped row is accounted for.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from lifecycle import prediction_log
from lifecycle.core import paths
from lifecycle.core.errors import UserError
from lifecycle.core.folders import (
    FOLDER_NAMED_LIKE_A_FILE,
    LINKED_FOLDER,
    MISSING_FILE,
    NOT_A_REGULAR_FILE,
    OUTSIDE_FOLDER,
    Found,
    Skip,
    SkipTable,
    copy_file,
    locate,
    relative_name,
    walk,
)
from lifecycle.core.images import ImageDecodeError, read_header
from lifecycle.core.progress import progress
from lifecycle.core.io import file_sha256
from lifecycle.core.schema import IngestParams, ServedParams
from lifecycle.synthetic import generate

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Images, but of formats the one decoding path (lifecycle.core.images) does not read.
UNSUPPORTED_SUFFIXES = frozenset({".heic", ".heif", ".avif", ".jxl", ".jp2", ".svg", ".psd", ".ico", ".tga",
                                  ".ppm", ".pgm", ".pbm", ".pcx", ".raw", ".dng", ".cr2", ".nef", ".arw", ".orf"})

# Every reason ingest skips a file for (the per-reason plot lists each, zero included).
SKIP_REASONS = (OUTSIDE_FOLDER, LINKED_FOLDER, FOLDER_NAMED_LIKE_A_FILE, NOT_A_REGULAR_FILE, MISSING_FILE,
                "hidden_or_system_file", "not_an_image", "unsupported_format", "name_not_cat_or_dog",
                "not_in_a_class_folder", "empty_path", "served_image_missing", "sha256_mismatch")
SERVED_FOLDER = "images/served"  # where labelled served images go in data/raw
_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}


@dataclasses.dataclass
class IngestResult:
    manifest: pd.DataFrame
    skipped: SkipTable = dataclasses.field(default_factory=SkipTable)
    served: int = 0  # rows of labelled served images among the manifest's


def _classify_name(name: str) -> tuple[str, str] | None:
    """None for a file name to keep, else (reason, detail) to skip it."""
    suffix = Path(name).suffix.lower()
    if name.startswith(".") or name.lower() in {"thumbs.db", "desktop.ini"}:
        return "hidden_or_system_file", "a hidden or system file"
    if suffix in UNSUPPORTED_SUFFIXES:
        return "unsupported_format", f"'{suffix}' images are not decoded (supported: {', '.join(sorted(IMAGE_SUFFIXES))})"
    if suffix not in IMAGE_SUFFIXES:
        return "not_an_image", f"'{suffix or 'no suffix'}' is not an image suffix"
    return None


def _image_files(root: Path) -> tuple[list[Found], SkipTable]:
    """The files under ``root`` named like images, and the table of every other entry."""
    found, refused = walk(root, named_like_files=IMAGE_SUFFIXES | UNSUPPORTED_SUFFIXES)
    skipped = SkipTable(refused)
    images = []
    for file in found:
        verdict = _classify_name(Path(file.relative).name)
        if verdict:
            skipped.add(file.relative, *verdict)
        else:
            images.append(file)
    return images, skipped


def _require_folder(path: Path, key: str = "ingest.path") -> None:
    if not path.exists():
        raise UserError(f"{key}: folder '{path}' does not exist.")
    if not path.is_dir():
        hint = (" (for source csv, name the folder holding the manifest and its images, and the manifest "
                "file in ingest.manifest)" if path.suffix.lower() == ".csv" else "")
        raise UserError(f"{key}: '{path}' is not a folder{hint}.")


def _copy_into(files: list[tuple[Path | None, str, str, dict]], out_dir: Path, skipped: SkipTable,
               where: Path) -> pd.DataFrame:
    """Copy (real source or None, manifest path, label, extra columns) under ``out_dir``; return the manifest.

    A row whose source is None (a file a csv manifest names but that does not exist) is kept
    without a file, for preprocess to count; one whose copy is refused becomes a skip.
    """
    rows, readable = [], False
    for source, name, label, extras in progress(files, desc="ingest: copying images", total=len(files)):
        target = out_dir / name
        if source is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                copy_file(source, target)
            except OSError as error:
                skipped.add(name.removeprefix("images/"), NOT_A_REGULAR_FILE, error.strerror or str(error))
                continue
            readable = readable or _has_image_header(target)
        rows.append({"image_path": name, "label": label, **extras})
    if not readable:
        raise UserError(f"ingest.path: '{where}' holds no readable image.")
    return pd.DataFrame(rows, columns=["image_path", "label", *(files[0][3] if files else {})])


def _has_image_header(path: Path) -> bool:
    try:
        read_header(path)
        return True
    except ImageDecodeError:
        return False


def from_kaggle(root: Path, out_dir: Path) -> IngestResult:
    _require_folder(root)
    images, skipped = _image_files(root)
    kept = []
    for file in images:
        label = Path(file.relative).name.split(".", 1)[0].strip().lower()
        if label not in {"cat", "dog"}:
            skipped.add(file.relative, "name_not_cat_or_dog", f"the name starts with '{label}'")
            continue
        kept.append((file.real, f"images/{file.relative}", label, {}))
    return IngestResult(_copy_into(kept, out_dir, skipped, root), skipped)


def from_imagefolder(root: Path, out_dir: Path) -> IngestResult:
    _require_folder(root)
    images, skipped = _image_files(root)
    kept = []
    for file in images:
        parts = file.relative.split("/")
        if len(parts) < 2:
            skipped.add(file.relative, "not_in_a_class_folder", "an image beside the class folders, not in one")
            continue
        kept.append((file.real, f"images/{file.relative}", parts[0], {}))
    return IngestResult(_copy_into(kept, out_dir, skipped, root), skipped)


def from_csv(root: Path, manifest_name: str, out_dir: Path, path_column: str, label_column: str) -> IngestResult:
    _require_folder(root)
    manifest = locate(root, manifest_name)
    if isinstance(manifest, Skip):
        raise UserError(f"ingest.manifest: '{manifest_name}' is not a file in ingest.path '{root}' ({manifest.detail}).")
    try:
        table = pd.read_csv(manifest.real, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"ingest.manifest: '{manifest.real}' is not a readable CSV ({error}).".replace("\n", " ")) from None
    for key, column in (("ingest.path_column", path_column), ("ingest.label_column", label_column)):
        if column not in table.columns:
            raise UserError(f"{key}: column '{column}' is not in '{manifest.real}' (columns: {', '.join(table.columns)}).")
    skipped = SkipTable()
    kept = []
    for line, record in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        raw_path = record[path_column]
        if not isinstance(raw_path, str) or not raw_path.strip():
            skipped.add("", "empty_path", f"line {line} of {manifest_name} names no image")
            continue
        name = raw_path.strip()
        extras = {k: v for k, v in record.items() if k not in (path_column, label_column)}
        place = locate(root, name)  # where the row leads comes first: outside the folder is refused, whatever its name
        verdict = _classify_name(Path(name).name)
        if isinstance(place, Skip) and place.reason != MISSING_FILE:
            skipped.extend([place])
        elif verdict:
            skipped.add(name, *verdict)
        elif isinstance(place, Found):
            kept.append((place.real, f"images/{place.relative}", record[label_column], extras))
        else:  # kept without a file: preprocess counts it (missing_file)
            kept.append((None, f"images/{relative_name(root, name)}", record[label_column], extras))
    return IngestResult(_copy_into(kept, out_dir, skipped, manifest.real), skipped)


def from_served(log_dir: Path, images_dir: Path, out_dir: Path) -> IngestResult:
    """The labelled served images: one row per image of each request with a feedback label.

    A request's label (the last one given) applies to each of its images. An image whose file
    is not in ``images_dir`` (``served_image_missing``) or whose bytes are not the sha256 the log
    recorded (``sha256_mismatch``) is skipped by name.
    """
    labels = prediction_log.labels(log_dir) if log_dir.is_dir() else {}
    records = [r for r in prediction_log.read_log(log_dir).records if r.get("request_id") in labels] if labels else []
    skipped, rows, seen = SkipTable(), [], set()
    for record in records:
        digest = str(record.get("sha256", ""))
        if digest in seen:
            continue
        seen.add(digest)
        shown = f"served/{digest}"
        place = locate(images_dir, digest) if digest else Skip(shown, MISSING_FILE, "the record has no sha256")
        if isinstance(place, Skip):
            skipped.add(shown, "served_image_missing" if place.reason == MISSING_FILE else place.reason,
                        f"request {record['request_id']}: {place.detail} in {paths.relative(images_dir)}")
            continue
        name = f"{SERVED_FOLDER}/{digest}{_SUFFIXES.get(str(record.get('format')), '')}"
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            copy_file(place.real, target)
        except OSError as error:
            skipped.add(shown, NOT_A_REGULAR_FILE, error.strerror or str(error))
            continue
        if file_sha256(target) != digest:
            target.unlink()
            skipped.add(shown, "sha256_mismatch", f"request {record['request_id']}: the file's bytes are another image")
            continue
        rows.append({"image_path": name, "label": labels[record["request_id"]]})
    return IngestResult(pd.DataFrame(rows, columns=["image_path", "label"]), skipped, served=len(rows))


def ingest(params: IngestParams, seed: int, out_dir: Path, served: ServedParams | None = None) -> IngestResult:
    """Fill ``out_dir`` with ``images/`` from the configured source (and the labelled served images); return its manifest."""
    if params.source == "synthetic":
        result = IngestResult(generate(params.synthetic, seed, out_dir))
    else:
        source = Path(params.path).expanduser()
        source = source if source.is_absolute() else paths.ROOT / source
        if params.source == "kaggle":
            result = from_kaggle(source, out_dir)
        elif params.source == "imagefolder":
            result = from_imagefolder(source, out_dir)
        else:
            result = from_csv(source, params.manifest, out_dir, params.path_column, params.label_column)
    if not params.served or served is None:
        return result
    extra = from_served(paths.in_repository(served.log_dir), paths.in_repository(served.images), out_dir)
    result.skipped.extend(extra.skipped.rows)
    return IngestResult(pd.concat([result.manifest, extra.manifest], ignore_index=True), result.skipped, extra.served)

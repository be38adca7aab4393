"""A user's folder is read only inside itself, and every file not used is accounted for by name.

One hostile folder, built in each layout (kaggle, imagefolder, csv): links to a file and to a
folder outside it, a link to a folder inside, a folder named like an image, a named pipe, a
broken link, and every fault preprocess tells apart (empty, not an image, truncated, corrupt,
over the pixel limit, unsupported format, duplicate). Outside the folder sit sentinel files
whose bytes must never reach data/ or the DVC cache. The fast tests run ingest and preprocess
as functions; the slow one runs `dvc repro preprocess` on a copy of the repository.
"""
from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from lifecycle.cleaning import DROP_REASONS, preprocess
from lifecycle.core.folders import copy_file, locate, walk
from lifecycle.core.params import load_params
from lifecycle.sources import SKIP_REASONS, from_csv, from_imagefolder, from_kaggle

LAYOUTS = ("kaggle", "imagefolder", "csv")


def image_bytes(seed: int, fmt: str = "JPEG", size: int = 40) -> bytes:
    """A distinct little picture (random pixels, so no two seeds share bytes)."""
    pixels = Image.frombytes("RGB", (size, size), secrets.token_bytes(size * size * 3) if seed < 0
                             else bytes((seed * 37 + i * 11) % 256 for i in range(size * size * 3)))
    buffer = io.BytesIO()
    pixels.save(buffer, format=fmt)
    return buffer.getvalue()


class Hostile:
    """The folder, the sentinels outside it, and what ingest and preprocess must say of each entry."""

    def __init__(self, base: Path, layout: str) -> None:
        self.layout = layout
        outside = base / "outside"
        (outside / "secret_dir").mkdir(parents=True)
        self.sentinels = [b"SENTINEL-" + secrets.token_hex(24).encode() + b"\n", image_bytes(-1), image_bytes(-1)]
        (outside / "secret.txt").write_bytes(self.sentinels[0])
        (outside / "secret.jpg").write_bytes(self.sentinels[1])
        (outside / "secret_dir" / "cat.77.jpg").write_bytes(self.sentinels[2])

        self.root = base / "folder"
        # imagefolder: the faults sit in the class folder cat/; the others: flat
        where = "cat/" if layout == "imagefolder" else ""
        self.ingest_skips: dict[str, str] = {}
        self.preprocess_drops: dict[str, str] = {}
        self.kept: set[str] = set()

        def put(name: str, data: bytes) -> Path:
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return path

        for i, name in enumerate([f"{where}cat.1.jpg", f"{where}cat.2.jpg"]):
            put(name, image_bytes(i + 1))
            self.kept.add(name)
        dog = "dog/dog.3.png" if layout == "imagefolder" else "dog.3.png"
        put(dog, image_bytes(3, "PNG"))
        self.kept.add(dog)
        put("more/dog.5.jpg" if layout != "imagefolder" else "dog/more/dog.5.jpg", image_bytes(5))
        self.kept.add("more/dog.5.jpg" if layout != "imagefolder" else "dog/more/dog.5.jpg")

        os.symlink(outside / "secret.txt", self.root / f"{where}cat.900.jpg")
        os.symlink(outside / "secret.jpg", self.root / f"{where}cat.901.jpg")
        os.symlink(outside / "secret_dir", self.root / f"{where}cats_link")
        os.symlink(self.root / ("dog/more" if layout == "imagefolder" else "more"), self.root / f"{where}inner_link")
        os.symlink(self.root / f"{where}cat.1.jpg", self.root / f"{where}cat.902.jpg")  # inside: fine, a duplicate
        os.symlink(self.root / "nothing_here.jpg", self.root / f"{where}cat.903.jpg")   # broken
        put(f"{where}dog.500.jpg/dog.501.jpg", image_bytes(501))
        os.mkfifo(self.root / f"{where}cat.18.jpg")
        put(f"{where}notes.txt", b"not an image")
        put(f"{where}.DS_Store", b"\0" * 32)
        put(f"{where}cat.15.heic", b"\0" * 32)
        if layout == "imagefolder":
            put("stray.jpg", image_bytes(9))
            self.ingest_skips["stray.jpg"] = "not_in_a_class_folder"
        if layout == "kaggle":
            put("bird.8.jpg", image_bytes(8))
            self.ingest_skips["bird.8.jpg"] = "name_not_cat_or_dog"

        faults = {
            f"{where}cat.10.jpg": (b"", "empty_file"),
            f"{where}cat.11.jpg": (b"hello, I am text", "not_an_image"),
            f"{where}cat.12.jpg": (image_bytes(12)[:-400], "truncated_image"),
            f"{where}cat.13.png": (self._bomb(), "over_pixel_limit"),
            f"{where}cat.14.jpg": (image_bytes(14, "PPM"), "unsupported_format"),
            f"{where}cat.20.jpg": (image_bytes(2), "duplicate_image"),  # cat.2.jpg comes first
            f"{where}cat.17.gif": (self._corrupt_gif(), "corrupt_image"),
        }
        for name, (data, reason) in faults.items():
            put(name, data)
            self.preprocess_drops[name] = reason
        self.preprocess_drops[f"{where}cat.902.jpg"] = "duplicate_image"

        self.ingest_skips.update({
            f"{where}cat.900.jpg": "outside_folder", f"{where}cat.901.jpg": "outside_folder",
            f"{where}cats_link": "outside_folder", f"{where}inner_link": "linked_folder",
            f"{where}cat.903.jpg": "missing_file", f"{where}dog.500.jpg": "folder_named_like_a_file",
            f"{where}cat.18.jpg": "not_a_regular_file", f"{where}notes.txt": "not_an_image",
            f"{where}.DS_Store": "hidden_or_system_file", f"{where}cat.15.heic": "unsupported_format",
        })
        if layout == "csv":
            self._write_manifest(outside)

    def _write_manifest(self, outside: Path) -> None:
        """Every entry, plus rows that name places outside the folder in three ways."""
        rows = {name: ("dog" if "dog" in name else "cat") for name in
                [*self.kept, *self.preprocess_drops, *self.ingest_skips]}
        escapes = {"../outside/secret.jpg": "outside_folder", str(outside / "secret.txt"): "outside_folder",
                   "cats_link/cat.77.jpg": "outside_folder", "inner_link/dog.5.jpg": None}
        rows.update({name: "cat" for name in escapes})
        for name, reason in escapes.items():
            if reason:
                self.ingest_skips[name] = reason
        # through a link to a folder inside: read (it stays inside), the same bytes as more/dog.5.jpg
        self.preprocess_drops["inner_link/dog.5.jpg"] = "duplicate_image"
        # a manifest names files; the entries that are not files are refused as such
        for name in ("cats_link", "inner_link", "dog.500.jpg"):
            self.ingest_skips[name] = "outside_folder" if name == "cats_link" else "not_a_regular_file"
        self.ingest_skips["cat.903.jpg"] = None  # a row whose file is missing stays, for preprocess
        self.preprocess_drops["cat.903.jpg"] = "missing_file"
        self.ingest_skips = {k: v for k, v in self.ingest_skips.items() if v}
        frame = pd.DataFrame({"image_path": list(rows), "label": list(rows.values())})
        frame.to_csv(self.root / "manifest.csv", index=False)

    @staticmethod
    def _bomb() -> bytes:
        buffer = io.BytesIO()
        Image.new("1", (9000, 9000)).save(buffer, format="PNG")  # 81 megapixels, a few kilobytes
        return buffer.getvalue()

    @staticmethod
    def _corrupt_gif() -> bytes:
        data = bytearray(image_bytes(17, "GIF", size=64))
        data[len(data) // 2:len(data) // 2 + 40] = bytes(range(40))
        return bytes(data)

    def ingest(self, out_dir: Path):
        if self.layout == "kaggle":
            return from_kaggle(self.root, out_dir)
        if self.layout == "imagefolder":
            return from_imagefolder(self.root, out_dir)
        return from_csv(self.root, "manifest.csv", out_dir, "image_path", "label")


def leaked(sentinels: list[bytes], *folders: Path) -> list[str]:
    """Files under ``folders`` that hold a sentinel's bytes."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [str(path) for sentinel in sentinels if sentinel in data]
    return found


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ingest_and_preprocess_read_nothing_outside_and_name_every_file(tmp_path, layout):
    hostile = Hostile(tmp_path, layout)
    raw = tmp_path / "raw"
    result = hostile.ingest(raw)

    table = result.skipped.table()
    assert dict(zip(table["path"], table["reason"])) == hostile.ingest_skips
    assert len(table) == len(hostile.ingest_skips)  # one row each, no path twice
    assert set(table["reason"]) <= set(SKIP_REASONS)
    assert result.skipped.counts() == table.groupby("reason").size().to_dict()
    assert leaked(hostile.sentinels, raw) == []

    clean, report = preprocess(result.manifest, raw, load_params().preprocess)
    dropped = report.dropped.table()
    assert dict(zip(dropped["path"].str.removeprefix("images/"), dropped["reason"])) == hostile.preprocess_drops
    assert set(dropped["reason"]) <= set(DROP_REASONS)
    assert {k: v for k, v in report.as_dict()["dropped_by_reason"].items() if v} == dropped.groupby("reason").size().to_dict()
    assert set(clean["image_path"].str.removeprefix("images/")) == hostile.kept
    assert report.rows_in == len(clean) + len(dropped)


def test_one_rule_for_every_folder(tmp_path):
    """walk and locate agree, and copy_file refuses a file that became a link or a pipe."""
    hostile = Hostile(tmp_path, "kaggle")
    found, refused = walk(hostile.root)
    for file in found:
        assert locate(hostile.root, file.relative).real == file.real
    for skip in refused:
        if skip.reason in ("outside_folder", "not_a_regular_file", "missing_file"):
            assert locate(hostile.root, skip.path).reason == skip.reason
    (tmp_path / "copy").mkdir()
    for name in ("cat.900.jpg", "cat.18.jpg"):  # a link out, a named pipe (would block a plain open)
        with pytest.raises(OSError):
            copy_file(hostile.root / name, tmp_path / "copy" / name)
    assert list((tmp_path / "copy").iterdir()) == []  # nothing written for either


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dvc_repro_on_a_hostile_folder_keeps_the_sentinels_out_of_data_and_the_cache(repo_copy, tmp_path, layout):
    hostile = Hostile(tmp_path / "user", layout)
    # DVC hashes ingest.path (a dep) before ingest runs: a named pipe blocks it and a broken
    # link stops it ("No such file or directory", naming the link). Those two are left to the fast test.
    where = "cat/" if layout == "imagefolder" else ""
    for name in (f"{where}cat.18.jpg", f"{where}cat.903.jpg"):
        (hostile.root / name).unlink()
        hostile.ingest_skips.pop(name, None)
        if layout == "csv":  # the manifest still names it: a row without a file
            hostile.preprocess_drops[name] = "missing_file"
    repo = repo_copy({"ingest": {"source": layout, "path": str(hostile.root)}})
    repo.dvc("repro", "preprocess")

    skipped = pd.read_csv(repo.path / "reports" / "ingest_skipped.csv", keep_default_na=False)
    assert dict(zip(skipped["path"], skipped["reason"])) == hostile.ingest_skips
    dropped = pd.read_csv(repo.path / "reports" / "preprocess_dropped.csv", keep_default_na=False)
    assert dict(zip(dropped["path"].str.removeprefix("images/"), dropped["reason"])) == hostile.preprocess_drops

    ingest_metrics = yaml.safe_load((repo.path / "metrics" / "ingest.json").read_text())
    preprocess_metrics = yaml.safe_load((repo.path / "metrics" / "preprocess.json").read_text())
    assert ingest_metrics["files_skipped"] == len(skipped)
    assert preprocess_metrics["rows_dropped"] == len(dropped)
    assert preprocess_metrics["rows_in"] == preprocess_metrics["rows_kept"] + len(dropped)
    per_reason = pd.read_csv(repo.path / "plots" / "ingest" / "skipped_by_reason.csv")
    assert dict(zip(per_reason["reason"], per_reason["files"])) == {
        reason: int((skipped["reason"] == reason).sum()) for reason in SKIP_REASONS}
    per_reason = pd.read_csv(repo.path / "plots" / "preprocess" / "dropped_by_reason.csv")
    assert dict(zip(per_reason["reason"], per_reason["rows"])) == {
        reason: int((dropped["reason"] == reason).sum()) for reason in DROP_REASONS}

    assert (repo.path / ".dvc" / "cache").is_dir()
    assert leaked(hostile.sentinels, repo.path / "data", repo.path / ".dvc" / "cache", repo.path / "reports") == []

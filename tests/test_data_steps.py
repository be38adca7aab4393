"""Unit tests of each data step's logic on tiny data."""
import hashlib

import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE, RandomOverSampler
from PIL import Image

from lifecycle.cleaning import impute, preprocess
from lifecycle.core.errors import UserError
from lifecycle.core.images import ImageDecodeError, read_header
from lifecycle.core.io import read_arrays, write_arrays_atomic
from lifecycle.core.params import load_params
from lifecycle.core.schema import (
    ImputeParams,
    SplitParams,
    SynthesizeParams,
)
from lifecycle.features import decode_all, encode_labels
from lifecycle.splitting import content_groups, split_indices
from lifecycle.synthesis import balance, make_sampler
from lifecycle.synthetic import generate


def tree_digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synthetic_data_is_deterministic_and_messy(tmp_path):
    params = load_params().ingest.synthetic.model_copy(update={"count": 200})
    first = generate(params, seed=7, out_dir=tmp_path / "a")
    second = generate(params, seed=7, out_dir=tmp_path / "b")
    pd.testing.assert_frame_equal(first, second)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")

    assert "Unnecessary_Column" in first.columns
    assert first.duplicated().sum() >= 1
    assert first["label"].isna().sum() >= 1
    assert (first["image_path"] != first["image_path"].str.strip()).sum() >= 1
    assert {"Cat", "DOG"} & set(first["label"].dropna()) and any(l.startswith(" ") for l in first["label"].dropna())
    labels = first["label"].dropna().str.strip().str.lower()
    assert 0.6 < (labels == "cat").mean() < 0.8
    missing = [p for p in first["image_path"].str.strip() if not (tmp_path / "a" / p).exists()]
    assert missing
    modes = set()
    for path in (tmp_path / "a" / "images").glob("img_*"):
        try:
            modes.add(read_header(path)[2])
        except ImageDecodeError:  # the corrupt files the generator makes on purpose
            continue
    assert {"RGB", "L", "RGBA", "P"} <= modes


def make_raw(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name, color in [("a.png", (255, 0, 0)), ("b.png", (0, 255, 0)), ("c.png", (0, 0, 255)), ("d.png", (9, 9, 9))]:
        Image.new("RGB", (20, 20), color).save(images / name)
    (images / "copy_of_a.png").write_bytes((images / "a.png").read_bytes())
    (images / "broken.png").write_bytes((images / "b.png").read_bytes()[:40])
    raw = pd.DataFrame(
        {
            "image_path": ["images/a.png", "images/a.png", " images/b.png ", "images/c.png", "images/copy_of_a.png",
                           "images/broken.png", "images/gone.png", "images/d.png", "../outside.png", "images/c.png"],
            "label": ["Cat", "Cat", " DOG", None, "cat", "dog", "dog", "horse", "cat", "kitten"],
            "Unnecessary_Column": list("abcdefghij"),
        }
    )
    return raw


def test_preprocess_accounts_for_every_row(tmp_path):
    raw = make_raw(tmp_path)
    params = load_params().preprocess.model_copy(update={"label_aliases": {"kitten": "cat"}})
    clean, report = preprocess(raw, tmp_path, params)
    summary = report.as_dict()
    assert summary["rows_in"] == 10
    assert summary["rows_kept"] + summary["rows_dropped"] == 10
    assert {reason: n for reason, n in summary["dropped_by_reason"].items() if n} == {
        "duplicate_row": 1, "duplicate_image": 2, "missing_file": 1, "corrupt_image": 1,
        "unknown_label": 1, "path_outside_raw": 1,
    }
    table = report.dropped.table()  # every dropped row by name; the counts are its rows
    assert table.groupby("reason").size().to_dict() == {k: v for k, v in summary["dropped_by_reason"].items() if v}
    assert dict(zip(table["path"], table["reason"])) == {
        "images/a.png": "duplicate_row", "images/copy_of_a.png": "duplicate_image", "images/c.png": "duplicate_image",
        "images/broken.png": "corrupt_image", "images/gone.png": "missing_file", "images/d.png": "unknown_label",
        "../outside.png": "path_outside_raw"}
    assert table.set_index("path").at["images/copy_of_a.png", "detail"] == "the same bytes as images/a.png"
    assert "Unnecessary_Column" not in clean.columns
    assert sorted(clean["image_path"]) == ["images/a.png", "images/b.png", "images/c.png"]
    # c.png appeared unlabelled and as 'kitten': the labelled row is the one kept
    assert dict(zip(clean["image_path"], clean["label"])) == {"images/a.png": "cat", "images/b.png": "dog", "images/c.png": "cat"}


def test_impute_strategies():
    clean = pd.DataFrame({"image_path": list("abcde"), "label": ["cat", "cat", "dog", np.nan, np.nan]})
    dropped, report = impute(clean, ImputeParams(label_strategy="drop"))
    assert len(dropped) == 3 and report["rows_dropped"] == 2 and report["labels_imputed"] == 0
    filled, report = impute(clean, ImputeParams(label_strategy="most_frequent"))
    assert filled["label"].tolist() == ["cat", "cat", "dog", "cat", "cat"]
    assert report["labels_imputed"] == 2 and report["imputed_value"] == "cat"


def test_label_encoding_is_alphabetical_and_needs_two_classes():
    codes, classes = encode_labels(pd.Series(["dog", "cat", "dog"]))
    assert classes == ["cat", "dog"] and codes.tolist() == [1, 0, 1]
    with pytest.raises(UserError, match="two classes"):
        encode_labels(pd.Series(["cat", "cat"]))


def test_featurize_decodes_once_into_uint8(tmp_path):
    Image.new("L", (50, 30), 128).save(tmp_path / "x.png")
    digest = hashlib.sha256((tmp_path / "x.png").read_bytes()).hexdigest()
    images = decode_all(pd.DataFrame({"image_path": ["x.png"], "sha256": [digest]}), tmp_path, 16)
    assert images.shape == (1, 16, 16, 3) and images.dtype == np.uint8 and images[0, 0, 0].tolist() == [128] * 3


def test_featurize_refuses_an_image_that_changed_since_preprocess(tmp_path):
    """dvc.yaml lists the manifest, not data/raw, as featurize's input: the sha256 column must pin each file."""
    Image.new("L", (50, 30), 128).save(tmp_path / "x.png")
    manifest = pd.DataFrame({"image_path": ["x.png"], "sha256": [hashlib.sha256(b"other bytes").hexdigest()]})
    with pytest.raises(UserError, match="x.png is missing or has changed since preprocess"):
        decode_all(manifest, tmp_path, 16)
    with pytest.raises(UserError, match="gone.png is missing"):
        decode_all(manifest.assign(image_path=["gone.png"]), tmp_path, 16)


def test_split_is_stratified_and_keeps_identical_pictures_together(tiny_images):
    images, labels = tiny_images
    images = np.concatenate([images, images[:5]])  # five pictures appear twice
    labels = np.concatenate([labels, labels[:5]])
    groups = content_groups(images)
    parts = split_indices(labels, groups, SplitParams(val_fraction=0.2, test_fraction=0.2), seed=3)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
    seen = [set(groups[idx]) for idx in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    for idx in parts.values():
        assert 0.5 < (labels[idx] == 0).mean() < 0.9
    again = split_indices(labels, groups, SplitParams(val_fraction=0.2, test_fraction=0.2), seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_smote_balances_and_flags_synthetic_rows(tiny_images):
    images, labels = tiny_images
    out_images, out_labels, synthetic = balance(images, labels, SynthesizeParams(method="smote", k_neighbors=3), seed=0)
    assert np.bincount(out_labels).tolist() == [28, 28]
    assert synthetic.sum() == 16 and not synthetic[:40].any()
    assert np.array_equal(out_images[:40], images) and out_images.dtype == np.uint8
    same = balance(images, labels, SynthesizeParams(method="smote", k_neighbors=3), seed=0)
    assert np.array_equal(same[0], out_images)
    unchanged = balance(images, labels, SynthesizeParams(method="none", k_neighbors=5), seed=0)
    assert len(unchanged[1]) == 40 and not unchanged[2].any()
    assert np.bincount(balance(images, labels, SynthesizeParams(method="random_over", k_neighbors=5), seed=0)[1]).tolist() == [28, 28]


def whole_split_resample(images, labels, params, seed):
    """What imbalanced-learn gives on the whole split as one float32 matrix (the old, memory-hungry way)."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    resampled, new_labels = make_sampler(params, seed).fit_resample(flat, labels)
    return np.clip(np.rint(resampled), 0, 255).astype(np.uint8).reshape(-1, *images.shape[1:]), new_labels


@pytest.mark.parametrize("method", ["smote", "random_over"])
@pytest.mark.parametrize("class_sizes", [(28, 12), (12, 28), (20, 7, 13)])
def test_balancing_gives_the_rows_of_a_whole_split_resample(method, class_sizes):
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(np.arange(len(class_sizes)), class_sizes))
    images = rng.integers(0, 256, size=(len(labels), 8, 8, 3), dtype=np.uint8)
    params = SynthesizeParams(method=method, k_neighbors=3)
    expected_images, expected_labels = whole_split_resample(images, labels, params, seed=5)
    out_images, out_labels, synthetic = balance(images, labels, params, seed=5)
    assert np.array_equal(out_images, expected_images) and np.array_equal(out_labels, expected_labels)
    assert synthetic.sum() == sum(max(class_sizes) - n for n in class_sizes)


def test_smote_never_copies_the_majority_class_as_floats(monkeypatch):
    """At 25,000 photos a float32 copy of the split is 1.2 GB: only minority rows may be converted."""
    labels = np.array([0] * 60 + [1] * 10)
    images = np.random.default_rng(0).integers(0, 256, size=(70, 8, 8, 3), dtype=np.uint8)
    seen = []
    original = SMOTE.fit_resample
    monkeypatch.setattr(SMOTE, "fit_resample", lambda self, X, y: seen.append(len(X)) or original(self, X, y))
    balance(images, labels, SynthesizeParams(method="smote", k_neighbors=3), seed=0)
    assert seen == [11]  # the ten minority images and the one majority row imbalanced-learn requires
    seen.clear()
    balance(images[:20], np.array([0] * 10 + [1] * 10), SynthesizeParams(method="smote", k_neighbors=3), seed=0)
    assert seen == []  # a balanced split costs nothing


def test_an_oversampler_that_reorders_the_originals_is_refused(tiny_images, monkeypatch):
    """The synthetic flags count on the originals coming back first and in order."""
    images, labels = tiny_images
    resample = RandomOverSampler.fit_resample
    monkeypatch.setattr(RandomOverSampler, "fit_resample", lambda self, x, y: tuple(a[::-1] for a in resample(self, x, y)))
    with pytest.raises(ValueError, match="original images first"):
        balance(images, labels, SynthesizeParams(method="random_over", k_neighbors=5), seed=0)


def test_smote_with_too_few_minority_images_names_the_key(tiny_images):
    images, labels = tiny_images
    with pytest.raises(UserError, match="synthesize.k_neighbors"):
        balance(images[:30], labels[:30], SynthesizeParams(method="smote", k_neighbors=5), seed=0)


def test_npz_writer_is_byte_deterministic(tmp_path, tiny_images):
    images, labels = tiny_images
    write_arrays_atomic(tmp_path / "a.npz", images=images, labels=labels)
    write_arrays_atomic(tmp_path / "b.npz", labels=labels, images=images)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = read_arrays(tmp_path / "a.npz")
    assert np.array_equal(loaded["images"], images) and np.array_equal(loaded["labels"], labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no temporary left beside them

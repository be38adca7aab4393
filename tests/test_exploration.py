"""The numbers behind eda's summary (lifecycle/exploration.py) on tables whose answers are known by
hand, and the figures (lifecycle/figures.py): byte-identical PNGs for the same data, a changed
PNG for changed data, and the panels each figure promises."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lifecycle import exploration, figures

CLASSES = ["cat", "dog"]


def test_raw_labels_keep_every_spelling_and_show_blanks_and_padding():
    raw = pd.DataFrame({"label": ["cat", " dog", None, "Dog", "cat", np.nan, "dog "]})
    shown = exploration.raw_labels(raw)["label"].tolist()
    assert shown == ["cat", "' dog'", "<missing>", "Dog", "cat", "<missing>", "'dog '"]
    summary, table = exploration.spelling_summary(exploration.raw_labels(raw))
    assert summary == {"rows": 7, "distinct_spellings": 4, "missing": 2}
    assert dict(zip(table["label"], table["rows"])) == {"' dog'": 1, "'dog '": 1, "<missing>": 2, "Dog": 1, "cat": 2}


def test_a_table_without_blanks_reports_none_missing():
    summary, _ = exploration.spelling_summary(pd.DataFrame({"label": ["cat", "dog", "dog"]}))
    assert summary == {"rows": 3, "distinct_spellings": 2, "missing": 0}


def test_label_counts_are_sorted_by_name_and_synthetic_images_are_told_apart():
    balanced = exploration.balanced_labels(np.array([1, 0, 1, 1]), np.array([False, False, True, False]), CLASSES)
    assert balanced.to_dict("list") == {"label": ["dog", "cat", "dog", "dog"], "kind": ["real", "real", "synthetic", "real"]}
    assert exploration.counts(balanced) == {"cat": 1, "dog": 3}
    assert list(exploration.counts(pd.DataFrame({"label": ["dog", "cat", "bird"]}))) == ["bird", "cat", "dog"]


def test_size_summary_of_the_raw_images():
    clean = pd.DataFrame({"width": [100, 300, 200, 50], "height": [80, 80, 120, 60],
                          "mode": ["RGB", "L", "RGB", "RGBA"], "format": ["JPEG", "PNG", "JPEG", "JPEG"]})
    assert exploration.size_summary(clean) == {
        "width": {"min": 50, "median": 150.0, "max": 300},
        "height": {"min": 60, "median": 80.0, "max": 120},
        "modes": {"L": 1, "RGB": 2, "RGBA": 1},
        "formats": {"JPEG": 3, "PNG": 1},
    }


def test_class_means_are_per_class_and_skip_a_class_with_no_images():
    images = np.stack([np.full((2, 2, 3), value, dtype=np.uint8) for value in (10, 30, 200)])
    means = exploration.class_mean_images(images, np.array([0, 0, 2]), ["cat", "dog", "bird"])
    assert list(means) == ["cat", "bird"]
    assert (means["cat"] == 20).all() and (means["bird"] == 200).all()


def test_samples_alternate_over_the_classes_and_the_seed_decides_which():
    labels = np.array([0] * 10 + [1] * 4)
    picked = exploration.pick_samples(labels, 6, seed=3)
    assert picked.dtype == np.int64 and len(set(picked.tolist())) == 6
    assert labels[picked].tolist() == [0, 1, 0, 1, 0, 1]
    assert exploration.pick_samples(labels, 6, seed=3).tolist() == picked.tolist()
    assert any(exploration.pick_samples(labels, 6, seed=s).tolist() != picked.tolist() for s in range(4, 10))
    assert len(exploration.pick_samples(labels, 100, seed=0)) == 8   # as many as the rarer class allows, alternating


# ----------------------------------------------------------------------------- figures


def png(path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def grid_images(value: int = 0) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)


def test_a_figure_is_the_same_bytes_for_the_same_data_with_no_version_stamp(tmp_path):
    for name in ("a.png", "b.png"):
        figures.save_figure(figures.image_grid(grid_images(), [f"#{i}" for i in range(5)], columns=3, title="t"),
                            tmp_path / name)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert b"matplotlib" not in (tmp_path / "a.png").read_bytes().lower()     # no Software stamp
    assert png(tmp_path / "a.png").format == "PNG"
    figures.save_figure(figures.image_grid(grid_images(1), [f"#{i}" for i in range(5)], columns=3, title="t"),
                        tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes() != (tmp_path / "a.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]   # no temporary left
    assert plt.get_fignums() == []                                                     # each figure closed


def test_the_grid_has_a_cell_per_image_in_rows_of_columns():
    figure = figures.image_grid(grid_images(), [f"#{i}" for i in range(5)], columns=3)
    axes = figure.axes
    assert len(axes) == 6                                            # 2 rows of 3
    assert [axis.get_title() for axis in axes if axis.images] == ["#0", "#1", "#2", "#3", "#4"]
    plt.close(figure)


@pytest.mark.parametrize("kind", ["label_distributions", "size_distribution", "class_means"])
def test_each_eda_figure_draws_its_panels(kind, tmp_path):
    if kind == "label_distributions":
        panels = {"as ingested": pd.DataFrame({"label": ["cat", "dog", "' dog'"]}),
                  "after synthesis": exploration.balanced_labels(np.array([0, 1, 1]), np.array([False, False, True]), CLASSES)}
        figure, expected = figures.label_distributions(panels), ["as ingested", "after synthesis"]
    elif kind == "size_distribution":
        sizes = pd.DataFrame({"width": [100, 200, 300], "height": [80, 90, 100], "label": ["cat", "dog", "cat"]})
        figure, expected = figures.size_distribution(sizes), ["Raw image size (pixels)", "Raw image area"]
    else:
        figure = figures.class_means({"cat": np.full((4, 4, 3), 300.0), "dog": np.zeros((4, 4, 3))})
        expected = ["mean cat", "mean dog"]
        assert figure.axes[0].images[0].get_array().max() == 255    # clipped to a colour, not wrapped
    assert [axis.get_title() for axis in figure.axes if axis.get_title()] == expected
    figures.save_figure(figure, tmp_path / "f.png")
    assert png(tmp_path / "f.png").size[0] > 100
    assert io.BytesIO((tmp_path / "f.png").read_bytes()).read(8) == b"\x89PNG\r\n\x1a\n"

"""Figures for augment, eda and visualize (seed steps 5-7), written as reproducible PNGs.

Matplotlib runs headless (Agg) and each PNG is saved without a software/version stamp,
so identical data gives identical bytes and ``dvc plots diff`` shows real changes only.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lifecycle.core.io import atomic_path  # noqa: E402


def save_figure(figure: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    plt.close(figure)


def image_grid(
    images: np.ndarray, titles: list[str], columns: int, title: str | None = None, cell: float = 1.6
) -> plt.Figure:
    """uint8 images (N, H, W, 3) in a grid with one caption each."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * cell, rows * (cell + 0.25)), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, image, caption in zip(axes.ravel(), images, titles):
        axis.imshow(image)
        axis.set_title(caption, fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def label_distributions(panels: dict[str, pd.DataFrame]) -> plt.Figure:
    """One seaborn countplot per stage of the data (columns: ``label``, optional ``kind``)."""
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for axis, (title, frame) in zip(np.atleast_1d(axes), panels.items()):
        hue = "kind" if "kind" in frame.columns else None
        order = sorted(frame["label"].unique())
        sns.countplot(data=frame, x="label", hue=hue, order=order, ax=axis)
        axis.set_title(title)
        axis.set_xlabel("label")
        plt.setp(axis.get_xticklabels(), rotation=40, ha="right")
    figure.suptitle("Label distribution")
    figure.tight_layout()
    return figure


def size_distribution(sizes: pd.DataFrame) -> plt.Figure:
    """Raw image widths and heights (columns ``width``, ``height``, ``label``)."""
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    sns.scatterplot(data=sizes, x="width", y="height", hue="label", s=10, alpha=0.6, ax=axes[0])
    axes[0].set_title("Raw image size (pixels)")
    sns.histplot(data=sizes.assign(megapixels=sizes["width"] * sizes["height"] / 1e6), x="megapixels", bins=30, ax=axes[1])
    axes[1].set_title("Raw image area")
    figure.tight_layout()
    return figure


def class_means(means: dict[str, np.ndarray]) -> plt.Figure:
    """The per-class mean image: what the average cat and the average dog look like."""
    figure, axes = plt.subplots(1, len(means), figsize=(2.6 * len(means), 2.9), squeeze=False)
    for axis, (name, image) in zip(axes.ravel(), means.items()):
        axis.imshow(np.clip(image, 0, 255).astype(np.uint8))
        axis.set_title(f"mean {name}")
        axis.axis("off")
    figure.tight_layout()
    return figure


def drift_figure(names: list[str], reference: dict[str, np.ndarray], served: dict[str, np.ndarray] | None,
                 path: Path) -> None:
    """One panel per image statistic in ``names`` (values in [0, 1]): the validation split's histogram, the served one's over it."""
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8))
    for axis, name in zip(axes, names):
        bins = np.linspace(0.0, 1.0, 31)
        axis.hist(reference[name], bins=bins, density=True, alpha=0.6, label="validation")
        if served is not None:
            axis.hist(served[name], bins=bins, density=True, alpha=0.6, label="served")
        axis.set_title(name, fontsize=9)
        axis.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    figure.suptitle("monitor: served images against the validation split" + ("" if served is not None else
                                                                               " (nothing served yet)"))
    save_figure(figure, path)

"""EDA (seed step 6): label distribution before cleaning, after cleaning and after
synthesis (seaborn, as in the seed), the raw image-size distribution, and the per-class
mean image; figures in plots/eda/, the numbers behind them in reports/ (committed, not
metrics: the data stages' headline counts are in metrics/preprocess, impute, split, synthesize).

in: data/raw, data/interim/{clean,imputed}.csv, data/processed/{features,train_balanced}.npz
out: plots/eda/*.png, reports/eda.json, reports/eda_label_spellings.csv   params: none
"""
from __future__ import annotations

from lifecycle import exploration
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import (
    read_arrays,
    read_labelled,
    write_csv_atomic,
    write_json_atomic,
)
from lifecycle.figures import (
    class_means,
    label_distributions,
    save_figure,
    size_distribution,
)
from lifecycle.manifest import read_manifest, read_raw_manifest

EDA_PLOTS = paths.PLOTS / "eda"
# Exploration, not a score to compare across experiments: a report beside the figures, not a
# metric (so `dvc exp show` is not one column per image mode, format or class).
SUMMARY = paths.REPORTS / "eda.json"
SPELLINGS = paths.REPORTS / "eda_label_spellings.csv"


def main() -> None:
    raw = read_raw_manifest()
    clean = read_manifest(paths.CLEAN_MANIFEST)
    imputed = read_manifest(paths.IMPUTED_MANIFEST)
    features = read_arrays(paths.FEATURES)
    balanced, classes = read_labelled(paths.TRAIN_BALANCED)

    panels = {
        "as ingested": exploration.raw_labels(raw),
        "after cleaning": imputed[["label"]],
        "training split after synthesis": exploration.balanced_labels(balanced["labels"], balanced["synthetic"], classes),
    }
    save_figure(label_distributions(panels), EDA_PLOTS / "label_distribution.png")
    sizes = clean[["width", "height"]].assign(label=clean["label"].fillna("<missing>"))
    save_figure(size_distribution(sizes), EDA_PLOTS / "image_sizes.png")
    means = exploration.class_mean_images(features["images"], features["labels"], classes)
    save_figure(class_means(means), EDA_PLOTS / "class_means.png")

    spellings, spelling_table = exploration.spelling_summary(panels["as ingested"])
    write_csv_atomic(spelling_table, SPELLINGS)
    summary = {
        "labels_as_ingested": spellings,
        "labels_after_cleaning": exploration.counts(imputed),
        "labels_after_synthesis": exploration.counts(panels["training split after synthesis"]),
        "raw_images": exploration.size_summary(clean),
        "class_mean_intensity": {name: round(float(image.mean()), 3) for name, image in means.items()},
    }
    write_json_atomic(summary, SUMMARY)
    print(f"eda: figures in {paths.relative(EDA_PLOTS)}, summary in {paths.relative(SUMMARY)}")


if __name__ == "__main__":
    run_stage(main)

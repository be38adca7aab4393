"""End-to-end: the data stages under DVC in a temporary copy of the repository."""
import json
import re

import pytest

DATA_STAGES = ["ingest", "preprocess", "impute", "featurize", "split", "synthesize", "augment", "eda", "visualize"]
TARGETS = ["augment", "eda", "visualize"]


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.mark.slow
def test_data_pipeline_reruns_only_what_changed_and_is_deterministic(repo_copy):
    repo = repo_copy()
    first = repo.dvc("repro", *TARGETS)
    assert stages_run(first.stdout) == {"check_params", *DATA_STAGES}
    assert "it/s]" not in first.stderr and "%|" not in first.stderr  # no progress bars off a terminal

    dag = repo.dvc("dag").stdout
    assert all(stage in dag for stage in DATA_STAGES)
    metrics = repo.dvc("metrics", "show").stdout
    assert "metrics/preprocess.json" in metrics and "rows_in" in metrics
    assert "dropped_by_reason" not in metrics and "class_counts" not in metrics  # breakdowns are plots
    tables = ["plots/preprocess/dropped_by_reason.csv", "plots/impute/class_counts.csv", "plots/split/train.csv",
              "plots/synthesize/after.csv"]
    plots = json.loads(repo.dvc("plots", "show", "--json", *tables).stdout)  # the model stages have not run
    assert not plots.get("errors")
    for table in tables:
        assert plots["data"][table][0]["content"]["data"]["values"], table
    reasons = (repo.path / "plots/preprocess/dropped_by_reason.csv").read_text().splitlines()
    preprocess = json.loads((repo.path / "metrics/preprocess.json").read_text())
    assert sum(int(line.split(",")[1]) for line in reasons[1:]) == preprocess["rows_dropped"]
    eda = json.loads((repo.path / "reports/eda.json").read_text())
    assert eda["labels_as_ingested"]["rows"] == json.loads((repo.path / "metrics/ingest.json").read_text())["rows"]

    for figure in ["plots/samples.png", "plots/augment_preview.png", "plots/eda/label_distribution.png",
                   "plots/eda/image_sizes.png", "plots/eda/class_means.png"]:
        assert (repo.path / figure).stat().st_size > 5000, figure

    again = repo.dvc("repro", *TARGETS)
    assert stages_run(again.stdout) == set() and "up to date" in again.stdout

    repo.set_params({"split": {"val_fraction": 0.2}})
    changed = repo.dvc("repro", *TARGETS)
    # any params change reruns the check (a few seconds); its output is constant, so ingest and the
    # stages between it and split do not rerun
    assert stages_run(changed.stdout) == {"check_params", "split", "synthesize", "augment", "eda", "visualize"}

    lock = (repo.path / "dvc.lock").read_bytes()
    repo.dvc("repro", "--force", *TARGETS)
    assert (repo.path / "dvc.lock").read_bytes() == lock

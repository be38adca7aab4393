"""Select: the best of the trained models by one metric on the VALIDATION split (never
test, which stays an unbiased report), copied to models/best/ with a sidecar that carries
everything serving needs (classes, image size, normalisation, architecture) and, under
``info``, where it came from: the source stage, its validation and test metrics, its params.

in: metrics/evaluate/{train,finetune,transfer}.json, models/{train,finetune,transfer}
out: models/best/{model.pt,model.json}, metrics/select.json (under ``best``: the model and its
     validation and test scores; a name no other metrics file uses, so ``dvc exp show`` heads
     these columns ``best.test.accuracy``, not ``metrics/select.json:test.accuracy``)
params: select.metric
"""
from __future__ import annotations

import dataclasses
import shutil

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import atomic_dir, read_json, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.evaluation import CANDIDATES, METRIC_NAMES, select_best
from lifecycle.models import SIDECAR_FILE, WEIGHTS_FILE, load_spec


def main() -> None:
    params = load_params().select
    reports = {name: read_json(paths.evaluation_report(name)) for name in CANDIDATES}
    chosen = select_best(reports, params.metric)
    source = load_spec(paths.model_dir(chosen))
    headline = {split: {m: reports[chosen][split][m] for m in METRIC_NAMES} for split in ("val", "test")}
    info = {
        "source": chosen,
        "selected_by": f"val.{params.metric}",
        "val": headline["val"],
        "test": headline["test"],
        "params": source.info.get("params", {}),
        "training": {k: v for k, v in source.info.items() if k != "params"},
    }
    spec = dataclasses.replace(source, info=info)
    with atomic_dir(paths.BEST_MODEL) as staging:
        shutil.copyfile(paths.model_dir(chosen) / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        write_json_atomic(spec.to_dict(), staging / SIDECAR_FILE)
    # The candidates' own scores are in metrics/evaluate/ and select.metric in params.yaml:
    # repeating them here would only add columns to `dvc exp show`.
    write_json_atomic({"best": {"model": chosen, **headline}}, paths.METRICS / "select.json")
    candidates = {name: reports[name]["val"][params.metric] for name in CANDIDATES}
    print(f"select: {chosen} (val {params.metric} {candidates[chosen]:.4f}; "
          + ", ".join(f"{n} {v:.4f}" for n, v in candidates.items()) + ")")


if __name__ == "__main__":
    run_stage(main)

"""Monitor (after deployment): is the served model still asked about images like those it was validated on?

Reads the service's prediction log (``served.log_dir``, the service's ``SERVE_LOG_DIR``), groups
its records by the model version that answered, and compares each group with the validation
split: per image statistic a KS test, and for the version in ``models/best`` (the same weights)
the embeddings by a domain classifier (:mod:`lifecycle.monitoring`). Other versions are judged on
the statistics alone: the embeddings of another model are not comparable with this one's.
An empty or missing log passes, and says so.

usage: python -m stages.monitor [--fail-on-drift] [--log-dir DIR]   (exit 1 on drift: for a scheduled job)
in: served.log_dir, models/best, data/processed/split/val.npz
out: metrics/monitor.json (the verdict), plots/monitor/drift.csv (every test), plots/monitor/class_ratio.csv
     (the predicted-class share per hour or day), plots/monitor/drift.png (served against validation)
params: served.log_dir, monitor.*, numerics, seed
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from lifecycle import monitoring, prediction_log
from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import read_arrays, write_csv_atomic, write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.figures import drift_figure
from lifecycle.inference import weights_digest
from lifecycle.models import WEIGHTS_FILE, PenultimateTap, class_probabilities, load_model


def reference(val_images) -> tuple[dict, str, list[str]]:
    """The validation split described as the service describes what it is asked, with models/best."""
    model, spec = load_model(paths.BEST_MODEL)
    tap = PenultimateTap(model)
    _, embeddings = tap.embed(lambda: class_probabilities(model, val_images, spec))
    described = dict(prediction_log.image_statistics(val_images))
    if embeddings is not None:
        described["embedding"] = prediction_log.project(embeddings)
    return described, weights_digest(paths.BEST_MODEL / WEIGHTS_FILE), list(spec.classes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.monitor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fail-on-drift", action="store_true", help="exit 1 when any model version drifted")
    parser.add_argument("--log-dir", help="judge this prediction log instead of served.log_dir (a scheduled job's)")
    args = parser.parse_args(argv)
    pipeline = load_params()
    params = pipeline.monitor
    log_dir = paths.in_repository(args.log_dir or pipeline.served.log_dir)
    found = prediction_log.read_log(log_dir) if log_dir.is_dir() else prediction_log.LogRead()
    val = read_arrays(paths.VAL)
    described, digest, classes = reference(val["images"])
    thresholds = monitoring.Thresholds(alpha=params.alpha, auc_threshold=params.auc_threshold,
                                       min_images=params.min_images)
    versions, rows = {}, []
    for key, records in monitoring.by_version(found.records).items():
        served = monitoring.served_description(records)
        same_model = all(r["model"].get("digest") == digest for r in records)
        against = described if same_model else {k: v for k, v in described.items() if k != "embedding"}
        verdict = monitoring.judge(against, served, thresholds, seed=pipeline.seed)
        verdict["embedding_reference"] = "models/best" if same_model and "embedding" in described else "none"
        versions[key] = verdict
        for test in verdict.get("statistics", []):
            rows.append({"version": key, "feature": test["statistic"], "test": "ks", "score": round(test["ks"], 6),
                         "p_value": test["p_value"], "drifted": test["drifted"]})
        if "embedding" in verdict:
            rows.append({"version": key, "feature": "embedding", "test": "domain_classifier_auc",
                         "score": round(verdict["embedding"]["auc"], 6), "p_value": None,
                         "drifted": verdict["embedding"]["drifted"]})
    drifted = sorted(key for key, verdict in versions.items() if verdict["drifted"])
    if not found.records:
        overall = "no_log"
    elif drifted:
        overall = "drift"
    elif all(v["verdict"] == "insufficient" for v in versions.values()):
        overall = "insufficient"
    else:
        overall = "no_drift"
    write_json_atomic({
        "verdict": overall, "drifted": bool(drifted), "records": len(found.records),
        "unreadable_lines": found.unreadable,
        "versions": {key: {"images": v["images"], "verdict": v["verdict"], "drifted": v["drifted"],
                           **({"embedding_auc": round(v["embedding"]["auc"], 6)} if "embedding" in v else {}),
                           "drifted_features": v.get("drifted_features", [])}
                     for key, v in versions.items()},
    }, paths.MONITOR_REPORT)
    write_csv_atomic(pd.DataFrame(rows, columns=["version", "feature", "test", "score", "p_value", "drifted"]),
                     paths.MONITOR_TESTS)
    ratio = monitoring.class_ratio_over_time(found.records, classes, params.bucket)
    write_csv_atomic(pd.DataFrame(ratio, columns=["time", "images", *classes]), paths.MONITOR_CLASS_RATIO)
    latest = found.records and monitoring.by_version(found.records)
    shown = monitoring.served_description(list(latest.values())[-1]) if latest else None
    drift_figure(list(monitoring.STATISTICS), described, shown, paths.MONITOR_FIGURE)
    where = paths.relative(log_dir)
    if not found.records:
        print(f"monitor: no prediction log in {where} (or it is empty): nothing to judge; passes")
    for key, verdict in versions.items():
        detail = verdict.get("reason") or (", ".join(verdict["drifted_features"]) or "nothing drifted")
        auc = f", embedding AUC {verdict['embedding']['auc']:.3f}" if "embedding" in verdict else ""
        print(f"monitor: {key}: {verdict['images']} images, {verdict['verdict']} ({detail}{auc})")
    if found.unreadable:
        print(f"monitor: {found.unreadable} unreadable line(s) in {where} skipped (a crash's partial line)")
    if args.fail_on_drift and drifted:
        print(f"monitor: drift in {', '.join(drifted)} (--fail-on-drift)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    run_stage(main)

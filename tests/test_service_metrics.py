"""/metrics' counters, in one process and summed over several (prometheus-client's multiprocess mode)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]


def samples(text: bytes | str) -> dict[tuple[str, tuple], float]:
    text = text.decode() if isinstance(text, bytes) else text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


_WORKER = """
import sys
from serving import metrics
for _ in range(int(sys.argv[1])):
    metrics.REQUESTS.labels("/predict", "200").inc()
    metrics.PREDICTIONS.labels("cat").inc()
metrics.IMAGES.observe(int(sys.argv[1]))
metrics.serving("cats-vs-dogs", sys.argv[2], "models/best")
metrics.serving("cats-vs-dogs", sys.argv[3], "models/best")
"""


def test_workers_counters_add_up_and_a_swapped_model_reads_zero(tmp_path: Path):
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count, old, new in ((3, "1", "2"), (4, "1", "2")):
        subprocess.run([sys.executable, "-c", _WORKER, str(count), old, new], cwd=ROOT, env=environment, check=True)
    code = "from serving import metrics; import sys; sys.stdout.write(metrics.exposition()[0].decode())"
    text = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, check=True,
                          capture_output=True, text=True).stdout
    found = samples(text)
    prefix = "cats_vs_dogs_"
    assert found[(f"{prefix}requests_total", (("route", "/predict"), ("status", "200")))] == 7
    assert found[(f"{prefix}predictions_total", (("label", "cat"),))] == 7
    assert found[(f"{prefix}images_per_request_count", ())] == 2
    assert found[(f"{prefix}images_per_request_sum", ())] == 7
    model = {labels: value for (name, labels), value in found.items() if name == f"{prefix}model_info"}
    version = {dict(labels)["version"]: value for labels, value in model.items()}
    assert version == {"1": 0, "2": 1}

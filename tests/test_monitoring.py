"""Drift tests on images whose shift is known: none, darker, re-coloured; embeddings alike and apart."""
from __future__ import annotations

import numpy as np
import pytest

from lifecycle import monitoring, prediction_log
from lifecycle.monitoring import Thresholds


def images(count: int, seed: int, brightness: float = 0.5, red: float = 0.0) -> np.ndarray:
    generator = np.random.default_rng(seed)
    base = generator.normal(brightness, 0.12, (count, 1, 1, 1)) + generator.normal(0, 0.1, (count, 8, 8, 3))
    base[..., 0] += red
    return (np.clip(base, 0, 1) * 255).astype(np.uint8)


def described(batch: np.ndarray, embedding: np.ndarray | None = None) -> dict:
    found = dict(prediction_log.image_statistics(batch))
    if embedding is not None:
        found["embedding"] = embedding
    return found


def test_statistics_are_per_image_and_in_unit_range():
    batch = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    batch[1] = 255
    batch[1, :, :, 2] = 0  # yellow
    stats = prediction_log.image_statistics(batch)
    assert stats["brightness"].tolist() == pytest.approx([0.0, 0.886])
    assert stats["contrast"].tolist() == [0.0, 0.0]
    assert (stats["red"].tolist(), stats["blue"].tolist()) == ([0.0, 1.0], [0.0, 0.0])


def test_the_projection_is_fixed_per_width_and_keeps_the_dims():
    embeddings = np.random.default_rng(0).normal(size=(5, 64))
    assert prediction_log.project(embeddings).shape == (5, prediction_log.EMBEDDING_DIMS)
    assert np.array_equal(prediction_log.project(embeddings), prediction_log.project(embeddings.copy()))
    assert not np.array_equal(prediction_log.projection(64), prediction_log.projection(65)[:64])


def test_the_same_distribution_is_no_drift_and_a_darker_one_is_drift_on_brightness():
    reference = described(images(300, 0))
    assert monitoring.judge(reference, described(images(200, 1)), Thresholds())["verdict"] == "no_drift"
    darker = monitoring.judge(reference, described(images(200, 2, brightness=0.3)), Thresholds())
    assert darker["verdict"] == "drift" and "brightness" in darker["drifted_features"]


def test_a_recoloured_input_drifts_its_channel():
    reference = described(images(300, 0))
    result = monitoring.judge(reference, described(images(200, 3, red=0.3)), Thresholds())
    assert "red" in result["drifted_features"] and "blue" not in result["drifted_features"]


def test_embeddings_alike_score_near_half_and_apart_score_high():
    generator = np.random.default_rng(4)
    reference = generator.normal(size=(300, 16)).astype(np.float32)
    alike = generator.normal(size=(200, 16)).astype(np.float32)
    apart = generator.normal(0.5, 1.0, size=(200, 16)).astype(np.float32)
    assert monitoring.embedding_drift(reference, alike) < 0.6
    assert monitoring.embedding_drift(reference, apart) > 0.8
    batch = described(images(300, 0), reference)
    result = monitoring.judge(batch, described(images(200, 1), apart), Thresholds())
    assert result["embedding"]["drifted"] and result["drifted_features"] == ["embedding"]


def test_too_few_images_is_no_verdict_and_another_embedding_width_is_judged_on_statistics():
    reference = described(images(300, 0), np.zeros((300, 16)))
    few = monitoring.judge(reference, described(images(10, 1)), Thresholds(min_images=30))
    assert few["verdict"] == "insufficient" and not few["drifted"] and "10 served images" in few["reason"]
    other = monitoring.judge(reference, described(images(100, 1), np.zeros((100, 8))), Thresholds())
    assert "embedding" not in other and other["verdict"] == "no_drift"


def test_the_tap_gives_each_thread_its_own_embeddings_from_the_same_forward_pass():
    import threading

    import torch

    from lifecycle.models import ModelSpec, PenultimateTap, build_model, class_probabilities

    spec = ModelSpec("seed_cnn", ["cat", "dog"], 16, arguments={"channels": [4]})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    tap = PenultimateTap(model)
    batches = [np.random.default_rng(seed).integers(0, 256, (3 + seed, 16, 16, 3), dtype=np.uint8) for seed in range(4)]
    results: dict[int, tuple] = {}

    def run(index: int) -> None:
        for _ in range(5):
            results[index] = tap.embed(lambda: class_probabilities(model, batches[index], spec))

    threads = [threading.Thread(target=run, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    head = model.fc
    for index, batch in enumerate(batches):
        probabilities, embeddings = results[index]
        assert embeddings.shape == (len(batch), head.in_features)
        logits = (torch.as_tensor(embeddings) @ head.weight.T + head.bias).detach()  # the head on what the tap saw
        assert np.allclose(torch.softmax(logits.double(), 1).numpy(), probabilities, atol=1e-5)
    assert class_probabilities(model, batches[0], spec).shape == (3, 2)  # outside capturing: nothing kept
    assert PenultimateTap(lambda batch: batch).available is False


def test_a_log_of_two_model_versions_is_judged_per_version_whatever_their_embeddings():
    batch = images(60, 5)
    stats = prediction_log.image_statistics(batch)

    def record(i: int, version: str, embedding) -> dict:
        return {"model": {"name": "m", "version": version}, "time": f"2026-12-06T0{i % 3}:00",
                "label": "cat" if i % 4 else "dog", "embedding": embedding,
                "statistics": {name: float(values[i]) for name, values in stats.items()}}

    log = [record(i, "1", [0.0] * 8) for i in range(30)] + [record(i, "2", [0.0] * 16) for i in range(30, 60)]
    log.insert(5, {"request_id": "torn"})  # no model or statistics: not a served image's record
    groups = monitoring.by_version(log)
    assert list(groups) == ["m 1", "m 2"] and [len(g) for g in groups.values()] == [30, 30]
    old, new = (monitoring.served_description(group) for group in groups.values())
    assert old["embedding"].shape == (30, 8) and new["embedding"].shape == (30, 16)
    reference = {**stats, "embedding": np.zeros((60, 16), dtype=np.float32)}
    assert "embedding" not in monitoring.judge(reference, old, Thresholds(min_images=20))  # another width: statistics only
    rows = monitoring.class_ratio_over_time(log, ["cat", "dog"], "hour")
    assert [row["time"] for row in rows] == ["2026-12-06T00", "2026-12-06T01", "2026-12-06T02"]
    assert sum(row["images"] for row in rows) == 60 and all(abs(row["cat"] + row["dog"] - 1) < 1e-9 for row in rows)

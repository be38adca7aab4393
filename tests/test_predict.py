"""Batch prediction: a folder of images into a CSV; unreadable files skipped, escaping paths refused."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from lifecycle.core.errors import UserError
from lifecycle.core.params import load_params, validate
from lifecycle.core.schema import PredictParams
from lifecycle.inference import load_predictor
from lifecycle.models import ModelSpec, SeedCNN, save_model
from lifecycle import prediction
from lifecycle.prediction import list_images, predict_folder, resolve_folder

ROOT = Path(__file__).resolve().parents[1]


def predict_params(**values) -> PredictParams:
    """The committed predict.* with ``values`` changed."""
    return PredictParams(**{**load_params().predict.model_dump(), **values})


def make_model(folder: Path) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec(architecture="seed_cnn", classes=["cat", "dog"], image_size=32, arguments={"channels": [8]},
                     info={"stage": "train"})
    save_model(SeedCNN(image_size=32, channels=(8,)), spec, folder)
    return folder


def write_image(path: Path, seed: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8)).save(buffer, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("predict") / "models" / "best")


@pytest.fixture
def folder(tmp_path) -> Path:
    """Five readable images (one nested, one a symlink inside), four unreadable files, two escaping symlinks."""
    root = tmp_path / "photos"
    for i in range(3):
        write_image(root / f"pet{i}.png", i)
    write_image(root / "nested" / "deeper" / "pet3.jpg", 3, "JPEG")
    os.symlink(root / "pet0.png", root / "alias.png")                      # inside: allowed
    (root / "notes.txt").write_text("not an image")
    (root / "empty.jpg").write_bytes(b"")
    (root / "cut.png").write_bytes((root / "pet1.png").read_bytes()[:200])
    (root / "page.html").write_text("<html></html>")
    outside = tmp_path / "secret"
    write_image(outside / "private.png", 9)
    os.symlink(outside / "private.png", root / "escape.png")               # a file outside: refused
    os.symlink(outside, root / "linked_folder")                            # a folder outside: refused
    return root


def test_list_images_refuses_what_resolves_outside_the_folder(folder):
    accepted, refused = list_images(folder)
    assert [file.relative for file in accepted] == [
        "alias.png", "cut.png", "empty.jpg", "nested/deeper/pet3.jpg", "notes.txt", "page.html",
        "pet0.png", "pet1.png", "pet2.png"]
    assert {skip.path: skip.reason for skip in refused} == {"escape.png": "outside_folder", "linked_folder": "outside_folder"}
    assert all(folder.resolve() in file.real.parents for file in accepted)


@pytest.mark.parametrize("name", ["../secret/private.png", "nested/../../secret/private.png", "escape.png"])
def test_explicit_paths_outside_the_folder_are_refused(folder, name):
    with pytest.raises(UserError, match="outside the input folder"):
        list_images(folder, [name])


def test_an_absolute_path_is_refused(folder, tmp_path):
    with pytest.raises(UserError, match="outside the input folder"):
        list_images(folder, [str(folder / "pet0.png")])


def test_explicit_paths_inside_are_classified(folder):
    accepted, refused = list_images(folder, ["pet1.png", "nested/../pet2.png", "missing.png"])
    assert [file.relative for file in accepted] == ["pet1.png", "pet2.png"]
    assert [(skip.path, skip.reason) for skip in refused] == [("missing.png", "missing_file")]


def test_predict_folder_classifies_readable_images_and_reports_the_rest(folder, model_dir):
    predictor = load_predictor(model_dir)
    result = predict_folder(predictor, folder, predict_params(input=str(folder), batch_size=2))
    frame = result.predictions
    assert list(frame.columns) == ["path", "prediction", "label", "probability_cat", "probability_dog"]
    assert frame["path"].tolist() == ["alias.png", "nested/deeper/pet3.jpg", "pet0.png", "pet1.png", "pet2.png"]
    np.testing.assert_allclose(frame["probability_cat"] + frame["probability_dog"], 1.0, atol=2e-6)
    assert (frame["label"] == frame["prediction"].map({0: "cat", 1: "dog"})).all()
    expected = predictor.predict(np.stack([predictor.preprocess(folder / "pet1.png")]))[0]
    row = frame.set_index("path").loc["pet1.png"]
    np.testing.assert_allclose([row["probability_cat"], row["probability_dog"]], expected, atol=2e-6)
    assert frame.set_index("path").loc["alias.png"].equals(frame.set_index("path").loc["pet0.png"])

    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert set(reasons) == {"cut.png", "empty.jpg", "notes.txt", "page.html", "escape.png", "linked_folder"}
    assert reasons == {"cut.png": "truncated_image", "empty.jpg": "empty_file", "notes.txt": "not_an_image",
                       "page.html": "not_an_image", "escape.png": "outside_folder", "linked_folder": "outside_folder"}
    details = dict(zip(result.skipped["path"], result.skipped["detail"]))
    assert "truncated" in details["cut.png"] and "not a recognised image format" in details["notes.txt"]
    assert result.report == {"files": 11, "predicted": 5, "skipped": 6,
                             "labels": {"cat": int((frame["label"] == "cat").sum()),
                                        "dog": int((frame["label"] == "dog").sum())}}


def test_batch_size_does_not_change_the_answers(folder, model_dir):
    predictor = load_predictor(model_dir)
    one = predict_folder(predictor, folder, predict_params(input=str(folder), batch_size=1)).predictions
    many = predict_folder(predictor, folder, predict_params(input=str(folder), batch_size=64)).predictions
    pd.testing.assert_frame_equal(one, many, atol=2e-6, check_exact=False)


def test_chunked_parallel_decoding_gives_the_bytes_of_one_file_at_a_time(folder, model_dir, monkeypatch):
    """Chunks (and threads) change how the work is done, never the batches or the CSV."""
    predictor = load_predictor(model_dir)
    params = predict_params(input=str(folder), batch_size=2)
    monkeypatch.setattr(prediction, "ordered_map", lambda function, items: map(function, items))
    monkeypatch.setattr(prediction, "DECODE_CHUNK", 10_000)
    serial = predict_folder(predictor, folder, params)
    monkeypatch.undo()
    batches = []
    original = predictor.predict
    monkeypatch.setattr(predictor, "predict", lambda images: batches.append(len(images)) or original(images))
    for chunk in (1, 3, 4, 1024):
        monkeypatch.setattr(prediction, "DECODE_CHUNK", chunk)
        batches.clear()
        chunked = predict_folder(predictor, folder, params)
        assert batches == [2, 2, 1]  # batches of batch_size across chunk boundaries, in file order
        assert chunked.predictions.to_csv().encode() == serial.predictions.to_csv().encode()
        assert chunked.skipped.equals(serial.skipped) and chunked.report == serial.report


@pytest.mark.parametrize("entry_point", ["stages.predict", "serving"])  # serving: gunicorn's master and workers
def test_passive_openmp_waiting_is_set_before_torch_loads(entry_point):
    probe = ("import os, sys\n"
             "class Hook:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'torch': print('torch sees', os.environ.get('OMP_WAIT_POLICY'))\n"
             "sys.meta_path.insert(0, Hook())\n"
             f"import {entry_point}\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[0] == "torch sees PASSIVE"


def test_images_over_the_pixel_cap_are_skipped(folder, model_dir):
    result = predict_folder(load_predictor(model_dir), folder, predict_params(input=str(folder), max_pixels=100))
    assert result.predictions.empty
    over = result.skipped.loc[result.skipped["detail"].str.contains("over the limit of 100"), "path"]
    assert set(result.skipped.loc[result.skipped["reason"] == "over_pixel_limit", "path"]) == set(over)
    assert set(over) == {"alias.png", "cut.png", "nested/deeper/pet3.jpg", "pet0.png", "pet1.png", "pet2.png"}


@pytest.mark.parametrize("values, key", [({"batch_size": 0}, "predict.batch_size"),
                                         ({"max_pixels": 0}, "predict.max_pixels"),
                                         ({"input": " "}, "predict.input"),
                                         ({"inputs": "x"}, "predict.inputs")])
def test_bad_params_name_the_key(values, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        validate(PredictParams, {**load_params().predict.model_dump(), **values}, prefix="predict.")


def test_a_missing_input_folder_names_the_key(tmp_path):
    with pytest.raises(UserError, match="predict.input: folder .* does not exist"):
        resolve_folder(str(tmp_path / "nowhere"))


def run_predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.predict", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_the_command_writes_deterministic_csvs(folder, model_dir, tmp_path):
    outputs = []
    for run in ("first", "second"):
        result = run_predict("--input", str(folder), "--model", str(model_dir), "--output", str(tmp_path / run))
        assert result.returncode == 0, result.stderr
        outputs.append([(tmp_path / run / name).read_bytes() for name in ("predictions.csv", "skipped.csv")])
    assert outputs[0] == outputs[1]
    assert "5 images classified" in result.stdout and "6 skipped" in result.stdout
    assert "predict: skipped escape.png: outside_folder (a link that leads outside the folder" in result.stderr
    frame = pd.read_csv(tmp_path / "first" / "predictions.csv")
    assert len(frame) == 5 and set(frame["label"]) <= {"cat", "dog"}


def test_the_command_refuses_a_dotdot_path_without_a_traceback(folder, model_dir, tmp_path):
    result = run_predict("--input", str(folder), "--model", str(model_dir), "--output", str(tmp_path / "o"),
                         "../secret/private.png")
    assert result.returncode == 2
    assert result.stderr.startswith("error: refusing '../secret/private.png'") and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_the_command_without_a_model_says_what_to_do(folder, tmp_path):
    result = run_predict("--input", str(folder), "--model", str(tmp_path / "none"), "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "model.json" in result.stderr and "dvc repro" in result.stderr and "Traceback" not in result.stderr


def test_the_stage_reruns_when_the_folder_it_classifies_changes():
    """The folder is a dep through ${predict.input}, resolved from params (the default: the raw images)."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["predict"]
    assert "${predict.input}" in stage["deps"] and "models/best" in stage["deps"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["predict"]
    assert validate(PredictParams, params, prefix="predict.").input == "data/raw/images"


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--input", "{folder}"], ["--model", "{model}"], ["pet0.png"]])
def test_a_run_outside_the_pipeline_needs_an_output_folder_and_leaves_the_stage_outputs_alone(
    args, folder, model_dir
):
    watched = [ROOT / "data" / "predictions" / "predictions.csv", ROOT / "metrics" / "predict.json"]
    before = [path.read_bytes() if path.exists() else None for path in watched]
    result = run_predict(*(a.format(folder=folder, model=model_dir) for a in args))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --input, --model and FILE classify outside the pipeline: pass --output DIR")
    assert [path.read_bytes() if path.exists() else None for path in watched] == before

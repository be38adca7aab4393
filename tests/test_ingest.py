"""Ingest from each supported source, and the one-sentence errors for bad input."""
import sys

import pandas as pd
import pytest
from PIL import Image

from lifecycle.core.errors import UserError
from lifecycle.sources import from_csv, from_imagefolder, from_kaggle


def picture(path, color=(200, 100, 50), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), color).save(path, format=fmt)


def junk(folder):
    (folder / "Thumbs.db").write_bytes(b"\x00" * 64)
    (folder / ".DS_Store").write_bytes(b"\x00" * 64)
    (folder / "notes.txt").write_text("not an image")


def test_kaggle_layout_any_extension_case(tmp_path):
    source = tmp_path / "train"
    picture(source / "cat.1.jpg", fmt="JPEG")
    picture(source / "dog.2.JPG", fmt="JPEG")
    picture(source / "Dog.3.jpeg", fmt="JPEG")
    picture(source / "bird.4.png")
    source.mkdir(exist_ok=True)
    junk(source)
    result = from_kaggle(source, tmp_path / "raw")
    assert sorted(result.manifest["label"]) == ["cat", "dog", "dog"]
    assert all((tmp_path / "raw" / p).is_file() for p in result.manifest["image_path"])
    assert result.skipped.counts() == {"hidden_or_system_file": 2, "not_an_image": 1, "name_not_cat_or_dog": 1}


def test_imagefolder_layout(tmp_path):
    source = tmp_path / "pets"
    picture(source / "cat" / "a.png")
    picture(source / "dog" / "b.png")
    picture(source / "stray.png")
    junk(source / "cat")
    result = from_imagefolder(source, tmp_path / "raw")
    assert dict(zip(result.manifest["image_path"], result.manifest["label"])) == {
        "images/cat/a.png": "cat", "images/dog/b.png": "dog"}
    assert result.skipped.counts()["not_in_a_class_folder"] == 1 and len(result.skipped) == 4


def test_csv_manifest_keeps_missing_files_for_preprocess_to_count(tmp_path):
    folder = tmp_path / "data"
    picture(folder / "pics" / "one.png")
    picture(folder / "pics" / "two.png")
    picture(tmp_path / "elsewhere" / "three.png")
    manifest = pd.DataFrame({
        "file": ["pics/one.png", str(folder / "pics" / "two.png"), "pics/missing.png", "pics/readme.txt",
                 str(tmp_path / "elsewhere" / "three.png"), "../elsewhere/three.png"],
        "animal": ["cat", "dog", "cat", "dog", "cat", "dog"],
        "extra": ["x", "y", "z", "w", "v", "u"],
    })
    manifest.to_csv(folder / "list.csv", index=False)
    result = from_csv(folder, "list.csv", tmp_path / "raw", "file", "animal")
    assert result.manifest["image_path"].tolist() == ["images/pics/one.png", "images/pics/two.png",
                                                      "images/pics/missing.png"]
    # outside the folder DVC tracks: skipped and counted, never read from an untracked place
    assert result.skipped.counts() == {"not_an_image": 1, "outside_folder": 2}
    assert "extra" in result.manifest.columns
    with pytest.raises(UserError, match="ingest.label_column: column 'label'"):
        from_csv(folder, "list.csv", tmp_path / "raw2", "file", "label")
    with pytest.raises(UserError, match="ingest.manifest: 'nope.csv' is not a file in ingest.path"):
        from_csv(folder, "nope.csv", tmp_path / "raw3", "file", "animal")


def test_missing_folder_and_folder_without_images(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        from_kaggle(tmp_path / "nope", tmp_path / "raw")
    empty = tmp_path / "empty"
    empty.mkdir()
    junk(empty)
    (empty / "cat.1.jpg").write_text("not really a jpeg")
    with pytest.raises(UserError, match="no readable image"):
        from_kaggle(empty, tmp_path / "raw")


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"ingest": {"synthetic": {"count": -5}}}, "ingest.synthetic.count"),
        ({"ingest": {"source": "flickr"}}, "ingest.source"),
        ({"ingest": {"source": "kaggle", "path": "no/such/folder"}}, "no/such/folder"),
        ({"ingest": {"source": "imagefolder", "path": "tests"}}, "no readable image"),
        ({"ingest": {"source": "csv", "path": "tests/conftest.py"}}, "is not a folder"),
        ({"ingest": {"synthetic": {"count": "many"}}}, "ingest.synthetic.count' must be an integer"),
        ({"seed": 1.5}, "'seed' must be an integer"),
    ],
)
def test_stage_refuses_bad_input_with_one_sentence(repo_copy, overrides, fragment):
    repo = repo_copy(overrides)
    result = repo.run(sys.executable, "-m", "stages.ingest", check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo.path / "data" / "raw").exists()

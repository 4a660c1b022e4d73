"""``load_fer_dataset``: every source kind (saved dataset, imagefolder, Hub id, synthetic) and the
label-order check against a model's ``id2label``."""
from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_fer.data.benchmarks import main
from hf_fer.data.loading import DatasetLoadError, LabelMismatchError, load_fer_dataset
from hf_fer.data.synthetic import make_synthetic_fer
from hf_fer.labels import get_label_names, id2label

RAF_CLASS_DIRS = ["Surprise", "Fear", "Disgust", "Happy", "Sad", "Angry", "Neutral"]


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    """``train/<Class>/`` + ``test/<Class>/`` with k+1 images in the k-th RAF-DB class (unequal counts)."""
    root = tmp_path_factory.mktemp("imagefolder")
    value = 0
    for split in ("train", "test"):
        for k, class_dir in enumerate(RAF_CLASS_DIRS):
            (root / split / class_dir).mkdir(parents=True)
            for i in range(k + 1):
                value += 1
                (root / split / class_dir / f"{i}.png").write_bytes(png(value))
    return root


@pytest.fixture(scope="module")
def prepared(imagefolder, tmp_path_factory):
    """The same images through prepare-dataset (RAF-DB order)."""
    out = tmp_path_factory.mktemp("prepared") / "rafdb"
    assert main(["--benchmark", "raf-db", "--raw-dir", str(imagefolder), "--output", str(out), "--no-progress"]) == 0
    return out


def names_per_example(dataset: datasets.Dataset) -> list[str]:
    names = dataset.features["label"].names
    return [names[label] for label in dataset["label"]]


def test_saved_dataset_with_matching_id2label(prepared):
    dataset = load_fer_dataset(prepared, id2label=id2label("raf-db"))
    assert sorted(dataset) == ["test", "train"]
    assert dataset["train"].features["label"].names == get_label_names("raf-db")
    assert np.bincount(dataset["test"]["label"]).tolist() == [1, 2, 3, 4, 5, 6, 7]
    test = load_fer_dataset(prepared, id2label=id2label("raf-db"), split="test")
    assert isinstance(test, datasets.Dataset) and len(test) == 28


def test_strict_mismatch_shows_both_lists(prepared):
    with pytest.raises(LabelMismatchError) as error:
        load_fer_dataset(prepared, id2label=id2label("fer2013"))
    message = str(error.value)
    assert "dataset labels: [(0, 'surprise'), (1, 'fear')" in message
    assert "model id2label: [(0, 'anger'), (1, 'disgust')" in message
    assert "label_map='auto'" in message


def test_auto_remaps_by_name(prepared):
    original = load_fer_dataset(prepared, split="test")
    remapped = load_fer_dataset(prepared, id2label=id2label("fer2013"), label_map="auto", split="test")
    assert remapped.features["label"].names == get_label_names("fer2013")
    assert names_per_example(remapped) == names_per_example(original)  # every example keeps its class
    assert remapped["label"] != original["label"]


def test_imagefolder_is_alphabetical_and_gets_checked(imagefolder):
    raw = load_fer_dataset(imagefolder)
    assert raw["train"].features["label"].names == sorted(RAF_CLASS_DIRS)  # imagefolder: alphabetical folder names
    with pytest.raises(LabelMismatchError):
        load_fer_dataset(imagefolder, id2label=id2label("raf-db"))
    aligned = load_fer_dataset(imagefolder, id2label=id2label("raf-db"), label_map="auto")
    assert aligned["test"].features["label"].names == get_label_names("raf-db")
    # k+1 images in the k-th RAF-DB class: counts identify the classes independently of the mapping
    assert np.bincount(aligned["test"]["label"]).tolist() == [1, 2, 3, 4, 5, 6, 7]
    # SFEW's order is alphabetical: the imagefolder names (Angry, Disgust, ...) canonicalise to it
    assert load_fer_dataset(imagefolder, id2label=id2label("sfew"))["train"].num_rows == 28


def test_classes_missing_from_model(prepared):
    seven = {i: n for i, n in enumerate(["neutral", "happiness", "sadness", "surprise", "fear", "disgust"])}  # no anger
    with pytest.raises(LabelMismatchError, match=r"no class for dataset classes \['anger'\]"):
        load_fer_dataset(prepared, id2label=seven, label_map="auto")
    dropped = load_fer_dataset(prepared, id2label=seven, label_map="auto", drop_unmapped=True, split="test")
    assert len(dropped) == 28 - 6 and "anger" not in names_per_example(dropped)


def test_synthetic_goes_through_the_same_path(tmp_path):
    dataset = load_fer_dataset("synthetic", id2label=id2label("affectnet-8"), synthetic_options={"num_train": 16, "num_test": 8, "image_size": 32})
    assert sorted(dataset) == ["test", "train"] and len(dataset["train"]) == 16
    assert dataset["train"].features["label"].names == get_label_names("affectnet-8")  # rendered in the model's space
    # a saved synthetic dataset (a single Dataset) loads like a prepared benchmark
    make_synthetic_fer(12, image_size=32, seed=3, label_space="raf-db").save_to_disk(str(tmp_path / "synthetic"))
    saved = load_fer_dataset(tmp_path / "synthetic", id2label=id2label("fer2013"), label_map="auto")
    assert list(saved) == ["train"] and saved["train"].features["label"].names == get_label_names("fer2013")


def test_missing_sources_and_offline_hub():
    with pytest.raises(DatasetLoadError, match="does not exist"):
        load_fer_dataset("./no/such/dir")
    with pytest.raises(DatasetLoadError, match="split 'valid' not found"):
        load_fer_dataset("synthetic", split="valid", synthetic_options={"num_train": 4, "num_test": 4, "image_size": 32})
    # HF_HUB_OFFLINE=1 in tests: a Hub id is routed to datasets.load_dataset, which cannot reach the Hub
    with pytest.raises(DatasetLoadError, match=r"could not load Hub dataset 'hf-fer-tests/not-a-dataset' \(offline mode"):
        load_fer_dataset("hf-fer-tests/not-a-dataset")


def test_raw_download_is_pointed_to_prepare_dataset(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    with pytest.raises(DatasetLoadError, match="prepare-dataset --benchmark NAME"):
        load_fer_dataset(tmp_path)


def test_in_memory_dataset_is_checked_too():
    faces = make_synthetic_fer(8, image_size=32, seed=5, label_space="caer-s")
    assert list(load_fer_dataset(faces, id2label=id2label("sfew"))) == ["train"]  # same alphabetical order
    with pytest.raises(LabelMismatchError):
        load_fer_dataset(faces, id2label=id2label("raf-db"))
    remapped = load_fer_dataset(datasets.DatasetDict({"test": faces}), id2label=id2label("raf-db"), label_map="auto", split="test")
    assert names_per_example(remapped) == names_per_example(faces)

"""Dataset loading for training: per-split class orders, label ranges, unreadable images, `labels` columns,
recipe-relative config files."""
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hf_fer.data.loading import DatasetLoadError, LabelMismatchError, load_fer_dataset
from hf_fer.training import RecipeError, load_recipe
from hf_fer.training.data import EvalImages, TrainingImages, build_train_transform, collate

REPO = Path(__file__).resolve().parents[1]
RAF = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]  # RAF-DB's order (hf_fer.labels)


def _png(value: int, size: int = 8) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, 255 - value, value // 2)).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


BROKEN = {"bytes": b"not an image at all", "path": "broken.png"}


def _split(names: list[str], label_names: list[str], images=None, column: str = "label") -> datasets.Dataset:
    """A split whose rows have the classes ``names``, encoded in the ClassLabel order ``label_names``."""
    images = images or [_png(10 * i) for i in range(len(names))]
    features = datasets.Features({"image": datasets.Image(), column: datasets.ClassLabel(names=label_names)})
    return datasets.Dataset.from_dict({"image": images, column: [label_names.index(n) for n in names]}, features=features)


def _names(split: datasets.Dataset) -> list[str]:
    return [split.features["label"].int2str(int(i)) for i in split["label"]]


# ---------------------------------------------------------------------------------------------- class order per split


def test_held_out_splits_with_another_class_order_get_the_train_order(caplog):
    rows = ["happiness", "surprise", "neutral", "anger", "fear"]
    data = datasets.DatasetDict({"train": _split(rows, RAF), "validation": _split(rows[::-1], RAF[::-1]),
                                 "test": _split(rows[1:], RAF[::-1])})
    with caplog.at_level(logging.WARNING):
        loaded = load_fer_dataset(data)
    said = [r.getMessage() for r in caplog.records if "remapping the labels of" in r.getMessage()]
    assert len(said) == 2 and "remapping the labels of 'test' to the order of 'train' by name" in said[1]
    for name in ("validation", "test"):
        assert loaded[name].features["label"].names == RAF  # train's order, not the split's own
    # Indices now mean train's classes and still name the same expressions (checked against the rows we wrote).
    assert _names(loaded["validation"]) == rows[::-1] and [RAF[i] for i in loaded["test"]["label"]] == rows[1:]
    assert loaded["validation"].column_names == ["image", "label"]


def test_held_out_split_order_is_aligned_before_mapping_to_the_model():
    fer = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    rows = ["happiness", "surprise", "neutral"]
    data = datasets.DatasetDict({"train": _split(rows, fer), "test": _split(rows, RAF)})
    loaded = load_fer_dataset(data, id2label=dict(enumerate(RAF)), label_map="auto")
    for name in ("train", "test"):
        assert [RAF[i] for i in loaded[name]["label"]] == rows


def test_held_out_split_with_other_classes_is_refused_naming_the_split():
    data = datasets.DatasetDict({"train": _split(["happiness"], RAF), "test": _split(["happiness"], RAF[:6] + ["contempt"])})
    with pytest.raises(LabelMismatchError, match=r"split 'test' has other classes than split 'train'(.|\n)*contempt"):
        load_fer_dataset(data)


# ---------------------------------------------------------------------------------------------- label range


@pytest.mark.parametrize("split", ["train", "test"])
def test_out_of_range_labels_are_refused_at_load_naming_split_count_and_rows(split):
    good = _split(["happiness", "anger", "fear", "neutral"], RAF)
    bad = datasets.Dataset.from_dict({"image": good["image"], "label": [3, -1, 2, None]}, features=good.features)
    data = datasets.DatasetDict({"train": good, "test": good, split: bad})
    with pytest.raises(DatasetLoadError, match=rf"split '{split}': 2 of 4 labels .* 0\.\.6 .* rows \(label\): 1 \(-1\), 3 \(None\)"):
        load_fer_dataset(data)
    with pytest.raises(DatasetLoadError, match=rf"split '{split}'"):  # also when the labels are then mapped to a model
        load_fer_dataset(data, id2label=dict(enumerate(sorted(RAF))), label_map="auto")


def test_training_checks_only_the_splits_it_uses_and_orders_them_like_its_train_split(tmp_path):
    from hf_fer.training import recipe_from_dict
    from hf_fer.training.loop import _load_data

    rows = ["happiness", "fear", "anger"]
    good = _split(rows, RAF)
    unlabelled = datasets.Dataset.from_dict({"image": good["image"], "label": [-1, -1, -1]}, features=good.features)
    data = datasets.DatasetDict({"fit": _split(rows, RAF[::-1]), "dev": good, "holdout": good, "unlabelled": unlabelled})
    data.save_to_disk(str(tmp_path / "data"))
    recipe = recipe_from_dict({"model": {"arch": "mini_xception"},
                               "data": {"train_split": "fit", "validation_split": "dev", "test_split": "holdout"}})
    train, validation, test, _ = _load_data(recipe, str(tmp_path / "data"), None)
    assert train.features["label"].names == RAF[::-1] == validation.features["label"].names == test.features["label"].names
    assert [RAF[::-1][i] for i in validation["label"]] == rows
    with pytest.raises(DatasetLoadError, match=r"split 'unlabelled': 3 of 3 labels"):
        load_fer_dataset(str(tmp_path / "data"))
    with pytest.raises(DatasetLoadError, match=r"split 'train' not found .* available splits: \['fit', 'dev', 'holdout', 'unlabelled'\]"):
        load_fer_dataset(str(tmp_path / "data"), splits=["train", "dev"])


# ---------------------------------------------------------------------------------------------- `labels` column


def test_a_labels_column_is_loaded_as_label():
    data = datasets.DatasetDict({"train": _split(["fear", "anger"], RAF, column="labels")})
    loaded = load_fer_dataset(data, id2label=dict(enumerate(RAF)))
    assert loaded["train"].column_names == ["image", "label"] and loaded["train"]["label"] == [1, 5]


# ---------------------------------------------------------------------------------------------- unreadable images


class _Processor:
    """The two image-processor attributes the training transform reads, with a fixed 8x8 size."""

    size = {"height": 8, "width": 8}
    image_mean = image_std = [0.5, 0.5, 0.5]

    def __call__(self, images, return_tensors="pt"):
        array = np.asarray(images.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
        return {"pixel_values": torch.from_numpy(array).permute(2, 0, 1)[None]}


def test_an_unreadable_training_image_is_replaced_by_the_next_readable_row(caplog):
    rows = ["happiness", "anger", "fear", "neutral"]
    images = [_png(10), BROKEN, _png(90), _png(200)]
    split = _split(rows, RAF, images=images)
    transform = build_train_transform(_Processor(), [{"name": "RandomHorizontalFlip", "p": 0.5}])
    view = TrainingImages(split, transform, seed=0)
    with caplog.at_level(logging.WARNING):
        samples = [view[i] for i in (1, 1, 3)]
    reports = [r for r in caplog.records if "broken.png (row 1)" in r.getMessage()]
    assert len(reports) == 1 and "training goes on without it" in reports[0].getMessage()
    assert samples[0]["labels"] == RAF.index("fear")  # row 2 takes row 1's place
    torch.testing.assert_close(samples[0]["pixel_values"], samples[1]["pixel_values"])
    # Another process (a fresh view: a resumed run, another rank) gets the same sample.
    torch.testing.assert_close(TrainingImages(split, transform, seed=0)[1]["pixel_values"], samples[0]["pixel_values"])
    batch = collate([view[i] for i in range(4)])
    assert batch["pixel_values"].shape[0] == 4 and "valid" not in batch
    # The last row wraps around to the first.
    last = TrainingImages(_split(rows[:2], RAF, images=[_png(10), BROKEN]), transform, seed=0)[1]
    assert last["labels"] == RAF.index("happiness")


def test_an_unreadable_evaluation_image_is_marked_and_left_out_of_the_metrics(caplog):
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from hf_fer.training.loop import evaluate_model

    rows = ["happiness", "anger", "fear", "neutral", "surprise"]
    split = _split(rows, RAF, images=[_png(10), _png(40), BROKEN, _png(90), _png(200)])
    with caplog.at_level(logging.WARNING):
        batch = collate([EvalImages(split, _Processor())[i] for i in range(5)])
    assert batch["valid"].tolist() == [True, True, False, True, True]
    assert any("broken.png (row 2)" in r.getMessage() for r in caplog.records)

    class Oracle(torch.nn.Module):
        """Knows each readable (one-colour) image by its mean pixel value; predicts surprise for anything else."""

        def __init__(self, table):
            super().__init__()
            self.table = table

        def forward(self, pixel_values):
            classes = [self.table.get(round(float(v), 4), 0) for v in pixel_values.mean(dim=(1, 2, 3))]
            return SimpleNamespace(logits=torch.nn.functional.one_hot(torch.tensor(classes), len(RAF)).float())

    view = EvalImages(split, _Processor())
    oracle = Oracle({round(float(view[i]["pixel_values"].mean()), 4): RAF.index(rows[i]) for i in range(5) if i != 2})
    loader = DataLoader(EvalImages(split, _Processor()), batch_size=2, collate_fn=collate)
    metrics = evaluate_model(Accelerator(cpu=True), oracle, loader, RAF)
    # Four readable images, all right; the unreadable fear image (predicted surprise) is not counted.
    assert metrics["num_samples"] == 4 and metrics["accuracy"] == 1.0


# ---------------------------------------------------------------------------------------------- training end to end


def test_training_goes_on_past_unreadable_images_with_misordered_splits_and_a_labels_column(tmp_path):
    """One tiny run: a `labels` column, a validation/test split in another class order, a corrupt image in every split."""
    from hf_fer.data.synthetic import make_synthetic_fer
    from hf_fer.training import recipe_from_dict
    from hf_fer.training.loop import train

    faces = make_synthetic_fer(24, image_size=32, seed=0, label_space="raf-db", difficulty="easy")
    faces = faces.cast_column("image", datasets.Image(decode=False))
    names = [faces.features["label"].int2str(int(i)) for i in faces["label"]]
    images = list(faces["image"])
    train_images, held_images = images[:16], images[16:]
    train_images[5], held_images[1] = BROKEN, BROKEN
    data = datasets.DatasetDict({
        "train": _split(names[:16], RAF, images=train_images, column="labels"),
        "validation": _split(names[16:], RAF[::-1], images=held_images, column="labels"),
        "test": _split(names[16:], RAF[::-1], images=held_images, column="labels"),
    })
    data.save_to_disk(str(tmp_path / "data"))
    recipe = recipe_from_dict({
        "model": {"arch": "mini_xception", "label_space": "raf-db", "config": {"image_size": 32},
                  "image_processor": {"size": {"height": 32, "width": 32}}},
        "data": {"sampler": "class_balanced"},
        "training": {"seed": 0, "epochs": 1, "batch_size": 4, "eval_batch_size": 3, "optimizer": {"name": "adam", "lr": 1e-3}},
    })
    results = train(recipe, str(tmp_path / "data"), tmp_path / "run", quiet=True)
    assert results["status"] == "finished"
    assert results["history"][-1]["num_samples"] == 7 and results["test"]["num_samples"] == 7  # 8 held-out rows, 1 unreadable
    info = json.loads((tmp_path / "run" / "training_info.json").read_text())
    assert info["train_samples"] == 16
    assert json.loads((tmp_path / "run" / "config.json").read_text())["id2label"]["0"] == "surprise"


# ---------------------------------------------------------------------------------------------- recipe paths


def test_config_file_is_resolved_from_the_recipe_not_the_current_directory(tmp_path, monkeypatch):
    from transformers import AutoConfig

    monkeypatch.chdir(tmp_path)
    shipped = load_recipe(REPO / "modeling_configs" / "vt_nr" / "synthetic.yaml")  # repo-root-relative path in the file
    assert Path(shipped.model.config_file) == REPO / "modeling_configs" / "vt_nr" / "synthetic.json"
    assert AutoConfig.from_pretrained(shipped.model.config_file).model_type == "vt_nr"

    folder = tmp_path / "recipes" / "mine"
    folder.mkdir(parents=True)
    (folder / "tiny.json").write_text(json.dumps({"model_type": "mini_xception", "image_size": 32}))
    (folder / "r.yaml").write_text(yaml.safe_dump({"model": {"arch": "mini_xception", "config_file": "tiny.json"}}))
    monkeypatch.chdir(REPO)
    assert Path(load_recipe(folder / "r.yaml").model.config_file) == folder / "tiny.json"
    (folder / "missing.yaml").write_text(yaml.safe_dump({"model": {"arch": "mini_xception", "config_file": "nope.json"}}))
    with pytest.raises(RecipeError, match=r"model.config_file 'nope.json' not found next to the recipe"):
        load_recipe(folder / "missing.yaml")

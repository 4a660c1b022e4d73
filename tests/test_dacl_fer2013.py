"""DACL on FER2013 as the student report ran it (issue 20): the recipes, their geometry (48×48 grayscale →
3 channels → 200-px crops), a one-epoch training run with that geometry, and the attention-weight plot."""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_fer.labels import get_label_names
from hf_fer.training import load_recipe, train
from hf_fer.training.data import build_train_transform

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "modeling_configs" / "dacl"
FER2013 = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
# (file, crop, batch, epochs) as the report describes its experiments
EXPERIMENTS = [("fer2013_exp0.yaml", 224, 128, 60), ("fer2013_exp1.yaml", 200, 128, 30), ("fer2013_exp2.yaml", 224, 64, 30),
               ("fer2013.yaml", 200, 64, 30), ("fer2013_exp4.yaml", 200, 64, 30)]
TINY = ["model.config.backbone_depths=[1, 1, 1, 1]", "model.config.attention_hidden_sizes=[32, 16, 8]", "training.epochs=1",
        "training.batch_size=4", "training.eval_batch_size=8", "training.checkpoint_every_steps=null", "training.log_every_steps=1"]


@pytest.mark.parametrize("name, crop, batch_size, epochs", EXPERIMENTS)
def test_recipes_load_validate_and_follow_the_report(name, crop, batch_size, epochs):
    recipe = load_recipe(RECIPES / name)
    assert recipe.model.arch == "dacl" and recipe.model.label_space == "fer2013"
    assert get_label_names("fer2013") == FER2013  # fer2013.csv emotion codes 0-6
    assert recipe.model.config["image_size"] == crop
    assert recipe.model.image_processor == {"size": {"shortest_edge": 256}, "crop_size": {"height": crop, "width": crop}}
    assert {"name": "RandomFiveCrop", "size": crop} in recipe.data.augmentation
    assert (recipe.training.batch_size, recipe.training.epochs) == (batch_size, epochs)
    optimizer = recipe.training.optimizer
    assert (optimizer.name, optimizer.lr, optimizer.momentum, optimizer.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
    assert (recipe.training.scheduler.name, recipe.training.scheduler.step_size, recipe.training.scheduler.gamma) == ("step", 20, 0.1)
    assert (recipe.data.validation_split, recipe.data.test_split) == ("validation", "test")
    assert recipe.model.config.get("center_loss_weight", 0.01) == 0.01  # λ = 0.01 (DaclConfig default)
    assert (recipe.model.init_from is not None) == (name == "fer2013_exp4.yaml")
    ablation = load_recipe(RECIPES / "fer2013.yaml", ["model.config.center_loss_attention=uniform"])
    assert ablation.model.config["center_loss_attention"] == "uniform"


def test_grayscale_48px_becomes_three_equal_channels_at_200px():
    """Training transform and the saved processor both copy the grey channel into R, G, B and give 200×200."""
    from hf_fer.models.dacl import DaclImageProcessor

    recipe = load_recipe(RECIPES / "fer2013.yaml")
    processor = DaclImageProcessor(**recipe.model.image_processor)
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8), mode="L")
    mean, std = torch.tensor(processor.image_mean)[:, None, None], torch.tensor(processor.image_std)[:, None, None]
    for pixel_values in (build_train_transform(processor, recipe.data.augmentation)(grey),
                         processor(images=grey.convert("RGB"), return_tensors="pt")["pixel_values"][0]):
        assert pixel_values.shape == (3, 200, 200)
        raw = pixel_values * std + mean  # undo the per-channel normalisation: the three channels are the same image
        torch.testing.assert_close(raw[0], raw[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(raw[0], raw[2], atol=1e-5, rtol=0)


def grayscale_fer2013(path: Path) -> Path:
    """A FER2013-shaped dataset on disk: 48×48 grayscale PNGs, the fer2013 class names, train/validation/test."""
    from hf_fer.data.synthetic import synthetic_arrays

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=FER2013)})
    splits = {}
    for seed, (split, count) in enumerate([("train", 8), ("validation", 7), ("test", 4)]):
        images, labels, names = synthetic_arrays(count, image_size=48, seed=seed, label_space="fer2013")
        assert names == FER2013
        splits[split] = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(image).convert("L") for image in images], "label": labels.tolist()}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


def test_one_epoch_with_the_fer2013_geometry_then_attention_plot(tmp_path):
    from hf_fer.evaluation.runner import main as evaluate_main

    data = grayscale_fer2013(tmp_path / "fer2013")
    recipe = load_recipe(RECIPES / "fer2013.yaml", TINY)
    results = train(recipe, str(data), tmp_path / "run", quiet=True)
    assert results["history"] and np.isfinite(results["history"][-1]["train_loss"]), results["history"]
    assert results["test"]["num_samples"] == 4 and "mean_class_accuracy" in results["test"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["image_size"] == 200 and saved["feature_map_size"] == 7 and saved["id2label"]["0"] == "anger"
    assert json.loads((tmp_path / "run" / "preprocessor_config.json").read_text())["crop_size"] == {"height": 200, "width": 200}

    # The attention plot: mean attention vector of each true class, checked against the model run here directly.
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(tmp_path / "run"), "--dataset", str(data), "--split", "validation", "--device", "cpu",
                          "--output-dir", str(out), "--no-progress", "--attention-plot"]) == 0
    assert (out / "attention_weights.png").stat().st_size > 1000
    written = json.loads((out / "attention_weights.json").read_text())
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tmp_path / "run").eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path / "run")
    validation = datasets.load_from_disk(str(data))["validation"]
    with torch.no_grad():
        pixel_values = processor(images=[image.convert("RGB") for image in validation["image"]], return_tensors="pt")["pixel_values"]
        weights = model(pixel_values=pixel_values, output_attention_weights=True).attention_weights
    labels = np.asarray(validation["label"])
    assert written["label_names"] == FER2013 and written["counts"] == np.bincount(labels, minlength=7).tolist()
    for label in range(7):
        if written["counts"][label]:
            np.testing.assert_allclose(written["mean_attention_weights"][label], weights[labels == label].mean(0).numpy(), atol=1e-5)
        else:
            assert written["mean_attention_weights"][label] is None
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert evaluation["files"]["attention_weights"] == "attention_weights.png"


def test_attention_plot_refuses_models_without_attention_weights(tmp_path):
    import test_evaluation_fixtures as fx
    from hf_fer.evaluation.runner import evaluate_model

    with fx.toy_architecture():
        folder = fx.save_toy_model(tmp_path / "toy")
        with pytest.raises(ValueError, match="--attention-plot: ToyForImageClassification returns no attention weights"):
            evaluate_model(folder, "synthetic", attention_plot=True, device="cpu", progress=False)

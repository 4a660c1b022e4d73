"""transformers' image-classification pipeline on a tiny model of every architecture (as its pipeline tests do)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import hf_fer
from hf_fer.models import ARCHITECTURES

from tiny_models import input_shape, tiny_config

LABELS = {0: "anger", 1: "happiness", 2: "neutral"}


def _images(side: int):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (side + 7 * i, side, 3), dtype=np.uint8)) for i in range(2)]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_image_classification_pipeline(arch, tmp_path):
    spec = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = spec.model_class(tiny_config(arch, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})).eval()
    side = input_shape(arch)[-1]
    processor = spec.image_processor_class(size={"height": side, "width": side}, do_center_crop=False)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    classifier = pipeline("image-classification", model=str(tmp_path))  # from the saved folder, via the Auto classes
    assert type(classifier.model).__name__ == model.__class__.__name__

    images = _images(side)
    results = classifier(images, top_k=3)
    with torch.no_grad():  # independent path: processor + model + softmax
        expected = model(**processor(images, return_tensors="pt")).logits.softmax(-1)
    assert len(results) == 2
    for result, probabilities in zip(results, expected):
        assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)
        assert {r["label"] for r in result} == set(LABELS.values())
        for r in result:
            index = {v: k for k, v in LABELS.items()}[r["label"]]
            assert r["score"] == pytest.approx(probabilities[index].item(), abs=1e-5)
    assert len(classifier(images[0], top_k=1)) == 1
    sigmoid = classifier(images[0], function_to_apply="sigmoid", top_k=3)
    assert all(0 < r["score"] < 1 for r in sigmoid) and sum(r["score"] for r in sigmoid) != pytest.approx(1.0)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_a_whole_photo_is_named_as_such_once(arch, caplog):
    """The image-classification pipeline gives one label per image; a group photo given to it gets a warning that
    points to the face pipeline (once per processor class), face crops and whole-frame models (CAER-S) get none."""
    import importlib
    import logging

    spec = ARCHITECTURES[arch]
    module = importlib.import_module(spec.image_processor_class.__module__)
    module._WARNED_WHOLE_PHOTOS.clear()
    processor = spec.image_processor_class()
    photo = Image.open(Path(__file__).parent / "fixtures" / "faces" / "sample5.jpg")  # 1920x1398, five faces
    crops = [Image.new("RGB", (100, 100)), Image.new("RGB", (600, 600)), np.zeros((500, 400, 3), dtype=np.uint8),
             torch.zeros(3, 120, 112, dtype=torch.uint8)]  # square, large square, 4:5 portrait crop, CHW tensor
    with caplog.at_level(logging.WARNING, logger=module.__name__):
        processor(crops, return_tensors="pt")
        assert not caplog.records
        whole_frames = spec.image_processor_class(face_alignment={"method": "none"})
        whole_frames(photo, return_tensors="pt")
        assert not caplog.records
        processor(photo, return_tensors="pt")
        processor([np.asarray(photo)], return_tensors="pt")  # the same photo as an array: already said
        processor(torch.zeros(3, 640, 480, dtype=torch.uint8), return_tensors="pt")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1, messages
    assert "1920x1398 pixels looks like a whole photo" in messages[0] and "facial-expression-recognition" in messages[0]

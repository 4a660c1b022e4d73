"""Helpers shared by the evaluation / hub / predict / benchmark / end-to-end tests (no tests here).

They build tiny models on the throwaway toy architecture (tests/toy_arch), so the tests stay fast and
do not depend on the real architectures, which are written in parallel.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

TOY_LABELS = {0: "anger", 1: "happiness", 2: "neutral"}


@contextlib.contextmanager
def toy_architecture():
    """Register tests/toy_arch as architecture ``toy`` for the duration of a test (module)."""
    from hf_fer.models import ARCHITECTURES, Architecture, register_architecture

    added = "toy" not in ARCHITECTURES
    if added:
        ARCHITECTURES["toy"] = Architecture("toy", "Toy", "a throwaway test architecture", package="toy_arch")
    register_architecture(ARCHITECTURES["toy"])
    try:
        yield ARCHITECTURES["toy"]
    finally:
        if added:
            del ARCHITECTURES["toy"]


def make_toy_model(id2label: dict[int, str] | None = None, seed: int = 0, hidden_size: int = 8):
    from toy_arch import ToyConfig, ToyForImageClassification, ToyImageProcessor

    id2label = dict(id2label or TOY_LABELS)
    torch.manual_seed(seed)
    config = ToyConfig(hidden_size=hidden_size, num_labels=len(id2label), id2label=id2label,
                       label2id={name: index for index, name in id2label.items()})
    return ToyForImageClassification(config).eval(), ToyImageProcessor()


def save_toy_model(folder: Path, id2label: dict[int, str] | None = None, seed: int = 0) -> Path:
    """A save_pretrained folder with remote code and auto_map (what training/conversion produce)."""
    from hf_fer.conversion import save_with_remote_code

    model, processor = make_toy_model(id2label, seed)
    save_with_remote_code(model, processor, folder)
    return Path(folder)


def write_corrupt_image(path: Path) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return path


def reference_predictions(folder: Path, images) -> np.ndarray:
    """Argmax of the saved model on PIL images, computed the plain transformers way (no hf_fer code)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**processor(images=list(images), return_tensors="pt")).logits
    return logits

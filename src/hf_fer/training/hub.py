"""Make what ``transformers.Trainer`` saves loadable without hf_fer: remote code, ``auto_map`` and the image processor.

``Trainer.save_model`` writes the weights and a ``config.json`` without ``auto_map``, and no model code: such a
folder loads only where hf_fer is installed and imported. :func:`save_for_hub` adds the model folder's code files,
the ``auto_map`` entries and ``preprocessor_config.json``, so ``AutoModelForImageClassification.from_pretrained(
folder, trust_remote_code=True)`` works anywhere, as for a folder written by ``hf-fer train`` or ``hf-fer convert``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from transformers import TrainerCallback

__all__ = ["save_for_hub", "SaveForHubCallback"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def save_for_hub(model, save_directory: str | os.PathLike, image_processor=None) -> Path:
    """Write remote code, ``auto_map`` and the image processor into ``save_directory`` (next to Trainer's files).

    ``image_processor``: the one the model was trained with (default: :func:`hf_fer.image_processor_for` of its
    config). The weights are written too when the folder has none. Files are staged in a temporary folder beside
    and moved in one by one with ``os.replace``, ``config.json`` last, so a reader never finds an ``auto_map``
    pointing at code that is not there yet.
    """
    from transformers.dynamic_module_utils import custom_object_save

    from ..image_processors import image_processor_for

    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    processor = image_processor if image_processor is not None else image_processor_for(model.config)
    model.config.__class__.register_for_auto_class()
    model.__class__.register_for_auto_class("AutoModelForImageClassification")
    processor.__class__.register_for_auto_class("AutoImageProcessor")
    staging = Path(tempfile.mkdtemp(prefix=".save_for_hub.", dir=folder))
    try:
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            model.save_pretrained(staging)  # weights, config and code
        else:
            custom_object_save(model, staging, config=model.config)  # the model's code files + auto_map entry
            model.config.save_pretrained(staging)  # config.json with auto_map (+ the configuration file)
        processor.save_pretrained(staging)
        staged = sorted(p for p in staging.iterdir() if p.is_file())
        for path in sorted(staged, key=lambda p: p.name == "config.json"):
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


class SaveForHubCallback(TrainerCallback):
    """``Trainer(..., callbacks=[SaveForHubCallback(processor)])``: every checkpoint folder Trainer writes
    (``OUTPUT/checkpoint-N``) also gets the remote code and the image processor, so it loads without hf_fer."""

    def __init__(self, image_processor=None):
        self.image_processor = image_processor

    def on_save(self, args, state, control, model=None, **kwargs):
        if model is None or not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            save_for_hub(model, checkpoint, self.image_processor)

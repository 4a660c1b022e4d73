"""``image_processor_for(config)``: the image processor that matches a model config, for every architecture.

A model built from a config (``PosterV2ForImageClassification(config)``, a ``transformers.Trainer`` run) has no
``preprocessor_config.json`` to load with ``AutoImageProcessor.from_pretrained``; this gives the processor the
converters and the training loop would pair with it: the architecture's class, sized for ``config.image_size``
where the architecture has one, and the face crop of the benchmark whose class order the config uses.
"""
from __future__ import annotations

import os

from transformers import AutoConfig, PretrainedConfig

__all__ = ["image_processor_for"]


def image_processor_for(config: PretrainedConfig | str | os.PathLike, **kwargs):
    """The image processor matching ``config``: a config object, an architecture name (``"arm"``, its default
    config), or a model folder / Hub id (its ``config.json``). ``kwargs`` override the processor's settings
    (e.g. ``size={"height": 112, "width": 112}``)."""
    from .faces.alignment import training_alignment
    from .labels import benchmark_of
    from .models import ARCHITECTURES

    if not isinstance(config, PretrainedConfig):
        name = str(config)
        config = ARCHITECTURES[name].config_class() if name in ARCHITECTURES else AutoConfig.from_pretrained(name)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(f"image_processor_for: model_type {model_type!r} is not an hf_fer architecture "
                         f"(one of {sorted(ARCHITECTURES)}); use AutoImageProcessor.from_pretrained for other models")
    arch = ARCHITECTURES[model_type]
    converter = arch.converter
    if kwargs or not hasattr(converter, "default_image_processor"):
        processor = arch.image_processor_class(**kwargs)
    else:
        processor = converter.default_image_processor(config)
    if "face_alignment" not in kwargs:
        names = [str(config.id2label[i]) for i in range(config.num_labels)] if getattr(config, "id2label", None) else []
        try:
            benchmark = benchmark_of(names) if names else None
        except KeyError:  # class names outside the canonical expressions (LABEL_0, ...): no benchmark, no face crop
            benchmark = None
        alignment = training_alignment(model_type, benchmark) if benchmark else None
        if alignment is not None:
            processor.face_alignment = alignment
    return processor

"""Convert upstream ARM checkpoints (JiaweiShiCV/Amend-Representation-Module, ``ResNet18_ARM___RAF``).

Upstream ``train_raf-db.py`` saves ``{"iter": epoch, "model_state_dict": ..., "optimizer_state_dict": ...}``
with bare key names; the old DDP script added ``module.`` (stripped by ``load_upstream_checkpoint``).
Key map (the trunk is an ``nn.Sequential`` of torchvision ResNet-18 children upstream)::

    features.0.*  -> backbone.conv1.*        features.1.* -> backbone.bn1.*
    features.4-7.* -> backbone.layer1-4.*    arm.*        -> arm.*        fc.* -> classifier.*

Upstream loads with ``strict=False``, so a wrong file silently gives garbage; here every key must be
used and every parameter filled, or the conversion stops with the offending keys and shapes. The
converted model is in ``affinity_mode="batch"`` (upstream behaviour: predictions depend on the batch),
because upstream has no running affinity estimate; ``calibrate_affinity`` adds one.
"""
from __future__ import annotations

import argparse
import re

import torch

from hf_fer.conversion import ConversionReport, classes_from_head, map_state_dict, require_keys
from hf_fer.labels import id2label as benchmark_id2label

from hf_fer.models.arm.configuration_arm import ArmConfig
from hf_fer.models.arm.image_processing_arm import ArmImageProcessor
from hf_fer.models.arm.modeling_arm import ArmForImageClassification

TRUNK_INDEX_TO_NAME = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
# Our buffers that upstream does not have: filled from the fresh model (zeros), never from the checkpoint.
NOT_IN_UPSTREAM = ("arm.affinity_running_mean", "arm.affinity_num_batches_tracked")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ARM")
    group.add_argument("--de-albino-stride", type=int, default=8,
                       help="stride of the de-albino conv (8 in the released RAF-DB model; the kernel size is read from the weights)")
    group.add_argument("--image-size", type=int, default=224, help="input side the classifier is sized for (193-224 give the same model)")


def rename_key(key: str) -> str | None:
    """Upstream name → ours, or ``None`` for names ARM never had."""
    match = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if match:
        child = TRUNK_INDEX_TO_NAME.get(match.group(1))
        return f"backbone.{child}.{match.group(2)}" if child else None
    if key.startswith("fc."):
        return "classifier." + key[len("fc."):]
    if key.startswith("arm."):
        return key
    return None


def _default_id2label(num_labels: int) -> tuple[dict[int, str], str | None]:
    if num_labels == 7:  # the only released configuration is RAF-DB basic
        return benchmark_id2label("raf-db"), "no --dataset given: class names set to RAF-DB basic order (the only released ARM configuration)"
    return {i: f"class_{i}" for i in range(num_labels)}, f"no --dataset given and {num_labels} classes: generic class names; pass --dataset"


def convert(state_dict, *, num_labels: int | None, id2label: dict[int, str] | None, options: argparse.Namespace):
    if state_dict is None:
        raise ValueError("--arch arm needs --checkpoint (an upstream ARM .pth file)")
    report = ConversionReport()

    require_keys(state_dict, "ARM", ("fc.weight", "arm.de_albino.weight"))
    head = state_dict["fc.weight"]
    num_labels = classes_from_head("fc.weight", head, num_labels, id2label, features="features")
    if id2label is None:
        id2label, note = _default_id2label(num_labels)
        if note:
            report.notes.append(note)
    kernel = state_dict["arm.de_albino.weight"]
    if kernel.ndim != 4 or tuple(kernel.shape[:2]) != (1, 1) or kernel.shape[2] != kernel.shape[3]:
        raise ValueError(f"arm.de_albino.weight must be [1, 1, k, k] (one shared kernel), got {tuple(kernel.shape)}")

    config = ArmConfig(
        num_labels=num_labels,
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        de_albino_kernel_size=kernel.shape[-1],
        de_albino_stride=getattr(options, "de_albino_stride", 8),
        image_size=getattr(options, "image_size", 224),
        de_albino_bias="arm.de_albino.bias" in state_dict,
        affinity_mode="batch",
    )
    if head.shape[1] != config.classifier_in_features:
        raise ValueError(
            f"fc.weight has {head.shape[1]} inputs but this configuration gives {config.classifier_in_features} ARM features "
            f"(image_size {config.image_size}, de-albino kernel {config.de_albino_kernel_size} stride {config.de_albino_stride}); "
            "pass the right --de-albino-stride / --image-size"
        )
    with torch.device("meta"):  # shapes only: every tensor is assigned below, no time spent on random init
        model = ArmForImageClassification(config)
    expected = model.state_dict()

    mapped = map_state_dict(state_dict, rename_key, expected, report, not_in_upstream=NOT_IN_UPSTREAM,
                            model_name="ARM (upstream ResNet18_ARM___RAF)")
    mapped["arm.affinity_running_mean"] = torch.zeros(expected["arm.affinity_running_mean"].shape)
    mapped["arm.affinity_num_batches_tracked"] = torch.zeros((), dtype=torch.long)  # 0: never estimated
    model.load_state_dict(mapped, strict=True, assign=True)
    report.notes.append(
        f"alpha = {float(mapped['arm.alpha']):.4g}; affinity_mode='batch' (upstream): an image's logits depend on the other "
        "images of its batch. Call model.calibrate_affinity(dataloader) to switch to batch-independent 'running' mode."
    )
    return model.eval(), report


def default_image_processor(config: ArmConfig) -> ArmImageProcessor:
    return ArmImageProcessor(size={"height": config.image_size, "width": config.image_size})

"""Convert upstream DACL checkpoints (amirhfarzaneh/dacl, ``models/resnet.py`` ``resnet18``).

Upstream ``main.py`` saves ``{"epoch": int, "model_state_dict": ...}`` from an ``nn.DataParallel`` wrapper, so
every key starts with ``module.`` (stripped by ``load_upstream_checkpoint``). Key map::

    conv1.* bn1.* layer1-4.*     -> backbone.<same>.*             (torchvision names on both sides)
    attention.{0,3,6}.*          -> attention.encoder.{0,1,2}.dense.*
    attention.{1,4,7}.*          -> attention.encoder.{0,1,2}.norm.*
    attention_heads.*            -> attention.heads.*
    fc.*                         -> classifier.*

Upstream never saves the class centers (they live in the separate loss module), so the converted model gets
fresh centers, drawn like upstream's initialisation from a fixed seed (``--centers-seed``), and a note says so;
``DaclForImageClassification.estimate_centers`` re-estimates them from data. The logits never use the centers.
"""
from __future__ import annotations

import argparse
import math
import re

import torch

from hf_fer.conversion import ConversionReport, classes_from_head, map_state_dict, require_keys
from hf_fer.labels import id2label as benchmark_id2label

from hf_fer.models.dacl.configuration_dacl import DaclConfig
from hf_fer.models.dacl.image_processing_dacl import DaclImageProcessor
from hf_fer.models.dacl.modeling_dacl import DaclForImageClassification

TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
NOT_IN_UPSTREAM = ("center_loss.centers",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DACL")
    group.add_argument("--centers-seed", type=int, default=0,
                       help="seed of the fresh class centers (upstream checkpoints hold none)")
    group.add_argument("--image-size", type=int, default=224, help="input side (193-224 give the same 7×7 trunk map)")


def rename_key(key: str) -> str | None:
    """Upstream name → ours, or ``None`` for names DACL never had."""
    if key.startswith(TRUNK_PREFIXES):
        return "backbone." + key
    match = re.fullmatch(r"attention\.(\d+)\.(.+)", key)
    if match:
        index = int(match.group(1))
        part = {0: "dense", 1: "norm"}.get(index % 3)
        return f"attention.encoder.{index // 3}.{part}.{match.group(2)}" if part else None
    if key.startswith("attention_heads."):
        return "attention.heads." + key[len("attention_heads."):]
    if key.startswith("fc."):
        return "classifier." + key[len("fc."):]
    return None


def _default_id2label(num_labels: int) -> tuple[dict[int, str], str]:
    """DACL released no trained weights, so the class order is the user's; pick the likeliest and say so."""
    if num_labels == 7:
        return benchmark_id2label("affectnet-7"), (
            "no --dataset given: class names set to AffectNet-7 order (upstream folders 00-06, README: 00 neutral, "
            "01 happy, 02 sad); pass --dataset raf-db (or --id2label) if the model was trained in another order"
        )
    if num_labels == 8:
        return benchmark_id2label("affectnet-8"), "no --dataset given: class names set to AffectNet-8 order; pass --dataset to change"
    return {i: f"class_{i}" for i in range(num_labels)}, f"no --dataset given and {num_labels} classes: generic class names; pass --dataset"


def convert(state_dict, *, num_labels: int | None, id2label: dict[int, str] | None, options: argparse.Namespace):
    if state_dict is None:
        raise ValueError("--arch dacl needs --checkpoint (an upstream DACL .pth file)")
    report = ConversionReport()
    require_keys(state_dict, "DACL", ("fc.weight", "attention.0.weight", "attention_heads.weight"))
    num_labels = classes_from_head("fc.weight", state_dict["fc.weight"], num_labels, id2label, features="512")
    if id2label is None:
        id2label, note = _default_id2label(num_labels)
        report.notes.append(note)

    # CE-unit widths are read from the checkpoint (upstream: 3584, 512, 64).
    widths, index = [], 0
    while f"attention.{index}.weight" in state_dict:
        widths.append(state_dict[f"attention.{index}.weight"].shape[0])
        index += 3
    config = DaclConfig(
        num_labels=num_labels,
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        attention_hidden_sizes=widths,
        image_size=getattr(options, "image_size", 224),
    )
    with torch.device("meta"):  # shapes only: every tensor is assigned below, no time spent on random init
        model = DaclForImageClassification(config)
    expected = model.state_dict()

    mapped = map_state_dict(state_dict, rename_key, expected, report, not_in_upstream=NOT_IN_UPSTREAM,
                            model_name="DACL (upstream models/resnet.py resnet18)")
    generator = torch.Generator().manual_seed(getattr(options, "centers_seed", 0))
    centers = torch.randn(tuple(model.center_loss.centers.shape), generator=generator) * math.sqrt(2.0 / num_labels)
    mapped["center_loss.centers"] = centers
    model.load_state_dict(mapped, strict=True, assign=True)
    report.notes.append(
        "upstream checkpoints hold no class centers: fresh centers drawn N(0, 2/num_classes) with seed "
        f"{getattr(options, 'centers_seed', 0)}; they only matter for further training (re-estimate them with "
        "model.estimate_centers(...)). Logits do not depend on them."
    )
    return model.eval(), report


def default_image_processor(config: DaclConfig) -> DaclImageProcessor:
    resize = round(config.image_size * 256 / 224)
    return DaclImageProcessor(size={"shortest_edge": resize}, crop_size={"height": config.image_size, "width": config.image_size})

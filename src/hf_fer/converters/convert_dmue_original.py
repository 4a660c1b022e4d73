"""Upstream DMUE checkpoints -> :class:`DmueForImageClassification` (``--arch dmue`` of the converter CLI).

Upstream (JDAI-CV/FaceX-Zoo ``addition_module/DMUE``) writes two layouts, both bare state dicts:

* **training snapshots** (``train.py``): the DataParallel-wrapped multi-branch model, every key prefixed
  ``module.`` (stripped by :func:`hf_fer.conversion.load_upstream_checkpoint`): ``base.*`` (stem, layer1-3,
  ``layer4_0 .. layer4_C``; ``layer4_C`` is the target branch), ``classifiers.0..C`` (``C`` = target),
  ``project_w.*`` (uncertainty MLP), ``bottleneck.*`` (BN neck);
* **converted inference weights** (``convert_weights.py``): ``base.*`` with a single ``layer4``,
  ``classifiers.0`` (the target classifier), ``bottleneck.*``.

By default both become the deployed model: from a snapshot only the target branch is kept and the
auxiliary branches, auxiliary classifiers and ``project_w`` are dropped, exactly as ``convert_weights.py``
does. ``--keep-aux-branches`` converts a snapshot into the multi-branch training model instead.

Key mapping (upstream -> ours): ``base.X`` -> ``resnet.X`` (torchvision names on both sides),
``base.layer4_C`` / ``base.layer4`` -> ``resnet.layer4``, ``base.layer4_c`` -> ``aux_branches.c``,
``classifiers.C`` / ``classifiers.0`` (inference) -> ``classifier``, ``classifiers.c`` -> ``aux_classifiers.c``,
``project_w.i`` -> ``uncertainty_head.i``, ``bottleneck`` -> ``neck``. Keys containing ``fc.`` are ignored,
as upstream's loader does. Anything else, and any shape mismatch, is an error.

A third file is accepted to *start* training as upstream does: the MS-Celeb-1M pre-trained ResNet-18
(``{'state_dict': {feat_net.*, loss_layer.weight}, ...}``, see :func:`initialise_from_msceleb`).
"""
from __future__ import annotations

import argparse
import re

import torch

from hf_fer import labels as label_spaces
from hf_fer.conversion import ConversionReport

from hf_fer.models.dmue.configuration_dmue import DmueConfig
from hf_fer.models.dmue.image_processing_dmue import DmueImageProcessor
from hf_fer.models.dmue.modeling_dmue import DmueForImageClassification

TRAINING_SNAPSHOT = "multi-branch training snapshot"
INFERENCE_WEIGHTS = "converted inference weights"
MSCELEB_PRETRAINED = "MS-Celeb-1M pre-trained trunk"

_BRANCH = re.compile(r"^base\.layer4_(\d+)\.(.+)$")
_CLASSIFIER = re.compile(r"^classifiers\.(\d+)\.(.+)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-aux-branches", action="store_true",
        help="DMUE: convert a multi-branch training snapshot into the training model (auxiliary branches and "
        "uncertainty head kept) instead of the deployed target-branch model",
    )
    parser.add_argument(
        "--last-stride", type=int, choices=(1, 2), default=2,
        help="DMUE: stride of stage 4 the checkpoint was trained with (upstream default 2; not visible in the weights)",
    )


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """Which upstream file this is: a training snapshot or converted inference weights."""
    if any(_BRANCH.match(key) for key in state_dict):
        return TRAINING_SNAPSHOT
    if any(key.startswith("base.layer4.") for key in state_dict):
        return INFERENCE_WEIGHTS
    if any(key.startswith("feat_net.layer4.") for key in state_dict):
        return MSCELEB_PRETRAINED
    shown = ", ".join(list(state_dict)[:8])
    raise ValueError(
        "not a DMUE checkpoint: expected 'base.layer4_<k>.*' (training snapshot), 'base.layer4.*' (converted "
        f"inference weights) or 'feat_net.layer4.*' (MS-Celeb-1M pre-training) keys, got {len(state_dict)} keys starting with: {shown}"
    )


def target_index(state_dict: dict[str, torch.Tensor]) -> int:
    """Index of the target branch in a training snapshot: the last ``layer4_k`` copy."""
    return max(int(match.group(1)) for match in map(_BRANCH.match, state_dict) if match)


def rename_key(key: str, layout: str, target: int) -> tuple[str | None, bool]:
    """Our name for an upstream key (``None`` if it is not ours) and whether it belongs to the training-only parts."""
    if match := _BRANCH.match(key):
        branch, rest = int(match.group(1)), match.group(2)
        return ("resnet.layer4." + rest, False) if branch == target else (f"aux_branches.{branch}.{rest}", True)
    if match := _CLASSIFIER.match(key):
        index, rest = int(match.group(1)), match.group(2)
        if index == target:
            return "classifier." + rest, False
        return (f"aux_classifiers.{index}.{rest}", True) if layout == TRAINING_SNAPSHOT else (None, False)
    if key.startswith("project_w."):
        return "uncertainty_head." + key[len("project_w."):], True
    if key.startswith("bottleneck."):
        return "neck." + key[len("bottleneck."):], False
    if key.startswith("base."):
        return "resnet." + key[len("base."):], False
    return None, False


def default_id2label(num_labels: int, report: ConversionReport) -> dict[int, str]:
    """Class names when none were given: upstream's released model is AffectNet-8 in native order."""
    if num_labels == 8:
        report.notes.append("no --dataset given: using AffectNet-8 class order (upstream's default dataset)")
        return label_spaces.id2label("affectnet-8")
    if num_labels == 7:
        report.notes.append("no --dataset given: assuming RAF-DB class order for 7 classes (pass --dataset to be sure)")
        return label_spaces.id2label("raf-db")
    raise ValueError(f"the checkpoint has {num_labels} classes; pass --dataset or --id2label to name them")


def convert(
    state_dict: dict[str, torch.Tensor] | None,
    *,
    num_labels: int | None,
    id2label: dict[int, str] | None,
    options: argparse.Namespace,
) -> tuple[DmueForImageClassification, ConversionReport]:
    if state_dict is None:
        raise ValueError("DMUE conversion needs --checkpoint (an upstream training snapshot or converted weights)")
    keep_aux = bool(getattr(options, "keep_aux_branches", False))
    layout = detect_layout(state_dict)
    if layout == MSCELEB_PRETRAINED:
        return initialise_from_msceleb(state_dict, num_labels=num_labels, id2label=id2label, options=options)
    if keep_aux and layout != TRAINING_SNAPSHOT:
        raise ValueError("--keep-aux-branches needs a multi-branch training snapshot; this file holds converted "
                         "inference weights (target branch only)")
    target = target_index(state_dict) if layout == TRAINING_SNAPSHOT else 0

    head_key = f"classifiers.{target}.weight"
    if head_key not in state_dict:
        raise ValueError(f"{layout}: missing the target classifier {head_key!r}")
    detected = state_dict[head_key].shape[0]
    if layout == TRAINING_SNAPSHOT and detected != target:
        raise ValueError(f"{layout}: {target + 1} stage-4 copies imply {target} classes, but {head_key} has shape "
                         f"{list(state_dict[head_key].shape)}")
    if num_labels is not None and num_labels != detected:
        raise ValueError(f"--num-labels {num_labels} but the checkpoint's classifier {head_key} has {detected} classes")
    report = ConversionReport(notes=[f"layout: {layout}" + (f" (target branch layer4_{target})" if layout == TRAINING_SNAPSHOT else "")])
    if id2label is not None and len(id2label) != detected:
        raise ValueError(f"{len(id2label)} class names given but the checkpoint has {detected} classes")
    id2label = dict(id2label) if id2label is not None else default_id2label(detected, report)

    config = DmueConfig(
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        use_aux_branches=keep_aux,
        use_bnneck="bottleneck.weight" in state_dict,
        classifier_bias=f"classifiers.{target}.bias" in state_dict,
        last_stride=getattr(options, "last_stride", 2),
    )
    model = DmueForImageClassification(config)
    expected = model.state_dict()

    mapped: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, tensor in state_dict.items():
        new_key, training_only = rename_key(key, layout, target)
        if new_key is None and ".fc." in f".{key}":
            report.dropped.append(key)  # upstream's loader skips `fc.` keys too
        elif training_only and not keep_aux:
            report.dropped.append(key)
        elif new_key is None or new_key not in expected:
            report.unexpected.append(key)
        elif tensor.shape != expected[new_key].shape and not (expected[new_key].dim() == 0 and tensor.numel() == 1):
            mismatched.append(f"{key} -> {new_key}: expected {list(expected[new_key].shape)}, got {list(tensor.shape)}")
        else:
            mapped[new_key] = tensor.reshape(expected[new_key].shape)  # 1-element counters -> scalars, like torch
            report.loaded.append(key)
    report.missing = [key for key in expected if key not in mapped]
    problems = []
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched))
    if report.unexpected:
        problems.append("unexpected keys: " + ", ".join(report.unexpected[:20]))
    if report.missing:
        problems.append("missing keys: " + ", ".join(report.missing[:20]))
    if problems:
        raise ValueError(f"DMUE {layout} does not fit the model ({detected} classes): " + " | ".join(problems))

    model.load_state_dict(mapped, strict=True)
    if report.dropped and not keep_aux:
        report.notes.append("kept the target branch only, as upstream convert_weights.py (auxiliary branches, "
                            "auxiliary classifiers and project_w dropped)")
    return model.eval(), report


def initialise_from_msceleb(
    state_dict: dict[str, torch.Tensor],
    *,
    num_labels: int | None,
    id2label: dict[int, str] | None,
    options: argparse.Namespace,
) -> tuple[DmueForImageClassification, ConversionReport]:
    """Upstream's training start: the MS-Celeb-1M ResNet-18 (``feat_net.*``, same names as ``base.*``) loaded into
    the trunk, its stage 4 copied into every branch; the expression heads start fresh with upstream's init
    (classifiers N(0, 0.001), BN neck 1/0, uncertainty MLP PyTorch default). ``loss_layer`` (the MV-softmax
    identity classifier) is dropped."""
    keep_aux = bool(getattr(options, "keep_aux_branches", False))
    if id2label is None and num_labels is None:
        raise ValueError("the MS-Celeb-1M checkpoint has no expression classifier: pass --dataset, --id2label or --num-labels")
    report = ConversionReport(notes=[f"layout: {MSCELEB_PRETRAINED}; expression heads freshly initialised as upstream does"])
    id2label = dict(id2label) if id2label is not None else default_id2label(num_labels, report)
    config = DmueConfig(id2label=id2label, label2id={name: index for index, name in id2label.items()},
                        use_aux_branches=keep_aux, last_stride=getattr(options, "last_stride", 2))
    model = DmueForImageClassification(config)
    expected = model.state_dict()

    mapped: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, tensor in state_dict.items():
        if not key.startswith("feat_net.") or ".fc." in f".{key}":
            (report.dropped if key.startswith(("loss_layer.", "feat_net.fc.")) else report.unexpected).append(key)
            continue
        name = key[len("feat_net."):]
        targets = ["resnet." + name]
        if keep_aux and name.startswith("layer4."):
            targets += [f"aux_branches.{c}.{name[len('layer4.'):]}" for c in range(config.num_aux_branches)]
        for new_key in targets:
            if new_key not in expected:
                report.unexpected.append(key)
                break
            if tensor.shape != expected[new_key].shape and not (expected[new_key].dim() == 0 and tensor.numel() == 1):
                mismatched.append(f"{key} -> {new_key}: expected {list(expected[new_key].shape)}, got {list(tensor.shape)}")
                break
            mapped[new_key] = tensor.reshape(expected[new_key].shape).clone()
        else:
            report.loaded.append(key)
    heads = ("classifier.", "aux_classifiers.", "uncertainty_head.", "neck.")
    report.missing = [key for key in expected if key not in mapped]
    trunk_missing = [key for key in report.missing if not key.startswith(heads)]
    if mismatched or report.unexpected or trunk_missing:
        raise ValueError(f"DMUE {MSCELEB_PRETRAINED} does not fit the ResNet-18 trunk: "
                         f"shape mismatches: {mismatched[:10]} | unexpected: {report.unexpected[:20]} | missing: {trunk_missing[:20]}")
    model.load_state_dict(mapped, strict=False)
    return model.eval(), report


def default_image_processor(config: DmueConfig) -> DmueImageProcessor:
    return DmueImageProcessor()

"""Convert checkpoints written by the upstream VT-NR training script (hbin0701/VT_with_NR_for_FER) to hf_fer.

Upstream saves ``{'model': state_dict, 'optimizer': ..., 'epoch': ..., 'train_loss': ..., 'test_loss': ...}``
where the state dict holds ``model.*`` (timm 0.4-0.6 Swin, PatchMerging at the *end* of stages 0-2, fused
``qkv``, persistent index/mask buffers, the replaced ``head.{0,1,4}``), ``stn.*`` and ``res.*``. The Swin
part maps onto transformers' ``SwinModel`` (q/k/v split, buffers dropped: SwinModel rebuilds them).

Not copied as remote code (it imports ``hf_fer``); the model folder's other files never import it.
"""
from __future__ import annotations

import argparse
import math
import re

import torch

from hf_fer import labels as label_spaces
from hf_fer.conversion import ConversionReport

from hf_fer.models.vt_nr.configuration_vt_nr import FERPLUS_LABEL_PRIOR, SWIN_BASE_BACKBONE, VtNrConfig
from hf_fer.models.vt_nr.image_processing_vt_nr import VtNrImageProcessor
from hf_fer.models.vt_nr.modeling_vt_nr import VtNrForImageClassification
from hf_fer.models.vt_nr.stn import localization_output_size

# Fixed-name renames, upstream prefix → ours (longest match wins: checked in this order).
PREFIX_RENAMES: tuple[tuple[str, str], ...] = (
    ("model.patch_embed.proj.", "backbone.embeddings.patch_embeddings.projection."),
    ("model.patch_embed.norm.", "backbone.embeddings.norm."),
    ("model.norm.", "backbone.layernorm."),
    ("model.head.0.", "head.dense."),
    ("model.head.1.", "head.norm."),
    ("model.head.4.", "head.classifier."),
    ("stn.localization.0.", "stn.localization_convs.0."),
    ("stn.localization.3.", "stn.localization_convs.1."),
    ("stn.fc_loc.0.", "stn.localization_fc."),
    ("stn.fc_loc.2.", "stn.theta_fc."),
    ("res.conv1.", "resizer.stem_conv."),
    ("res.conv2.", "resizer.stem_pointwise."),
    ("res.bn1.", "resizer.stem_norm."),
    ("res.conv3.", "resizer.post_conv."),
    ("res.bn2.", "resizer.post_norm."),
    ("res.conv4.", "resizer.out_conv."),
)

# Inside a Swin block: upstream (timm) sub-name → SwinModel sub-name.
BLOCK_RENAMES: dict[str, str] = {
    "norm1.": "layernorm_before.",
    "norm2.": "layernorm_after.",
    "attn.proj.": "attention.o_proj.",
    "attn.relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
}
RESIZER_BLOCK_RENAMES = {"conv1.": "conv1.", "bn1.": "norm1.", "conv2.": "conv2.", "bn2.": "norm2."}

_BLOCK = re.compile(r"^model\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_DOWNSAMPLE = re.compile(r"^model\.layers\.(\d+)\.downsample\.(.+)$")
_RESIZER_BLOCK = re.compile(r"^res\.resblock\.(\d+)\.(.+)$")
# Buffers timm stored but SwinModel recomputes: dead on arrival.
_DEAD = re.compile(r"(\.attn\.relative_position_index|\.attn_mask)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size", type=int, default=None,
        help="vt_nr: model input side (default: inferred from the STN regressor width; upstream 384)",
    )


def label_prior_for(label_space) -> list[list[float]]:
    """Upstream's FER+ prior matrix re-ordered into ``label_space`` (benchmark key, names or id2label).

    Rows and columns are permuted to the target class order; classes the target lacks are removed and
    each row is renormalised to sum to 1. Upstream never did this (it indexed the FER+ matrix with any
    dataset's label ids); this is the correct prior for non-FERPlus label orders.
    """
    mapping = label_spaces.label_mapping("ferplus", label_space)
    if mapping.missing_in_source:
        raise ValueError(f"the FER+ prior has no row for {mapping.missing_in_source}")
    order = list(mapping.target_to_source)
    prior = torch.tensor(FERPLUS_LABEL_PRIOR, dtype=torch.float64)[order][:, order]
    prior = prior / prior.sum(dim=1, keepdim=True)
    return prior.tolist()


def _prior_for_labels(id2label: dict[int, str] | None, report: ConversionReport) -> list[list[float]] | None:
    """The F-PDLS prior for a non-FERPlus class order (``None``: FERPlus order, the config's default applies)."""
    if not id2label:
        return None
    names = [id2label[i] for i in range(len(id2label))]
    try:
        if label_spaces.benchmark_of(names) == "ferplus":
            return None
        prior = label_prior_for(names)
    except (KeyError, ValueError) as error:
        report.notes.append(f"no F-PDLS prior for these labels ({error}); set config.label_prior_matrix before training")
        return None
    report.notes.append("label_prior_matrix: FER+ prior permuted into this label order (upstream used the FER+ order unchanged)")
    return prior


def _rename(key: str, tensor: torch.Tensor, report: ConversionReport) -> dict[str, torch.Tensor]:
    """One upstream entry → zero, one or (fused qkv) three entries of ours."""
    if key.endswith("num_batches_tracked") and tensor.numel() == 1:
        tensor = tensor.reshape(())  # a BatchNorm counter is a scalar; some savers store it as [1]
    if _DEAD.search(key):
        report.dropped.append(key)
        return {}
    if match := _BLOCK.match(key):
        stage, block, rest = match.groups()
        prefix = f"backbone.encoder.layers.{stage}.blocks.{block}."
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            if tensor.shape[0] % 3:
                raise ValueError(f"{key}: fused qkv of shape {list(tensor.shape)} cannot be split in 3 along dim 0")
            query, key_, value = tensor.chunk(3, dim=0)  # timm order: q, k, v
            return {
                f"{prefix}attention.q_proj.{kind}": query.clone(),
                f"{prefix}attention.k_proj.{kind}": key_.clone(),
                f"{prefix}attention.v_proj.{kind}": value.clone(),
            }
        for old, new in BLOCK_RENAMES.items():
            if rest.startswith(old):
                return {prefix + new + rest[len(old):]: tensor}
    elif match := _DOWNSAMPLE.match(key):
        stage, rest = match.groups()
        return {f"backbone.encoder.layers.{stage}.downsample.{rest}": tensor}
    elif match := _RESIZER_BLOCK.match(key):
        index, rest = match.groups()
        for old, new in RESIZER_BLOCK_RENAMES.items():
            if rest.startswith(old):
                return {f"resizer.res_blocks.{index}.{new}{rest[len(old):]}": tensor}
    else:
        for old, new in PREFIX_RENAMES:
            if key.startswith(old):
                return {new + key[len(old):]: tensor}
    report.unexpected.append(key)
    return {}


def _require(state_dict, key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(
            f"not an upstream VT-NR checkpoint: key {key!r} is missing (found {len(state_dict)} keys, e.g. {list(state_dict)[:5]})"
        )
    return state_dict[key]


def infer_backbone_config(state_dict) -> dict:
    """Swin hyper-parameters read off the tensor shapes (defaults: timm swin_base_patch4_window7_224)."""
    if "model.layers.3.downsample.reduction.weight" in state_dict or any(k.startswith("model.layers_") for k in state_dict):
        raise ValueError("this Swin uses the timm >= 0.9 layout (PatchMerging at stage starts); upstream VT-NR only runs with timm < 0.9")
    projection = _require(state_dict, "model.patch_embed.proj.weight")
    embed_dim, num_channels, patch_size = projection.shape[0], projection.shape[1], projection.shape[2]
    depths, num_heads = [], []
    stage = 0
    while f"model.layers.{stage}.blocks.0.norm1.weight" in state_dict:
        depth = 0
        while f"model.layers.{stage}.blocks.{depth}.norm1.weight" in state_dict:
            depth += 1
        depths.append(depth)
        table = state_dict[f"model.layers.{stage}.blocks.0.attn.relative_position_bias_table"]
        num_heads.append(table.shape[1])
        stage += 1
    if not depths:
        raise ValueError("no Swin blocks found under 'model.layers.<i>.blocks.<j>.'")
    table_rows = state_dict["model.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    window_size = (math.isqrt(table_rows) + 1) // 2
    if (2 * window_size - 1) ** 2 != table_rows:
        raise ValueError(f"relative_position_bias_table has {table_rows} rows, not (2*window-1)^2 for any window size")
    fc1 = _require(state_dict, "model.layers.0.blocks.0.mlp.fc1.weight")
    config = dict(SWIN_BASE_BACKBONE)
    config.update(
        num_channels=int(num_channels), patch_size=int(patch_size), embed_dim=int(embed_dim), depths=depths,
        num_heads=[int(h) for h in num_heads], window_size=int(window_size), mlp_ratio=fc1.shape[0] / fc1.shape[1],
        qkv_bias="model.layers.0.blocks.0.attn.qkv.bias" in state_dict,
    )
    return config


def infer_image_size(state_dict, kernel_sizes: list[int], requested: int | None) -> int:
    """The input side whose STN regressor width matches the checkpoint (384 for upstream)."""
    last_conv = _require(state_dict, "stn.localization.3.weight")
    width = _require(state_dict, "stn.fc_loc.0.weight").shape[1]
    candidates = [requested] if requested else [384] + list(range(16, 2049))
    for size in candidates:
        try:
            side = localization_output_size(size, kernel_sizes)
        except ValueError:
            continue
        if last_conv.shape[0] * side * side == width:
            return size
    if requested:
        given = last_conv.shape[0] * localization_output_size(requested, kernel_sizes) ** 2
        raise ValueError(f"stn.fc_loc.0.weight takes {width} inputs but --image-size {requested} gives {given}")
    raise ValueError(f"stn.fc_loc.0.weight takes {width} inputs, which no image size gives with kernels {kernel_sizes}")


def convert(state_dict, *, num_labels: int | None, id2label: dict[int, str] | None, options: argparse.Namespace):
    """Upstream state dict → ``VtNrForImageClassification`` (eval mode) and a report; the config is read off
    the tensor shapes. ``state_dict=None`` gives a randomly initialised model."""
    report = ConversionReport()
    requested_size = getattr(options, "image_size", None)
    if state_dict is None:
        if id2label:
            labels = {"id2label": dict(id2label), "label2id": {name: index for index, name in id2label.items()}}
        else:
            labels = {"num_labels": num_labels} if num_labels not in (None, 8) else {}  # default: the 8 FERPlus names
        config = VtNrConfig(image_size=requested_size or 384, label_prior_matrix=_prior_for_labels(id2label, report), **labels)
        report.notes.append("no --checkpoint: randomly initialised VT-NR (Swin-B backbone not pretrained)")
        return VtNrForImageClassification(config).eval(), report

    head = _require(state_dict, "model.head.4.weight")
    checkpoint_labels = head.shape[0]
    num_labels = num_labels or checkpoint_labels
    if num_labels != checkpoint_labels:
        raise ValueError(f"--num-labels {num_labels} but the checkpoint's head model.head.4.weight has {checkpoint_labels} rows ({list(head.shape)})")
    if id2label is None:
        if num_labels != 8:
            raise ValueError(f"the checkpoint has {num_labels} classes: pass --dataset or --id2label to name them")
        id2label = label_spaces.id2label("ferplus")  # upstream's head and prior are in FERPlus order
        report.notes.append("id2label: FERPlus order (upstream's 8-class head); pass --dataset/--id2label if trained otherwise")
    if len(id2label) != num_labels:
        raise ValueError(
            f"{len(id2label)} class names ({list(id2label.values())}) for a {num_labels}-class head; upstream always trains an "
            "8-wide head (FERPlus order) whatever the dataset: pass --id2label with 8 names"
        )

    prior = _prior_for_labels(id2label, report)

    kernel_sizes = [_require(state_dict, f"stn.localization.{index}.weight").shape[-1] for index in (0, 3)]
    image_size = infer_image_size(state_dict, kernel_sizes, requested_size)
    resizer_blocks = len({k.split(".")[2] for k in state_dict if k.startswith("res.resblock.")})
    backbone_config = infer_backbone_config(state_dict)
    config = VtNrConfig(
        backbone_config=backbone_config,
        image_size=image_size,
        num_channels=backbone_config["num_channels"],
        stn_conv_channels=[state_dict["stn.localization.0.weight"].shape[0], state_dict["stn.localization.3.weight"].shape[0]],
        stn_conv_kernel_sizes=kernel_sizes,
        stn_hidden_size=state_dict["stn.fc_loc.0.weight"].shape[0],
        resizer_channels=_require(state_dict, "res.conv1.weight").shape[0],
        resizer_num_res_blocks=resizer_blocks,
        head_hidden_size=_require(state_dict, "model.head.0.weight").shape[0],
        num_labels=num_labels,
        id2label=dict(id2label),
        label2id={name: index for index, name in id2label.items()},
        label_prior_matrix=prior,
    )

    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        renamed = _rename(key, tensor, report)
        if renamed:
            report.loaded.append(key)
            mapped.update(renamed)

    model = VtNrForImageClassification(config)
    expected = model.state_dict()
    report.missing.extend(k for k in expected if k not in mapped)
    report.unexpected.extend(k for k in mapped if k not in expected)
    shape_errors = [f"{k}: checkpoint {list(v.shape)} vs model {list(expected[k].shape)}"
                    for k, v in mapped.items() if k in expected and v.shape != expected[k].shape]
    if report.missing or report.unexpected or shape_errors:
        raise ValueError(
            "the checkpoint does not fit VT-NR:\n  missing: " + ", ".join(report.missing[:20])
            + "\n  unexpected: " + ", ".join(report.unexpected[:20]) + "\n  shape mismatches: " + "; ".join(shape_errors[:20])
        )
    model.load_state_dict(mapped, strict=True)
    return model.eval(), report


def default_image_processor(config: VtNrConfig) -> VtNrImageProcessor:
    """384×384 (config.image_size), ImageNet mean/std; the learned downscale is in the model."""
    return VtNrImageProcessor(size={"height": config.image_size, "width": config.image_size})

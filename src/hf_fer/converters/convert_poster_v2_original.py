"""Conversion of upstream POSTER V2 checkpoints (Talented-Q/POSTER_V2, `pyramid_trans_expr2`) to hf_fer.

Two modes, both driven by `scripts/convert_original_checkpoint.py --arch poster_v2`:

* `--checkpoint FILE`: a fine-tuned checkpoint as upstream `main.py`/`main_8.py` saved it (container dict,
  `module.` prefixes, CUDA tensors, pickled recorder objects; read by `hf_fer.conversion.load_upstream_checkpoint`,
  which never executes pickled code). Every tensor the forward pass uses is mapped; the dead modules upstream
  keeps in its state dict are dropped and counted; anything else is an error.
* no `--checkpoint`, `--ir50 FILE` and/or `--mobilefacenet FILE`: an untrained model for fine-tuning, whose
  backbones are filled from the two pretrained files upstream loads in its constructor.

This file is not copied as remote code (it imports hf_fer).
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping

import torch

from hf_fer.conversion import ConversionReport, load_upstream_checkpoint

from hf_fer.models.poster_v2.configuration_poster_v2 import PosterV2Config
from hf_fer.models.poster_v2.image_processing_poster_v2 import PosterV2ImageProcessor
from hf_fer.models.poster_v2.modeling_poster_v2 import PosterV2ForImageClassification, relative_position_index

# Upstream state-dict entries that never influence the logits (spec poster_v2.md §4).
DEAD_PREFIXES = (
    "ir_back.output_layer.",  # IR-50 embedding head, never called
    "face_landback.output_layer.",  # MobileFaceNet landmark head, computed then discarded
    "VIT.patch_embed.",
    "VIT.CON1.",
    "VIT.IRLinear1.",
    "VIT.IRLinear2.",
    "VIT.eca_block.",
)
DEAD_PATTERNS = (re.compile(r"^VIT\.blocks\.\d+\.conv\."),)  # Conv1d created in each ViT block, never called

# The class names of the only upstream 8-class dataset; 7-class checkpoints default to RAF-DB (see convert()).
DEFAULT_DATASET = {7: "raf-db", 8: "affectnet-8"}

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _landmark_block_renames(upstream_stage: str, stage: int, first_index: int, *, residual_stage: bool) -> list:
    """MobileFaceNet bottlenecks: `conv`/`conv_dw`/`project` -> `expand`/`depthwise`/`project`."""
    source = rf"{upstream_stage}\.model\.(\d+)" if residual_stage else upstream_stage
    rules = []
    for old, new in (("conv", "expand"), ("conv_dw", "depthwise"), ("project", "project")):
        pattern = rf"^face_landback\.{source}\.{old}\.(conv\.weight|bn\.{_BN}|prelu\.weight)$"
        if residual_stage:
            rules.append((pattern, lambda m, s=stage, n=new: f"{_landmark_prefix(s, int(m[1]) + 1, n)}.{_conv_norm_act(m[2])}"))
        else:
            rules.append((pattern, lambda m, s=stage, n=new, i=first_index: f"{_landmark_prefix(s, i, n)}.{_conv_norm_act(m[1])}"))
    return rules


def _landmark_prefix(stage: int, block: int, part: str) -> str:
    return f"poster_v2.landmark_backbone.stages.{stage}.{block}.{part}"


def _conv_norm_act(suffix: str) -> str:
    """MobileFaceNet `conv`/`bn`/`prelu` -> our `conv`/`norm`/`activation`."""
    return suffix.replace("bn.", "norm.").replace("prelu.", "activation.")


_IR_RES_LAYER = {"0": "norm1", "1": "conv1", "2": "activation", "3": "conv2", "4": "norm2"}


def _build_rules() -> list[tuple[re.Pattern, Callable[[re.Match], str]]]:
    rules: list = [
        # MobileFaceNet (landmark branch)
        (rf"^face_landback\.conv1\.(conv\.weight|bn\.{_BN}|prelu\.weight)$",
         lambda m: f"poster_v2.landmark_backbone.stem.{_conv_norm_act(m[1])}"),
        (rf"^face_landback\.conv2_dw\.(conv\.weight|bn\.{_BN}|prelu\.weight)$",
         lambda m: f"poster_v2.landmark_backbone.stem_depthwise.{_conv_norm_act(m[1])}"),
        (rf"^face_landback\.conv_6_sep\.(conv\.weight|bn\.{_BN}|prelu\.weight)$",
         lambda m: f"poster_v2.landmark_backbone.final_expansion.{_conv_norm_act(m[1])}"),
    ]
    for stage, (downsample, blocks) in enumerate((("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5"))):
        rules += _landmark_block_renames(downsample, stage, 0, residual_stage=False)
        rules += _landmark_block_renames(blocks, stage, 0, residual_stage=True)
    rules += [
        (r"^last_face_conv\.(weight|bias)$", lambda m: f"poster_v2.landmark_projection.{m[1]}"),
        # IR-50 (image branch)
        (r"^ir_back\.input_layer\.0\.weight$", lambda m: "poster_v2.image_backbone.stem.conv.weight"),
        (rf"^ir_back\.input_layer\.1\.{_BN}$", lambda m: f"poster_v2.image_backbone.stem.norm.{m[1]}"),
        (r"^ir_back\.input_layer\.2\.weight$", lambda m: "poster_v2.image_backbone.stem.activation.weight"),
        (rf"^ir_back\.body([123])\.(\d+)\.res_layer\.([0-4])\.(weight|{_BN})$",
         lambda m: f"poster_v2.image_backbone.stages.{int(m[1]) - 1}.{m[2]}.{_IR_RES_LAYER[m[3]]}.{m[4]}"),
        (rf"^ir_back\.body([123])\.(\d+)\.shortcut_layer\.0\.weight$",
         lambda m: f"poster_v2.image_backbone.stages.{int(m[1]) - 1}.{m[2]}.shortcut.conv.weight"),
        (rf"^ir_back\.body([123])\.(\d+)\.shortcut_layer\.1\.{_BN}$",
         lambda m: f"poster_v2.image_backbone.stages.{int(m[1]) - 1}.{m[2]}.shortcut.norm.{m[3]}"),
        # per-scale alignment convs and cross-attention
        (r"^conv([123])\.(weight|bias)$", lambda m: f"poster_v2.image_downsamplers.{int(m[1]) - 1}.{m[2]}"),
        (r"^window([123])\.norm\.(weight|bias)$", lambda m: f"poster_v2.cross_attention.{int(m[1]) - 1}.layernorm_before.{m[2]}"),
        (r"^attn([123])\.relative_position_bias_table$",
         lambda m: f"poster_v2.cross_attention.{int(m[1]) - 1}.attention.relative_position_bias_table"),
        (r"^attn([123])\.qkv\.(weight|bias)$", lambda m: f"poster_v2.cross_attention.{int(m[1]) - 1}.attention.key_value.{m[2]}"),
        (r"^attn([123])\.proj\.(weight|bias)$", lambda m: f"poster_v2.cross_attention.{int(m[1]) - 1}.attention.output.{m[2]}"),
        (r"^ffn([123])\.gamma1$", lambda m: f"poster_v2.cross_attention.{int(m[1]) - 1}.layer_scale_attention"),
        (r"^ffn([123])\.gamma2$", lambda m: f"poster_v2.cross_attention.{int(m[1]) - 1}.layer_scale_mlp"),
        (r"^ffn([123])\.norm\.(weight|bias)$", lambda m: f"poster_v2.cross_attention.{int(m[1]) - 1}.layernorm_after.{m[2]}"),
        (r"^ffn([123])\.mlp\.(fc[12])\.(weight|bias)$", lambda m: f"poster_v2.cross_attention.{int(m[1]) - 1}.mlp.{m[2]}.{m[3]}"),
        # token embedding
        (r"^embed_q\.([01])\.(weight|bias)$", lambda m: f"poster_v2.embeddings.fine_projection.{m[1]}.{m[2]}"),
        (r"^embed_k\.0\.(weight|bias)$", lambda m: f"poster_v2.embeddings.middle_projection.{m[1]}"),
        (r"^embed_v\.proj\.(weight|bias)$", lambda m: f"poster_v2.embeddings.coarse_projection.{m[1]}"),
        (r"^VIT\.cls_token$", lambda m: "poster_v2.embeddings.cls_token"),
        (r"^VIT\.pos_embed$", lambda m: "poster_v2.embeddings.position_embeddings"),
        # fusion ViT, SE gate, classifier
        (r"^VIT\.blocks\.(\d+)\.norm1\.(weight|bias)$", lambda m: f"poster_v2.encoder.{m[1]}.layernorm_before.{m[2]}"),
        (r"^VIT\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", lambda m: f"poster_v2.encoder.{m[1]}.attention.qkv.{m[2]}"),
        (r"^VIT\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$", lambda m: f"poster_v2.encoder.{m[1]}.attention.output.{m[2]}"),
        (r"^VIT\.blocks\.(\d+)\.norm2\.(weight|bias)$", lambda m: f"poster_v2.encoder.{m[1]}.layernorm_after.{m[2]}"),
        (r"^VIT\.blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)$", lambda m: f"poster_v2.encoder.{m[1]}.mlp.{m[2]}.{m[3]}"),
        (r"^VIT\.norm\.(weight|bias)$", lambda m: f"poster_v2.layernorm.{m[1]}"),
        (r"^VIT\.se_block\.linear([12])\.(weight|bias)$", lambda m: f"se_gate.fc{m[1]}.{m[2]}"),
        (r"^VIT\.head\.linear\.(weight|bias)$", lambda m: f"classifier.{m[1]}"),
    ]
    return [(re.compile(pattern), target) for pattern, target in rules]


RULES = _build_rules()


def upstream_key_to_hf(key: str) -> str | None:
    """Our parameter name for an upstream state-dict key; `None` if no rule knows the key."""
    for pattern, target in RULES:
        match = pattern.match(key)
        if match:
            return target(match)
    return None


def is_dead_key(key: str) -> bool:
    return key.startswith(DEAD_PREFIXES) or any(p.match(key) for p in DEAD_PATTERNS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("POSTER V2")
    group.add_argument("--ir50", default=None,
                       help="without --checkpoint: upstream's pretrained IR-50 file (ir50.pth) for the image branch")
    group.add_argument("--mobilefacenet", default=None,
                       help="without --checkpoint: upstream's pretrained landmark file (mobilefacenet_model_best.pth.tar)")


def _label_config(num_labels: int, id2label: Mapping[int, str] | None, report: ConversionReport) -> dict:
    """`num_labels`/`id2label`/`label2id` for the config; 7 classes default to RAF-DB's order (with a note)."""
    if id2label is not None:
        if len(id2label) != num_labels:
            raise ValueError(
                f"the checkpoint's classifier has {num_labels} outputs but {len(id2label)} class names were given: "
                f"{list(id2label.values())}"
            )
    else:
        from hf_fer import labels

        dataset = DEFAULT_DATASET.get(num_labels)
        if dataset is None:
            raise ValueError(f"no default class names for a {num_labels}-class POSTER V2; pass --dataset or --id2label")
        id2label = labels.id2label(dataset)
        report.notes.append(
            f"no --dataset/--id2label given: assumed the {dataset} class order {list(id2label.values())}"
            + (" (7-class checkpoints may also be AffectNet-7 or CAER-S: pass --dataset affectnet-7 / caer-s for those)"
               if num_labels == 7 else "")
        )
    id2label = {int(k): v for k, v in id2label.items()}
    return {"num_labels": num_labels, "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def map_upstream_state_dict(state_dict: Mapping[str, torch.Tensor], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Rename every live upstream key; dead ones go to `report.dropped`, unknown ones to `report.unexpected`."""
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if is_dead_key(key):
            report.dropped.append(key)
            continue
        if re.fullmatch(r"attn[123]\.relative_position_index", key):
            window = int(round(tensor.shape[0] ** 0.5)) if tensor.dim() == 2 else 0
            if window == 0 or not torch.equal(tensor.long(), relative_position_index(window)):
                raise ValueError(f"{key}: unexpected relative-position index (shape {tuple(tensor.shape)}); it is recomputed, not loaded")
            report.dropped.append(key)  # deterministic buffer, recomputed by the model
            continue
        new_key = upstream_key_to_hf(key)
        if new_key is None:
            report.unexpected.append(key)
            continue
        mapped[new_key] = tensor
        report.loaded.append(key)
    return mapped


def _as_scalar_if_needed(tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Accept a one-element tensor for a scalar buffer (`num_batches_tracked` saved with shape (1,))."""
    return tensor.reshape(()) if target.dim() == 0 and tensor.numel() == 1 else tensor


def _load_checked(model: PosterV2ForImageClassification, mapped: dict[str, torch.Tensor], report: ConversionReport,
                  upstream_name: Mapping[str, str]) -> None:
    """Copy `mapped` into `model` (every tensor must be filled), raising a ValueError naming every key/shape problem."""
    own = model.state_dict()
    problems = []
    for key, tensor in list(mapped.items()):
        if key in own:
            mapped[key] = tensor = _as_scalar_if_needed(tensor, own[key])
        if key not in own:
            problems.append(f"{upstream_name.get(key, key)} -> {key}: no such parameter in PosterV2ForImageClassification")
        elif tuple(tensor.shape) != tuple(own[key].shape):
            problems.append(
                f"{upstream_name.get(key, key)}: shape {tuple(tensor.shape)} does not fit {key} {tuple(own[key].shape)}"
            )
    report.missing.extend(key for key in own if key not in mapped)
    if report.unexpected:
        problems.append(f"unknown upstream keys: {report.unexpected[:20]}" + (" ..." if len(report.unexpected) > 20 else ""))
    if report.missing:
        problems.append(f"no upstream tensor for: {report.missing[:20]}" + (" ..." if len(report.missing) > 20 else ""))
    if problems:
        raise ValueError("the checkpoint does not fit POSTER V2:\n  " + "\n  ".join(problems))
    with torch.no_grad():
        for key, tensor in mapped.items():
            own[key].copy_(tensor.to(own[key].dtype))


def convert(state_dict, *, num_labels: int | None, id2label: Mapping[int, str] | None,
            options: argparse.Namespace | None) -> tuple[PosterV2ForImageClassification, ConversionReport]:
    """Build a `PosterV2ForImageClassification` from an upstream checkpoint (or from the pretrained parts)."""
    if state_dict is None:
        return convert_pretrained_parts(num_labels=num_labels, id2label=id2label, options=options)
    report = ConversionReport()
    head = state_dict.get("VIT.head.linear.weight")
    if head is None:
        raise ValueError(
            "not a POSTER V2 checkpoint: no 'VIT.head.linear.weight' (after stripping 'module.'); "
            f"first keys: {list(state_dict)[:8]}"
        )
    checkpoint_labels = head.shape[0]
    if num_labels is not None and num_labels != checkpoint_labels:
        raise ValueError(f"--num-labels {num_labels} but the checkpoint's classifier VIT.head.linear.weight has shape {tuple(head.shape)}")
    config = PosterV2Config(**_label_config(checkpoint_labels, id2label, report))
    mapped = map_upstream_state_dict(state_dict, report)
    upstream_name = {upstream_key_to_hf(k): k for k in report.loaded}
    model = PosterV2ForImageClassification(config)
    _load_checked(model, mapped, report, upstream_name)
    dead_params = sum(state_dict[k].numel() for k in report.dropped if state_dict[k].is_floating_point() and "running_" not in k)
    report.notes.append(
        f"dropped {len(report.dropped)} upstream entries the forward pass never uses "
        f"(dead modules, {dead_params:,} parameters, and the recomputed relative-position indices)"
    )
    metadata = getattr(state_dict, "metadata", {}) or {}
    for key in ("epoch", "best_acc"):
        if key in metadata:
            value = metadata[key]
            value = value.item() if isinstance(value, torch.Tensor) else value
            report.notes.append(f"checkpoint {key}: {value}")
    return model.eval(), report


def _state_dict_of(path: str) -> dict[str, torch.Tensor]:
    return dict(load_upstream_checkpoint(path))


def _ir50_key(key: str) -> str | None:
    """An IR-50 key, in upstream's split `body1/2/3` layout or InsightFace's single `body.N` layout, -> ours."""
    match = re.match(r"^body\.(\d+)\.(.*)$", key)
    if match:  # InsightFace numbering: units 0-2 stage 1, 3-6 stage 2, 7-20 stage 3, 21-23 stage 4 (absent here)
        unit = int(match[1])
        for stage, (start, stop) in enumerate(((0, 3), (3, 7), (7, 21))):
            if start <= unit < stop:
                key = f"body{stage + 1}.{unit - start}.{match[2]}"
                break
        else:
            return None
    return upstream_key_to_hf(f"ir_back.{key}")


def _landmark_key(key: str) -> str | None:
    return upstream_key_to_hf(f"face_landback.{key}")


def _load_part(model, path: str, key_map: Callable[[str], str | None], what: str,
               report: ConversionReport) -> tuple[set[str], int]:
    """Upstream's tolerant loading of a pretrained part: copy the tensors whose mapped name and shape fit.

    Returns the names of our tensors that were filled and the number of tensors in the file. Tensors of
    parts POSTER V2 does not use (heads, IR-50 stage 4) go to `report.dropped`, misfits to `report.unexpected`.
    """
    own = model.state_dict()
    source = _state_dict_of(path)
    filled: set[str] = set()
    with torch.no_grad():
        for key, tensor in source.items():
            new_key = key_map(key)
            if new_key in own:
                tensor = _as_scalar_if_needed(tensor, own[new_key])
            if new_key is None:
                report.dropped.append(f"{what}:{key}")
            elif new_key not in own or tuple(own[new_key].shape) != tuple(tensor.shape):
                shape = tuple(own[new_key].shape) if new_key in own else None
                report.unexpected.append(f"{what}:{key} {tuple(tensor.shape)} (ours: {new_key} {shape})")
            else:
                own[new_key].copy_(tensor.to(own[new_key].dtype))
                report.loaded.append(f"{what}:{key}")
                filled.add(new_key)
    return filled, len(source)


def convert_pretrained_parts(*, num_labels: int | None, id2label: Mapping[int, str] | None,
                             options: argparse.Namespace | None) -> tuple[PosterV2ForImageClassification, ConversionReport]:
    """An untrained POSTER V2 whose IR-50 and/or landmark backbones come from upstream's pretrained files.

    Like upstream, the landmark file must fit exactly (strict), while the IR-50 file is loaded tolerantly
    (whatever fits by name and shape) and the number of matched tensors is reported. Unlike upstream, an
    IR-50 file in InsightFace's single `body.N` numbering is mapped onto the three stages too.
    """
    ir50 = getattr(options, "ir50", None)
    mobilefacenet = getattr(options, "mobilefacenet", None)
    if ir50 is None and mobilefacenet is None:
        raise ValueError("poster_v2: give --checkpoint (a fine-tuned upstream checkpoint) or --ir50 and/or --mobilefacenet")
    report = ConversionReport()
    if num_labels is None:
        num_labels = len(id2label) if id2label is not None else 7
    config = PosterV2Config(**_label_config(num_labels, id2label, report))
    model = PosterV2ForImageClassification(config)
    own = list(model.state_dict())
    if mobilefacenet is not None:
        expected = [k for k in own if k.startswith("poster_v2.landmark_backbone.")]
        filled, total = _load_part(model, mobilefacenet, _landmark_key, "mobilefacenet", report)
        report.notes.append(f"MobileFaceNet ({mobilefacenet}): matched {len(filled)} of the {len(expected)} landmark-backbone "
                            f"tensors ({total} tensors in the file; its landmark head is not used)")
        missing = [k for k in expected if k not in filled]
        if missing or any(k.startswith("mobilefacenet:") for k in report.unexpected):
            report.missing.extend(missing)
            raise ValueError(f"{mobilefacenet}: upstream loads the landmark network strictly, but only {len(filled)} of "
                             f"{len(expected)} tensors fit; missing: {missing[:10]}; misfits: {report.unexpected[:10]}")
    if ir50 is not None:
        expected = [k for k in own if k.startswith("poster_v2.image_backbone.")]
        filled, total = _load_part(model, ir50, _ir50_key, "ir50", report)
        report.notes.append(f"IR-50 ({ir50}): matched {len(filled)} of the {len(expected)} image-backbone tensors "
                            f"({total} tensors in the file; stage 4 and the embedding head are not used)")
        if not filled:
            raise ValueError(f"{ir50}: no tensor fits the IR-50 image backbone; first keys: {list(_state_dict_of(ir50))[:8]}")
    report.notes.append("the cross-attention, ViT, SE gate and classifier are freshly initialised (train before use)")
    return model.eval(), report


def default_image_processor(config: PosterV2Config) -> PosterV2ImageProcessor:
    return PosterV2ImageProcessor()

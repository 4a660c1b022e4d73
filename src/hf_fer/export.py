"""Export a model to ONNX (optionally int8) or a ``torch.export`` program, with a parity proof beside it.

``hf-fer export --model M --format onnx --output DIR`` (and :func:`export_model`) writes into ``DIR``:

* ``model.onnx``: logits for ``pixel_values [batch, C, H, W]``, batch dimension dynamic (dynamo exporter,
  opset :data:`DEFAULT_OPSET`; it writes none below :data:`MIN_OPSET`). ``--quantize int8`` also writes
  ``model_int8.onnx``: ONNX Runtime static quantization (QDQ format, int8 per-channel weights, uint8 activations calibrated on user images, depthwise
  convolutions kept in float, and the convolutions adding the most quantization noise kept in float when int8
  disagrees with fp32 on held-out calibration images: :func:`quantize_onnx_int8`). ``--quantize int8-dynamic``
  writes it with the linear layers' MatMuls in dynamic int8 instead (the transformers; no calibration set:
  :func:`quantize_matmuls_dynamic`), and ``--quantize int8-mixed`` does both, one after the other (convolutions and
  transformer parts: POSTER V2).
  ``--format torch-export`` writes ``model.pt2`` (``torch.export.save``) instead. ``--optimize`` rewrites
  ``model.onnx`` with ONNX Runtime's transformer fusions (:func:`fuse_transformer_ops`; runs in ONNX Runtime only).
* ``parity_report.json``: the exported file against the PyTorch model on a fixed image set (synthetic faces by
  default): max |logit difference| and top-1 agreement per file, the thresholds, the opset, the library
  versions, the attention implementation used and the graph optimisation that ran (``graph_optimization``:
  optimiser and fused-operator counts, or ``null``).
* ``config.json`` and ``preprocessor_config.json``: labels and preprocessing, so the folder describes itself
  (:class:`hf_fer.onnx.OnnxClassifier` needs nothing else), and the code files their ``auto_map`` names
  (``configuration_*.py``...), so ``AutoConfig``/``AutoImageProcessor.from_pretrained(DIR, trust_remote_code=True)``
  load it without hf_fer (:func:`copy_remote_code`).

Parity is measured with PyTorch run on the same batches as the exported file, so a model whose logits depend on the
rest of the batch (ARM ``affinity_mode="batch"``, what ``hf-fer convert --arch arm`` writes) exports too; the report's
``batch_dependence`` says so, with a warning pointing at ``model.calibrate_affinity()`` for batch-independent logits.

The export fails (:class:`ExportParityError`, nothing written to ``DIR``) when fp32 logits differ by more than
:data:`FP32_TOLERANCE` or int8 top-1 agreement is under :data:`INT8_MIN_AGREEMENT`; the rejected files are
kept in ``DIR.rejected/`` with their report, for inspection.

Attention: transformers backbones (VT-NR's Swin/ViT) are exported with the ``"eager"`` attention
implementation (plain matmul + softmax), because PyTorch's ONNX decomposition of
``scaled_dot_product_attention`` produces a view of a non-contiguous tensor (``Cannot view a tensor with
shape [128, 49, 4, 32]``), a PyTorch exporter issue, not one in hf_fer's code. Eager and SDPA give the same
logits; the report records which one was exported.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
TORCH_EXPORT_FILE = "model.pt2"
REPORT_FILE = "parity_report.json"
FORMATS = ("onnx", "torch-export")
DEFAULT_OPSET = 18
MIN_OPSET = 18  # torch.onnx's dynamo exporter writes opset 18+; lower ones go through a best-effort version converter
FP32_TOLERANCE = 1e-4  # max |logit difference| allowed between an fp32 export and PyTorch
INT8_MIN_AGREEMENT = 0.99  # top-1 agreement required between the int8 model and PyTorch fp32
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"


class ExportParityError(RuntimeError):
    """The exported model does not reproduce the PyTorch model within the thresholds (the message has the numbers)."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class ExportResult:
    output_dir: Path
    files: dict[str, Path]  # "fp32" / "int8" / "torch-export" -> path
    report: dict = field(default_factory=dict)


class LogitsOnly(torch.nn.Module):
    """``pixel_values -> logits``: the exported signature (no dataclass outputs, no optional arguments)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


# ------------------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def exportable_attention(model: torch.nn.Module):
    """Switch every transformers sub-model using SDPA/flash attention to ``"eager"`` for the duration; yields
    the implementation exported (``None`` when the model has no attention to switch)."""
    from transformers import PreTrainedModel

    switched: list[tuple[Any, str]] = []
    for module in model.modules():
        config = getattr(module, "config", None) if isinstance(module, PreTrainedModel) else None
        current = getattr(config, "_attn_implementation", None) if config is not None else None
        if current not in (None, "eager") and all(c is not config for c, _ in switched):
            switched.append((config, current))
            config._attn_implementation = "eager"
    try:
        yield "eager" if switched else None
    finally:
        for config, previous in switched:
            config._attn_implementation = previous


def _versions() -> dict[str, str | None]:
    versions = {}
    for package in ("hf_fer", "torch", "transformers", "onnx", "onnxruntime", "onnxscript"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    if versions["hf_fer"] is None:
        from . import __version__

        versions["hf_fer"] = __version__
    return versions


def _input_shape(image_processor) -> tuple[int, int, int]:
    """(channels, height, width) the image processor produces (1 channel for grayscale models)."""
    from PIL import Image

    pixel_values = image_processor(images=[Image.new("RGB", (320, 320))], return_tensors="pt")["pixel_values"]
    return tuple(int(n) for n in pixel_values.shape[-3:])


def _rgb(image):
    from .image_io import load_image

    return load_image(image, mode="RGB")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def load_images(source: str | os.PathLike | Sequence | None, num_images: int, seed: int = 0, label_space: str = "raf-db") -> list:
    """``num_images`` RGB PIL images: ``None``/``"synthetic"`` = synthetic faces (fixed seed), a folder of image
    files (searched recursively, sorted), a saved ``datasets`` folder or Hub id (its ``image`` column), or a list
    of images/paths. Unreadable files are skipped with a warning, never fatal unless none is left."""
    if source is None or source == "synthetic":
        from .data.synthetic import make_synthetic_fer

        dataset = make_synthetic_fer(num_images, image_size=112, seed=seed, label_space=label_space)
        return [image.convert("RGB") for image in dataset["image"]]
    if not isinstance(source, (str, os.PathLike)):
        items = list(source)[:num_images]
    else:
        path = Path(source).expanduser()
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else []
        if files and not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            items = files[:num_images]
        else:
            from .data.loading import load_fer_dataset

            loaded = load_fer_dataset(str(source), check_labels=False)  # images only
            split = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
            column = "image" if "image" in split.column_names else next(
                (n for n, f in split.features.items() if type(f).__name__ == "Image"), None)
            if column is None:
                raise ValueError(f"calibration dataset {source}: no image column (columns: {split.column_names})")
            items = split.select(range(min(num_images, len(split))))[column]
    images, failures = [], []
    for item in items:
        try:
            images.append(_rgb(item))
        except Exception as error:  # one bad image never sinks the set
            failures.append(f"{item}: {error}")
    if failures:
        warnings.warn(f"skipped {len(failures)} unreadable image(s): " + "; ".join(failures[:5]), stacklevel=2)
    if not images:
        raise ValueError(f"no readable images in {source!r}")
    return images


def _pixel_values(image_processor, images: list) -> torch.Tensor:
    return image_processor(images=images, return_tensors="pt")["pixel_values"].float()


def _batches(array: np.ndarray, batch_size: int) -> Iterable[np.ndarray]:
    for start in range(0, len(array), batch_size):
        yield array[start:start + batch_size]


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Max |difference| and top-1 agreement between two ``[N, C]`` logit arrays."""
    if reference.shape != candidate.shape:
        raise ExportParityError(f"exported logits have shape {candidate.shape}, PyTorch gives {reference.shape}")
    ordered = np.sort(reference, axis=-1)
    margin = ordered[:, -1] - ordered[:, -2] if reference.shape[-1] > 1 else np.zeros(len(reference))
    flipped = reference.argmax(-1) != candidate.argmax(-1)
    return {
        "num_images": int(reference.shape[0]),
        "max_abs_logit_diff": float(np.abs(reference - candidate).max()),
        "top1_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
        # how the PyTorch predictions spread over the classes: agreement means little if they are all one class
        "reference_class_counts": np.bincount(reference.argmax(-1), minlength=reference.shape[-1]).tolist(),
        # top-1 minus top-2 logit of the PyTorch model: images near a tie flip under any small perturbation
        "reference_margin_quantiles": dict(zip(("10%", "50%", "90%"), np.quantile(margin, [0.1, 0.5, 0.9]).round(4).tolist())),
        "largest_margin_flipped": float(margin[flipped].max()) if flipped.any() else None,
        # agreement on the images that are not near-ties: PyTorch margin above twice the 90th percentile of the
        # per-image max |logit difference| (a diagnostic of where the flips are, not the gate)
        **_untied_agreement(reference, candidate, margin),
        "median_margin_flipped": float(np.median(margin[flipped])) if flipped.any() else None,
    }


def _untied_agreement(reference: np.ndarray, candidate: np.ndarray, margin: np.ndarray) -> dict:
    error = np.abs(reference - candidate).max(-1)
    bound = float(np.quantile(error, 0.9))
    untied = margin > 2 * bound
    agree = reference.argmax(-1) == candidate.argmax(-1)
    return {"tie_margin": round(2 * bound, 4), "num_untied": int(untied.sum()),
            "top1_agreement_untied": float(agree[untied].mean()) if untied.any() else None}


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session_or_path, pixel_values: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Logits of an ONNX model (a session or a file) run with ONNX Runtime, ``batch_size`` images at a time."""
    session = onnx_session(session_or_path) if isinstance(session_or_path, (str, os.PathLike)) else session_or_path
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0] for batch in _batches(pixel_values, batch_size)])


PARITY_BATCH = 16  # the parity set is run this many images at a time...
SINGLE_IMAGES = 4  # ...and its first images also one at a time (batch 1)


def reference_logits(model: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int) -> np.ndarray:
    """PyTorch logits computed ``batch_size`` images at a time: the batches the exported file is run on, so a model
    whose logits depend on the rest of the batch (ARM ``affinity_mode="batch"``) is compared like with like."""
    wrapped = LogitsOnly(model.eval())
    with torch.no_grad():
        return torch.cat([wrapped(batch) for batch in pixel_values.split(batch_size)]).float().numpy()


def batch_dependence(model: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int = PARITY_BATCH) -> float | None:
    """Max |logit difference| of the first images run alone vs inside a batch of ``batch_size`` (``None`` with one
    image): above rounding, an image's logits depend on the other images of its batch."""
    if len(pixel_values) < 2:
        return None
    count = min(SINGLE_IMAGES, len(pixel_values))
    alone = reference_logits(model, pixel_values[:count], 1)
    in_batch = reference_logits(model, pixel_values[:batch_size], batch_size)[:count]
    return float(np.abs(alone - in_batch).max())


def _compare_file(references: dict[int, np.ndarray], run) -> dict:
    """Compare at batch :data:`PARITY_BATCH` over the whole set and at batch 1 on the first images (the batch axis is dynamic), each
    against PyTorch run on the same batches (``references[batch_size]``)."""
    entry = compare_logits(references[PARITY_BATCH], run(PARITY_BATCH))
    if len(references[PARITY_BATCH]) > 1:
        single = compare_logits(references[1], run(1)[:len(references[1])])
        entry["max_abs_logit_diff"] = max(entry["max_abs_logit_diff"], single["max_abs_logit_diff"])
    entry["batch_sizes_checked"] = [1, PARITY_BATCH]
    return entry


def check_parity(report: dict, key: str, tolerance: float = FP32_TOLERANCE, min_agreement: float = INT8_MIN_AGREEMENT) -> None:
    """Raise :class:`ExportParityError` naming the numbers when ``report[key]`` misses its threshold."""
    entry = report[key]
    if key == "int8":
        entry["min_top1_agreement"] = min_agreement
        entry["passed"] = entry["top1_agreement"] >= min_agreement
        if not entry["passed"]:
            raise ExportParityError(
                f"int8 export rejected: top-1 agreement with PyTorch fp32 is {entry['top1_agreement']:.2%} on "
                f"{entry['num_images']} images (required >= {min_agreement:.0%}); max |logit diff| "
                f"{entry['max_abs_logit_diff']:.4g}", report)
    else:
        entry["tolerance"] = tolerance
        entry["passed"] = entry["max_abs_logit_diff"] <= tolerance
        if not entry["passed"]:
            raise ExportParityError(
                f"{key} export rejected: max |logit diff| vs PyTorch is {entry['max_abs_logit_diff']:.3g} "
                f"(tolerance {tolerance:g}) on {entry['num_images']} images; top-1 agreement "
                f"{entry['top1_agreement']:.2%}", report)


def verify_export(output_dir: str | os.PathLike, model: torch.nn.Module, pixel_values: torch.Tensor,
                  tolerance: float = FP32_TOLERANCE, min_agreement: float = INT8_MIN_AGREEMENT) -> dict:
    """Check the files of an export folder against ``model`` on ``pixel_values``; returns the parity entries,
    raises :class:`ExportParityError` with the numbers on failure. :func:`export_model` runs it before
    publishing a folder; run it again after editing or copying an exported file."""
    output_dir = Path(output_dir)
    references = {PARITY_BATCH: reference_logits(model, pixel_values, PARITY_BATCH), 1: reference_logits(model, pixel_values[:SINGLE_IMAGES], 1)}
    report: dict = {}
    array = pixel_values.numpy()
    for key, name in (("fp32", ONNX_FILE), ("int8", INT8_FILE)):
        if (output_dir / name).exists():
            session = onnx_session(output_dir / name)
            entry = _compare_file(references, lambda b, session=session: onnx_logits(session, array[:SINGLE_IMAGES] if b == 1 else array, b))
            report[key] = {"file": name, **entry}
            check_parity(report, key, tolerance, min_agreement)
    if (output_dir / TORCH_EXPORT_FILE).exists():
        program = torch.export.load(str(output_dir / TORCH_EXPORT_FILE)).module()

        def run(batch_size):
            with torch.no_grad():
                values = pixel_values[:SINGLE_IMAGES] if batch_size == 1 else pixel_values
                return torch.cat([program(b) for b in values.split(batch_size)]).float().numpy()

        report["torch-export"] = {"file": TORCH_EXPORT_FILE, **_compare_file(references, run)}
        check_parity(report, "torch-export", tolerance)
    if not report:
        raise FileNotFoundError(f"{output_dir}: no exported model ({ONNX_FILE}, {INT8_FILE} or {TORCH_EXPORT_FILE})")
    return report


# ------------------------------------------------------------------------------------------------ writers


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            LogitsOnly(model), (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"pixel_values": {0: batch}}, opset_version=opset, verbose=False,
        )
    program.save(str(path))


# ONNX Runtime's transformer fusions (python fusers of ``onnxruntime.transformers.optimizer``) that we rely on.
# "vit" is the fuser family for vision transformers (Swin uses the same one); opt_level 0 runs only these
# fusers, not ONNX Runtime's load-time optimisations, so the saved graph holds no machine-specific layouts.
FUSION_MODEL_TYPE = "vit"
FUSED_OPERATORS = ("Attention", "MultiHeadAttention", "LayerNormalization", "SkipLayerNormalization", "BiasGelu",
                   "FastGelu", "Gelu")


def fuse_transformer_ops(source: str | os.PathLike, target: str | os.PathLike) -> dict:
    """Rewrite the transformer parts of an exported graph with ONNX Runtime's fused operators (LayerNorm +
    residual -> SkipLayerNormalization, bias + GELU -> BiasGelu, attention -> Attention where its pattern matches)
    and save it to ``target``. Returns what ran and the count of each fused operator created.

    The fused operators are ONNX Runtime contrib ops (``com.microsoft``): the result runs in ONNX Runtime only.
    """
    import logging

    import onnxruntime
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = [logging.getLogger(name) for name in ("onnxruntime.transformers", "fusion_base", "onnx_model", "onnx_model_bert", "optimizer")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # "Please specify num_heads...": the fusers read them from the graph (0 = detect)
        logger.setLevel(logging.ERROR)
    try:
        optimized = optimize_model(str(source), model_type=FUSION_MODEL_TYPE, num_heads=0, hidden_size=0,
                                   optimization_options=FusionOptions(FUSION_MODEL_TYPE), opt_level=0, use_gpu=False)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    statistics = optimized.get_fused_operator_statistics()
    fused = {op: int(statistics.get(op, 0)) for op in FUSED_OPERATORS if statistics.get(op)}
    optimized.save_model_to_file(str(target))
    return {"optimizer": "onnxruntime.transformers.optimizer.optimize_model", "model_type": FUSION_MODEL_TYPE,
            "opt_level": 0, "onnxruntime": onnxruntime.__version__, "fused_operators": fused}


def quantize_matmuls_dynamic(source: str | os.PathLike, target: str | os.PathLike) -> dict:
    """ONNX Runtime *dynamic* int8 quantization of the MatMuls with constant weights (the transformers' linear
    layers): int8 per-channel weights, activations quantized per call from their own range, so no calibration
    set. Attention's activation x activation MatMuls and every other operator stay float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"], per_channel=True,
                     weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
    return {"method": "onnxruntime.quantization.quantize_dynamic", "op_types": ["MatMul"], "weights": "int8 per-channel",
            "activations": "uint8, range computed per call", "const_weight_matmuls_only": True}


def _fuse_in_place(path: Path) -> dict:
    """:func:`fuse_transformer_ops` replacing ``path`` (after int8 quantization, which reads the plain graph)."""
    fused = path.with_name(path.stem + ".fused.onnx")
    info = fuse_transformer_ops(path, fused)
    os.replace(fused, path)
    return info


def _export_torch(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(LogitsOnly(model), (example,), dynamic_shapes={"pixel_values": {0: batch}})
    torch.export.save(program, str(path))


DEFAULT_INT8_OP_TYPES = ("Conv",)
# "int8": static QDQ of the convolutions (CNNs); "int8-dynamic": dynamic int8 of the linear layers' MatMuls (VT-NR:
# 2.2x fp32 eager at batch 32, 99.6 % agreement on a trained model; README "Fast inference and export").
# "int8-mixed": both (models with convolutions and transformer parts: POSTER V2).
QUANTIZE_CHOICES = (None, "int8", "int8-dynamic", "int8-mixed")
CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")


def _agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float((reference.argmax(-1) == candidate.argmax(-1)).mean())


def depthwise_convolutions(model_path: str | os.PathLike) -> list[str]:
    """Names of the grouped (depthwise) ``Conv`` nodes of an ONNX graph."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "Conv"
            and any(attribute.name == "group" and attribute.i > 1 for attribute in node.attribute)]


# Mixed-precision fallback of the int8 export (see quantize_onnx_int8): when the quantized model agrees with the float
# one on fewer calibration images than this, the convolutions adding the most quantization noise stay in float.
INT8_FALLBACK_TARGET = 0.999  # on 256 held-out calibration images: no flip and none at risk (0.995 left a recipe ARM at 99.0 %)
INT8_FALLBACK_ROUNDS = 3  # re-quantizations at most (each one a few seconds; the calibrated ranges are reused)
INT8_FALLBACK_NOISE_SHARE = 0.5  # per round, keep in float the fewest nodes that add this share of the measured noise...
INT8_FALLBACK_MAX_NODES = 3  # ...but no more than this many per round
INT8_DEBUG_IMAGES = 32  # held-out calibration images (the nearest ties) on which the per-node noise is measured
INT8_DEBUG_BATCH = 4  # of these, how many have their intermediate tensors in memory at once
INT8_FALLBACK_HELD_OUT = 4  # 1/4 of the calibration images are kept out of the ranges, for the fallback to judge


class _ArrayReader:
    """An ONNX Runtime calibration data reader over an array of pixel values, in batches.

    ``len()`` and ``set_range`` (in batches) let ``quantize_static`` calibrate a few batches at a time
    (``CalibStridedMinMax``): the MinMax calibrator otherwise keeps every intermediate tensor of every calibration
    image in memory until the end (POSTER V2 at 224 px: 11 GB for 32 images)."""

    def __init__(self, pixel_values: np.ndarray, batch_size: int):
        self.all_batches = list(_batches(pixel_values, batch_size))
        self.batches = iter(self.all_batches)

    def __len__(self) -> int:
        return len(self.all_batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.batches = iter(self.all_batches[start_index:end_index])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def __iter__(self):
        return iter(lambda: self.get_next(), None)


def quantization_noise_by_node(float_model: str | os.PathLike, qdq_model: str | os.PathLike, pixel_values: np.ndarray,
                               nodes: Sequence[str], batch_size: int = 16) -> list[dict]:
    """How much quantization noise each of ``nodes`` adds, measured with ONNX Runtime's QDQ debugging tools
    (``onnxruntime.quantization.qdq_loss_debug``): both models run on ``pixel_values`` with their intermediate
    tensors saved, and for each node the signal-to-quantization-noise ratio (SQNR, dB, against the float model) of
    its activation input as it arrives and of its output as it leaves (after its QuantizeLinear/DequantizeLinear).

    ``added_noise`` is the difference of the two relative noise powers, 10^(-SQNR/10): along a chain of layers
    these add up to the relative noise at the logits, so the node adding the most is the one whose float
    computation removes the most error. Sorted, largest first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    by_name = {node.name: node for node in onnx.load(str(float_model), load_external_data=False).graph.node}
    wanted = [(tensor, stage) for name in nodes if name in by_name
              for tensor, stage in ((by_name[name].input[0], "pre_qdq"), (by_name[name].output[0], "post_qdq"))]
    # Every saved tensor of a batch is held at once, so a few images at a time: the squared norms of signal and
    # noise add up over batches to the SQNR of the whole set (POSTER V2 at 224 px held 6 GB for 32 images at once).
    saved = {"float": ["Conv"], "qdq": ["Conv", "QuantizeLinear", "DequantizeLinear"]}  # what the comparison needs
    powers: dict[tuple[str, str], list[float]] = {}  # (tensor, stage) -> [signal power, noise power]
    with tempfile.TemporaryDirectory() as scratch:
        augmented = {}
        for key, path in (("float", float_model), ("qdq", qdq_model)):
            augmented[key] = str(Path(scratch) / f"{key}.onnx")
            modify_model_output_intermediate_tensors(str(path), augmented[key], op_types_for_saving=saved[key])
        step = max(1, min(batch_size, INT8_DEBUG_BATCH))
        for first in range(0, len(pixel_values), step):
            chunk = pixel_values[first:first + step]
            activations = {key: collect_activations(augmented[key], _ArrayReader(chunk, step)) for key in augmented}
            matched = create_activation_matching(activations["qdq"], activations["float"])
            for tensor, stage in wanted:
                reference = activations["float"].get(tensor)
                values = matched[tensor][stage] if tensor in matched else activations["qdq"].get(tensor)  # not quantized: as is
                if reference is None or values is None:
                    continue
                signal = np.concatenate(reference).astype(np.float64).ravel()
                noise = signal - np.concatenate(values).astype(np.float64).ravel()
                total = powers.setdefault((tensor, stage), [0.0, 0.0])
                total[0] += float(signal @ signal)
                total[1] += float(noise @ noise)

    def sqnr(tensor: str, stage: str) -> float | None:
        """dB, as ``qdq_loss_debug.compute_signal_to_quantization_noice_ratio`` on the whole set."""
        if (tensor, stage) not in powers:
            return None
        signal, noise = powers[(tensor, stage)]
        epsilon = np.finfo(float).eps
        return 20 * math.log10(max(math.sqrt(signal), epsilon) / max(math.sqrt(noise), epsilon))

    rows = []
    for name in nodes:
        node = by_name.get(name)
        if node is None:
            continue
        arriving, leaving = sqnr(node.input[0], "pre_qdq"), sqnr(node.output[0], "post_qdq")
        if arriving is None or leaving is None:
            continue
        added = 10 ** (-leaving / 10) - 10 ** (-min(arriving, 300.0) / 10)
        rows.append({"node": name, "input_sqnr_db": round(arriving, 2), "output_sqnr_db": round(leaving, 2), "added_noise": float(added)})
    return sorted(rows, key=lambda row: -row["added_noise"])


def _judge_int8(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Top-1 agreement, and the share of images "at risk": fp32 top-1 minus top-2 margin below twice the image's own
    largest int8 logit error, so that an error of that size could flip it. Every flip is at risk; the count at risk
    varies far less between image sets than the few flips do, so it is the fallback's steadier signal."""
    ordered = np.sort(reference, axis=-1)
    margin = ordered[:, -1] - ordered[:, -2]
    error = np.abs(reference - candidate).max(-1)
    return {"top1_agreement": _agreement(reference, candidate), "at_risk": float((margin < 2 * error).mean()),
            "max_abs_logit_diff": float(error.max())}


def _largest_noise_share(ranked: list[dict], share: float = INT8_FALLBACK_NOISE_SHARE, max_nodes: int = INT8_FALLBACK_MAX_NODES) -> list[dict]:
    """The fewest nodes (largest first) whose added noise reaches ``share`` of the total, at most ``max_nodes``."""
    total = sum(max(row["added_noise"], 0.0) for row in ranked)
    chosen, covered = [], 0.0
    for row in ranked[:max_nodes]:
        if chosen and covered >= share * total:
            break
        chosen.append(row)
        covered += max(row["added_noise"], 0.0)
    return chosen


def quantize_onnx_int8(source: str | os.PathLike, target: str | os.PathLike, calibration: np.ndarray, batch_size: int = 16,
                       op_types: Sequence[str] | None = DEFAULT_INT8_OP_TYPES, calibrate_method: str = "MinMax",
                       keep_depthwise_float: bool = True, target_agreement: float | None = INT8_FALLBACK_TARGET,
                       max_fallback_rounds: int = INT8_FALLBACK_ROUNDS, float_nodes: Sequence[str] = ()) -> dict:
    """ONNX Runtime static quantization: QDQ format, int8 per-channel weights, uint8 activations calibrated on
    ``calibration`` pixel values, with a mixed-precision fallback. Returns the settings and what the fallback did,
    for the report.

    uint8 activations x int8 weights is the pair x86 int8 kernels (AVX-512 VNNI ``vpdpbusd``, AVX2
    ``vpmaddubsw``) run natively; with int8 activations ONNX Runtime takes a much slower path. Measured at batch 32
    on an AVX-512 VNNI CPU (2 threads), ResNet-18 ARM / DACL / DMUE at 224 px, CPU time against fp32 eager:
    4.5-5.1x with uint8 activations, 1.8x with int8 activations (ONNX Runtime fp32: 2.0x). Both give the same
    logits here (asymmetric ranges: 256 levels either way). On AVX2 CPUs without VNNI, ONNX Runtime documents
    possible int16 saturation of ``vpmaddubsw`` for this pair; the parity check measures the result on the
    exporting machine.

    ``op_types``: operators to quantize; ``None`` = every one ONNX Runtime can. The default quantizes the
    convolutions only (where CNN time goes): quantizing attention/MLP ``MatMul``/``Gemm`` too costs far more
    top-1 agreement (DACL tiny: 29 % vs 85 %) for little speed. Adding ``Add`` (the residual sums) is 10-20 %
    faster again (5.5-5.9x) but flipped 2 more of 256 faces on a trained tiny DMUE.

    ``keep_depthwise_float``: leave grouped (depthwise) convolutions in float. Their outputs share one
    activation range per tensor although their channels' ranges differ widely, so int8 loses the small
    channels (the MobileNet problem); they cost few FLOPs. On a mini-Xception trained briefly on synthetic faces
    this lifted agreement from 94.5 % to 99.2 % (128 faces). Models without grouped convolutions are unaffected.

    ``target_agreement`` (mixed-precision fallback; ``None`` turns it off): when the int8 model's top-1 agreement
    with the float model on the calibration images is below it, the quantized nodes adding the most quantization
    noise (:func:`quantization_noise_by_node`, on the :data:`INT8_DEBUG_IMAGES` calibration images nearest a tie)
    are kept in float and the model is quantized again with the same calibrated ranges, up to
    ``max_fallback_rounds`` times; the model with the best agreement is kept. The report lists every round: the
    nodes kept in float with their SQNR figures and the agreement before and after. The export's parity check then
    judges the result on its own (held-out) images. ``float_nodes``: nodes kept in float from the start (by name).

    ``calibrate_method``: how activation ranges are chosen (ONNX Runtime's calibrators). MinMax and Entropy
    gave the same agreement on the test models, Percentile +-2-4 points depending on the model. More calibration
    images narrow the largest logit error (trained tiny DMUE: 0.73 with 32 images, 0.16 with 256).
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    import logging

    import onnx

    if calibrate_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibrate_method must be one of {CALIBRATION_METHODS}, got {calibrate_method!r}")

    # the histogram calibrators stack their batches: they need equal batch sizes (one image at a time)
    reader_batch = batch_size if calibrate_method == "MinMax" else 1

    class Reader(_ArrayReader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:  # graph optimisation + shape inference first, as ONNX Runtime recommends
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception:
            shutil.copyfile(source, prepared)
        excluded = depthwise_convolutions(prepared) if keep_depthwise_float else []
        candidates = [node.name for node in onnx.load(str(prepared)).graph.node
                      if (op_types is None or node.op_type in op_types) and node.name not in excluded]
        # calibrate once; the fallback's re-quantizations reuse the ranges (ONNX Runtime versions without the cache
        # option calibrate again: same ranges, slower)
        import inspect

        cache = ({"calibration_cache_path": str(Path(scratch) / "calibrated_ranges.json")}
                 if "calibration_cache_path" in inspect.signature(quantize_static).parameters else {})

        # MinMax ranges one batch at a time (the same ranges: min of the minima, max of the maxima), in bounded memory
        strided = {"CalibStridedMinMax": 1} if calibrate_method == "MinMax" else {}

        def quantize(path: Path, float_nodes: list[str]) -> np.ndarray:
            root = logging.getLogger()
            level, root.level = root.level, logging.ERROR  # per-channel notes about 1-D norm weights are noise
            try:
                quantize_static(str(prepared), str(path), Reader(calibration, reader_batch), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=getattr(CalibrationMethod, calibrate_method),
                                extra_options={"ActivationSymmetric": False, **strided}, **cache,
                                op_types_to_quantize=list(op_types) if op_types else None, nodes_to_exclude=excluded + float_nodes)
            finally:
                root.level = level
            return onnx_logits(str(path), judged, batch_size)

        settings = dict(quant_format="QDQ", per_channel=True, activation_type="uint8", weight_type="int8",
                        calibrate_method=calibrate_method, op_types=list(op_types) if op_types else "all",
                        num_calibration_images=int(len(calibration)))
        # the fallback judges on images the ranges were not fitted to (on its own calibration images int8 agrees more
        # than on new ones, whose activations the calibrated ranges clip: mini-Xception 100 % vs 93.8 %)
        held_out = len(calibration) // INT8_FALLBACK_HELD_OUT if target_agreement is not None and len(calibration) >= 64 else 0
        calibration, judged = (calibration[:-held_out], calibration[-held_out:]) if held_out else (calibration, calibration)
        settings["num_range_images"] = int(len(calibration))
        reference = onnx_logits(str(prepared), judged, batch_size)
        current = Path(scratch) / "int8_round0.onnx"
        float_nodes = list(float_nodes)
        judgement = _judge_int8(reference, quantize(current, float_nodes))
        best, rounds = (judgement, current, list(float_nodes)), []

        def good_enough(judged_entry: dict) -> bool:
            return (judged_entry["top1_agreement"] >= target_agreement
                    and judged_entry["at_risk"] <= (1 - target_agreement) + 1e-9)

        def rank(judged_entry: dict) -> tuple:  # agreement up to the target first, then the fewest images at risk
            return min(judged_entry["top1_agreement"], target_agreement), -judged_entry["at_risk"]

        ordered = np.sort(reference, axis=-1)
        nearest_ties = np.argsort(ordered[:, -1] - ordered[:, -2])[:INT8_DEBUG_IMAGES]
        for round_index in range(1, max_fallback_rounds + 1):
            remaining = [name for name in candidates if name not in float_nodes]
            if target_agreement is None or good_enough(judgement) or not remaining:
                break
            ranked = quantization_noise_by_node(prepared, current, judged[np.sort(nearest_ties)], remaining, batch_size)
            chosen = _largest_noise_share(ranked)
            if not chosen:
                break
            float_nodes += [row["node"] for row in chosen]
            current = Path(scratch) / f"int8_round{round_index}.onnx"
            before, judgement = judgement, _judge_int8(reference, quantize(current, float_nodes))
            rounds.append({"before": before, "after": judgement, "kept_float": chosen,
                           "largest_remaining": ranked[len(chosen):len(chosen) + 3]})
            if rank(judgement) > rank(best[0]):
                best = (judgement, current, list(float_nodes))
        shutil.copyfile(best[1], target)
        kept = best[2]
        settings["calibration_top1_agreement"] = best[0]["top1_agreement"]
        settings["quantized_nodes"] = len([name for name in candidates if name not in kept])
        settings["float_depthwise_convolutions"] = len(excluded)
        settings["fallback"] = {
            "target_agreement": target_agreement, "max_at_risk": None if target_agreement is None else round(1 - target_agreement, 6),
            "max_rounds": max_fallback_rounds, "plain_int8": rounds[0]["before"] if rounds else best[0], "final": best[0],
            "float_nodes": kept, "rounds": rounds,
            "num_judged_images": int(len(judged)), "judged_images": "held out of the range calibration" if held_out else "the calibration images",
            "measure": f"qdq_loss_debug SQNR on the {min(INT8_DEBUG_IMAGES, len(judged))} judged images nearest a tie",
        }
    return settings


# ------------------------------------------------------------------------------------------------ main entry


def export_model(
    model: str | os.PathLike | torch.nn.Module,
    output_dir: str | os.PathLike,
    format: str = "onnx",
    quantize: str | None = None,
    calibration_dataset: str | os.PathLike | Sequence | None = None,
    image_processor=None,
    parity_dataset: str | os.PathLike | Sequence | None = None,
    num_parity_images: int = 128,
    num_calibration_images: int = 128,
    opset: int = DEFAULT_OPSET,
    tolerance: float = FP32_TOLERANCE,
    min_agreement: float = INT8_MIN_AGREEMENT,
    int8_op_types: Sequence[str] | None = DEFAULT_INT8_OP_TYPES,
    calibration_method: str = "MinMax",
    overwrite: bool = False,
    optimize: bool = False,
    int8_target_agreement: float | None = INT8_FALLBACK_TARGET,
) -> ExportResult:
    """Export ``model`` (a folder, Hub id or loaded model) and prove the export; see the module docstring.

    ``parity_dataset``/``calibration_dataset``: ``None`` = synthetic faces (different seeds for the two), or a
    folder of images, a saved ``datasets`` folder, a Hub dataset id, or a list of images. The folder is built
    aside and moved into ``output_dir`` only when every check passes.

    ``optimize=True`` rewrites ``model.onnx`` with ONNX Runtime's transformer fusions (:func:`fuse_transformer_ops`;
    the fused graph runs in ONNX Runtime only); the report's ``graph_optimization`` says which fusions ran, and the
    fp32 parity check runs on the fused file.
    """
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {format!r}")
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"--quantize must be one of {[q for q in QUANTIZE_CHOICES if q]} (or omitted), got {quantize!r}")
    if quantize and format != "onnx":
        raise ValueError(f"--quantize {quantize} is implemented for --format onnx (ONNX Runtime quantization)")
    if optimize and format != "onnx":
        raise ValueError("--optimize (ONNX Runtime transformer fusions) applies to --format onnx")
    if format == "onnx" and opset < MIN_OPSET:
        raise ValueError(opset_error(opset))
    output_dir = Path(output_dir).expanduser()
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty (pass --overwrite to replace it)")

    if isinstance(model, torch.nn.Module):
        if image_processor is None:
            raise ValueError("pass image_processor= with a loaded model (it defines the exported input size)")
        source = getattr(model, "name_or_path", None) or type(model).__name__
    else:
        from .evaluation.inference import load_model_for_inference

        loaded = load_model_for_inference(model, device="cpu")
        model, image_processor, source = loaded.model, image_processor or loaded.image_processor, str(model)
    model = model.eval().float().to("cpu")
    channels, height, width = _input_shape(image_processor)

    from .labels import benchmark_of

    id2label = getattr(model.config, "id2label", None) or {}
    try:  # render the synthetic faces in the model's label space when it is a benchmark's (any works for parity)
        label_space = benchmark_of(id2label[i] for i in sorted(id2label)) or "raf-db"
    except (KeyError, ValueError):  # LABEL_0..., or names of no benchmark
        label_space = "raf-db"
    parity_images = load_images(parity_dataset, num_parity_images, seed=1234, label_space=label_space)
    pixel_values = _pixel_values(image_processor, parity_images)
    dependence = batch_dependence(model, pixel_values)
    batch_dependent = dependence is not None and dependence > tolerance
    if batch_dependent:
        warnings.warn(batch_dependence_note(model, dependence), stacklevel=2)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    started = time.perf_counter()
    report: dict = {
        "source": str(source), "format": format, "architecture": getattr(model.config, "model_type", None),
        "input": {"name": INPUT_NAME, "shape": ["batch", channels, height, width], "dtype": "float32", "dynamic_axes": {"0": "batch"}},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", int(model.config.num_labels)]},
        "parity_images": {"source": "synthetic faces (seed 1234)" if parity_dataset is None else str(parity_dataset),
                          "count": len(parity_images)},
        "versions": _versions(),
        # logits of the first parity images alone vs inside their batch: above tolerance, an image's logits depend on
        # the rest of its batch (ARM affinity_mode="batch"); the exported file then does too, and is compared with
        # PyTorch run on the same batches
        "batch_dependence": {"max_abs_logit_diff_alone_vs_in_batch": dependence, "batch_dependent": batch_dependent,
                             "note": batch_dependence_note(model, dependence) if batch_dependent else None},
    }
    files: dict[str, Path] = {}
    try:
        with exportable_attention(model) as attention, torch.no_grad():
            report["attention_implementation"] = attention
            example = pixel_values[:2]
            if format == "onnx":
                _export_onnx(model, example, staging / ONNX_FILE, opset)
                import onnx

                proto = onnx.load(str(staging / ONNX_FILE), load_external_data=False)
                report["opset"] = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
                if report["opset"] != opset:
                    raise ValueError(f"--opset {opset}: the exporter wrote opset {report['opset']} instead")
                report["exporter"] = "torch.onnx.export(dynamo=True)"
                files["fp32"] = staging / ONNX_FILE
                if quantize == "int8-dynamic":  # transformers: int8 linear layers, no calibration set
                    report["quantization"] = quantize_matmuls_dynamic(staging / ONNX_FILE, staging / INT8_FILE)
                    files["int8"] = staging / INT8_FILE
                elif quantize:
                    calibration = _pixel_values(image_processor, load_images(calibration_dataset, num_calibration_images, seed=99, label_space=label_space))
                    report["quantization"] = quantize_onnx_int8(staging / ONNX_FILE, staging / INT8_FILE, calibration.numpy(), op_types=int8_op_types,
                                                                   calibrate_method=calibration_method, target_agreement=int8_target_agreement)
                    report["quantization"]["calibration_images"] = "synthetic faces (seed 99)" if calibration_dataset is None else str(calibration_dataset)
                    if quantize == "int8-mixed":
                        # then the linear layers' MatMuls (which static int8 leaves in float) in dynamic int8; the
                        # fallback above judged the static part alone, the parity check below judges the result
                        mixed = staging / "model_int8_mixed.onnx"
                        report["quantization"]["dynamic_matmuls"] = quantize_matmuls_dynamic(staging / INT8_FILE, mixed)
                        os.replace(mixed, staging / INT8_FILE)
                    files["int8"] = staging / INT8_FILE
                report["graph_optimization"] = _fuse_in_place(staging / ONNX_FILE) if optimize else None
            else:
                _export_torch(model, example, staging / TORCH_EXPORT_FILE)
                report["exporter"] = "torch.export.export"
                files["torch-export"] = staging / TORCH_EXPORT_FILE
        report["export_seconds"] = round(time.perf_counter() - started, 2)
        model.config.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        _complete_preprocessor_config(staging / "preprocessor_config.json", image_processor)
        report["remote_code_files"] = copy_remote_code(staging, model, image_processor)
        try:
            report["parity"] = verify_export(staging, model, pixel_values, tolerance, min_agreement)
        except ExportParityError as error:
            report["parity"] = error.report
            report["passed"] = False
            _write_json(staging / REPORT_FILE, report)
            rejected = output_dir.with_name(output_dir.name + ".rejected")
            shutil.rmtree(rejected, ignore_errors=True)
            staging.rename(rejected)
            raise ExportParityError(f"{error} (files and report kept in {rejected})", report) from None
        report["passed"] = True
        _write_json(staging / REPORT_FILE, report)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)  # atomic publish on one filesystem
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(output_dir=output_dir, files={k: output_dir / v.name for k, v in files.items()}, report=report)


def opset_error(opset: int) -> str:
    return (f"--opset {opset}: torch.onnx's dynamo exporter writes opset {MIN_OPSET} or later (older opsets go through a "
            f"best-effort converter that fails on these graphs and keeps {MIN_OPSET}); pass --opset {MIN_OPSET} or higher")


def batch_dependence_note(model: torch.nn.Module, dependence: float | None) -> str:
    """Why a model's logits depend on its batch, and how to make them not (ARM: :meth:`calibrate_affinity`)."""
    note = (f"an image's logits depend on the other images in its batch (max |logit diff| {dependence:.3g} between the "
            "first parity images run alone and in a batch); the exported model keeps that behaviour")
    if getattr(model.config, "affinity_mode", None) == "batch":
        note += ("; ARM affinity_mode='batch' (converted upstream checkpoints): call model.calibrate_affinity(batches) "
                 "on representative faces and save it before exporting for batch-independent logits")
    return note


def copy_remote_code(folder: Path, *objects) -> list[str]:
    """Copy the code files named by the ``auto_map`` of ``folder``'s ``config.json``/``preprocessor_config.json``
    (self-contained remote code, found beside the classes of ``objects``), so the folder loads with
    ``AutoConfig``/``AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)`` without hf_fer.
    Entries whose file cannot be found are dropped with a warning, never left dangling. Returns the files copied."""
    from transformers.dynamic_module_utils import get_relative_import_files

    directories = []
    for obj in objects:
        module = sys.modules.get(type(obj).__module__)
        if getattr(module, "__file__", None) and Path(module.__file__).parent not in directories:
            directories.append(Path(module.__file__).parent)
    copied: list[str] = []

    def copy_module(module_name: str) -> bool:
        source = next((d / f"{module_name}.py" for d in directories if (d / f"{module_name}.py").is_file()), None)
        if source is None:
            return False
        for path in (source, *map(Path, get_relative_import_files(str(source)))):
            if path.name not in copied:
                shutil.copyfile(path, folder / path.name)
                copied.append(path.name)
        return True

    for name in ("config.json", "preprocessor_config.json"):
        path = folder / name
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        auto_map = data.get("auto_map") or {}
        kept = {}
        for auto_class, reference in auto_map.items():
            references = [r for r in (reference if isinstance(reference, (list, tuple)) else [reference]) if r]
            # "repo--module.Class" points at code in another Hub repository: it stays as it is
            if all("--" in r or copy_module(r.rsplit(".", 1)[0]) for r in references):
                kept[auto_class] = reference
            else:
                warnings.warn(f"{path}: auto_map[{auto_class!r}] = {reference!r} names code that was not found beside "
                              f"the model's classes ({', '.join(map(str, directories))}); entry dropped", stacklevel=3)
        if kept != auto_map:
            if kept:
                data["auto_map"] = kept
            else:
                data.pop("auto_map")
            _write_json(path, data)
    return sorted(copied)


PREPROCESSING_KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                      "do_normalize", "image_mean", "image_std")


def _complete_preprocessor_config(path: Path, image_processor) -> None:
    """Write every preprocessing setting explicitly (class defaults are otherwise left out), so readers without
    the processor class (:class:`hf_fer.onnx.OnnxClassifier`) see the whole recipe."""
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in PREPROCESSING_KEYS:
        if config.get(key) is None and getattr(image_processor, key, None) is not None:
            value = getattr(image_processor, key)
            if key in ("size", "crop_size"):
                value = {k: v for k, v in dict(value).items() if v is not None} if not hasattr(value, "__dataclass_fields__") else {
                    k: getattr(value, k) for k in value.__dataclass_fields__ if getattr(value, k) is not None}
            elif key == "resample":
                value = int(getattr(value, "value", value))
            elif key in ("image_mean", "image_std"):
                value = [float(v) for v in value]
            config[key] = value
    _write_json(path, config)


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


# ------------------------------------------------------------------------------------------------ CLI


def build_parser(prog: str = "hf-fer export") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import export_parser

    return export_parser(prog)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format == "onnx" and args.opset < MIN_OPSET:
        parser.error(opset_error(args.opset))
    try:
        with warnings.catch_warnings():  # the batch-dependence warning is printed once, as the `note:` line below
            warnings.filterwarnings("ignore", message=".*logits depend on")
            result = export_model(args.model, args.output, format=args.format, quantize=args.quantize,
                              calibration_dataset=args.calibration_dataset, parity_dataset=args.parity_dataset,
                                  num_parity_images=args.num_parity_images, num_calibration_images=args.num_calibration_images,
                                  opset=args.opset, overwrite=args.overwrite, min_agreement=args.min_agreement,
                                  int8_op_types=None if args.int8_ops == ["all"] else args.int8_ops,
                                  calibration_method=args.calibration_method, optimize=args.optimize)
    except ExportParityError as error:
        print(f"hf-fer export: {error}")
        return 1
    parity = result.report["parity"]
    for key, entry in parity.items():
        print(f"{key:>12}: {entry['file']}  max |logit diff| {entry['max_abs_logit_diff']:.2e}  top-1 agreement "
              f"{entry['top1_agreement']:.2%} on {entry['num_images']} images")
    optimization = result.report.get("graph_optimization")
    if optimization:
        fused = ", ".join(f"{op} x{count}" for op, count in optimization["fused_operators"].items()) or "nothing matched"
        print(f"ONNX Runtime transformer fusions ({optimization['model_type']}): {fused}")
    if result.report["batch_dependence"]["batch_dependent"]:
        print(f"note: {result.report['batch_dependence']['note']}")
    attention = result.report.get("attention_implementation")
    print(f"wrote {result.output_dir} ({', '.join(sorted(p.name for p in result.output_dir.iterdir()))})"
          + (f"; attention exported as {attention!r}" if attention else ""))
    return 0

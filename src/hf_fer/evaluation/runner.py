"""``hf-fer evaluate`` / ``scripts/evaluate.py``: run a model over a dataset split and write the results.

Outputs (in ``--output-dir``): ``eval_results.json`` (every metric with its bootstrap 95 % interval, ECE,
per-class numbers, confusion matrix, the label mapping used, the images that could not be read, and the
provenance of the number: protocol, TTA, split hash, alignment, checkpoint hash, package versions),
``confusion_matrix.png``, ``per_class_accuracy.png`` and ``reliability_diagram.png``. ``hf-fer push`` turns
``eval_results.json`` into the model card's ``model-index`` and ``.eval_results/`` files, so the numbers on the
Hub are exactly the numbers measured here.

Protocols (:mod:`hf_fer.evaluation.protocols`): ``hf_fer`` (default) is batch-independent; ``paper`` reproduces
the upstream evaluation (ARM: batches of 64). ``--tta flip`` adds a separate flip-averaged row; the headline
metrics are always single-view.

Cross-dataset evaluation: labels are matched *by class name* through :mod:`hf_fer.labels`. The model's
logits are re-ordered into the dataset's label space; model classes the dataset lacks are left out of
the argmax, dataset classes the model lacks can never be predicted, and test samples of such classes
are dropped (or kept and counted as errors with ``keep_unmapped``). All of it is reported.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import inspect
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..image_io import ImageDecodeError, load_image, max_size_for
from .calibration import ECE_BINS, expected_calibration_error, fit_temperature, reliability_bins, store_temperature, temperature_of
from .inference import load_model_for_inference
from .metrics import SUMMARY_METRICS, bootstrap_confidence_intervals, compute_metrics
from .plots import plot_attention_weights, plot_confusion_matrix, plot_per_class_accuracy, plot_reliability_diagram
from .protocols import PROTOCOLS, TTA_MODES, plan_protocol
from .provenance import SplitHasher, alignment_description, checkpoint_hashes, package_versions

__all__ = ["EvaluationResult", "evaluate_model", "fit_temperature_on_split", "build_parser", "main", "LABEL_MAP_MODES", "RESULTS_FILENAME"]

RESULTS_FILENAME = "eval_results.json"
CONFUSION_MATRIX_FILENAME = "confusion_matrix.png"
PER_CLASS_FILENAME = "per_class_accuracy.png"
RELIABILITY_FILENAME = "reliability_diagram.png"
ATTENTION_FILENAME = "attention_weights"  # .png and .json: mean attention vector per true class (DACL)
LABEL_MAP_MODES = ("auto", "strict", "none")


@dataclass
class EvaluationResult:
    """What :func:`evaluate_model` measured; ``to_dict()`` is the content of ``eval_results.json``."""

    metrics: dict
    label_mapping: dict
    skipped_images: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    uncertainty: dict = field(default_factory=dict)  # confidence_intervals, ece, reliability bins
    tta: dict | None = None  # the separate test-time-augmentation row: {"mode", "metrics", "confidence_intervals", "ece"}
    # per-image arrays (not written to JSON): dataset-space references and softmax scores, in evaluation order
    references: object = None
    probabilities: object = None
    logits: object = None

    @property
    def predictions(self):
        return None if self.probabilities is None else self.probabilities.argmax(axis=1)

    def to_dict(self) -> dict:
        summary = {key: self.metrics[key] for key in SUMMARY_METRICS}
        return {
            **self.info,
            "metrics": summary,
            **self.uncertainty,
            "tta_results": self.tta,
            "num_samples": self.metrics["num_samples"],
            "label_names": self.metrics["label_names"],
            "per_class": self.metrics["per_class"],
            "confusion_matrix": self.metrics["confusion_matrix"],
            "confusion_matrix_normalized": self.metrics["confusion_matrix_normalized"],
            "label_mapping": self.label_mapping,
            "num_skipped_images": len(self.skipped_images),
            "skipped_images": self.skipped_images,
            "files": self.files,
        }


def _matching_benchmarks(names: Sequence[str]) -> list[str]:
    from ..labels import BENCHMARKS, canonical_name

    try:
        canonical = tuple(canonical_name(name) for name in names)
    except KeyError:
        return []
    return [key for key, order in BENCHMARKS.items() if order == canonical]


def _load_split(dataset, split: str, model_label_names: list[str], synthetic_options: dict | None = None):
    """A ``datasets.Dataset`` for ``split`` from a Dataset, DatasetDict, folder, Hub id or ``"synthetic"``."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"split {split!r} not in the dataset; available splits: {list(dataset)}")
        return dataset[split]
    if isinstance(dataset, datasets.Dataset):
        return dataset
    from ..data.loading import load_fer_dataset

    source = str(dataset)
    # Synthetic faces are rendered in the model's own label space; real data keeps its own labels (mapped below).
    id2label = dict(enumerate(model_label_names)) if source == "synthetic" else None
    options = synthetic_options if source == "synthetic" else None
    try:
        return load_fer_dataset(source, id2label=id2label, label_map="auto", split=split, synthetic_options=options)
    except Exception as error:
        if source == "synthetic" and id2label is not None:  # model classes are not expression names
            return load_fer_dataset(source, split=split, synthetic_options=options)
        raise error


def _benchmark_of_source(dataset) -> str | None:
    """``synthetic``, or the benchmark named in the ``validation_report.json`` prepare-dataset wrote."""
    if not isinstance(dataset, (str, os.PathLike)):
        return None
    if str(dataset) == "synthetic":
        return "synthetic"
    report = Path(dataset).expanduser() / "validation_report.json"
    try:
        return json.loads(report.read_text()).get("benchmark")
    except (OSError, ValueError, AttributeError):
        return None


def _is_hub_dataset_id(source: str) -> bool:
    import re

    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", source)) and not source.startswith((".", "/", "~")) and not Path(source).expanduser().exists()


def _label_column(dataset) -> str:
    for name in ("label", "labels"):
        if name in dataset.column_names:
            return name
    raise ValueError(f"the dataset has no 'label' column; columns are {dataset.column_names}")


def _image_column(dataset) -> str:
    for name in ("image", "img", "pixel_values"):
        if name in dataset.column_names:
            return name
    raise ValueError(f"the dataset has no 'image' column; columns are {dataset.column_names}")


def _build_label_mapping(model_names: list[str], dataset_names: list[str], mode: str) -> tuple[object | None, dict]:
    """Returns (LabelMapping or None for identity, description dict for the results file)."""
    from ..labels import label_mapping

    report = {"mode": mode, "model_label_names": model_names, "dataset_label_names": dataset_names}
    if mode == "none":
        if len(model_names) != len(dataset_names):
            raise ValueError(
                f"--label-map none: the model has {len(model_names)} classes but the dataset has {len(dataset_names)}; "
                "use --label-map auto to match classes by name"
            )
        report.update(identity=True, description="indices used as-is (no name check)", model_classes_not_in_dataset=[], dataset_classes_not_in_model=[])
        return None, report
    try:
        mapping = label_mapping(model_names, dataset_names)
    except (KeyError, ValueError) as error:
        if [n.lower() for n in model_names] == [n.lower() for n in dataset_names]:
            report.update(identity=True, description="label names identical", model_classes_not_in_dataset=[], dataset_classes_not_in_model=[])
            return None, report
        raise ValueError(
            f"cannot match the model's classes {model_names} with the dataset's {dataset_names} by name ({error}); "
            "use --label-map none if the indices already agree"
        ) from None
    if mode == "strict" and not mapping.is_identity:
        raise ValueError(
            f"--label-map strict: the model's classes {list(mapping.source_names)} differ from the dataset's "
            f"{list(mapping.target_names)}; use --label-map auto for cross-dataset evaluation"
        )
    report.update(
        identity=mapping.is_identity,
        description=mapping.describe(),
        model_classes_not_in_dataset=mapping.missing_in_target,
        dataset_classes_not_in_model=mapping.missing_in_source,
    )
    return (None if mapping.is_identity else mapping), report


def _git_commit() -> str | None:
    """Commit of the hf_fer checkout this runs from (for provenance in cards), if it is a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _forward(loaded, images: list, plan, mapping, attention_plot: bool = False):
    """Dataset-space logits of ``images`` (and of their mirror images with ``tta="flip"``), batched as ``plan`` says,
    plus the single-view attention weights when ``attention_plot`` (DACL)."""
    pixel_values = loaded.image_processor(images=images, return_tensors="pt")["pixel_values"]
    chunk = plan.forward_batch_size or len(images)
    views = [pixel_values] + ([torch.flip(pixel_values, dims=[-1])] if plan.tta == "flip" else [])
    extra = {"output_attention_weights": True} if attention_plot else {}
    outputs, attention = [], []
    for number, view in enumerate(views):
        parts = []
        for i in range(0, len(view), chunk):
            result = loaded.model(pixel_values=view[i:i + chunk].to(loaded.device), **(extra if number == 0 else {}))
            parts.append(result.logits.float().cpu())
            if attention_plot and number == 0:
                attention.append(result.attention_weights.double().cpu())
        logits = torch.cat(parts)
        outputs.append(mapping.map_logits(logits) if mapping is not None else logits)
    return outputs[0], (outputs[1] if len(outputs) > 1 else None), (torch.cat(attention) if attention else None)


def _uncertainty(references, probabilities, num_classes: int, bootstrap: int, seed: int, ece_bins: int) -> dict:
    """Bootstrap intervals of the summary metrics, ECE and reliability bins of one set of scores."""
    predictions = probabilities.argmax(axis=1)
    out = {"ece": expected_calibration_error(probabilities, references, ece_bins), "ece_bins": ece_bins,
           "reliability": reliability_bins(probabilities, references, ece_bins)}
    if bootstrap:
        out["confidence_intervals"] = bootstrap_confidence_intervals(references, predictions, num_classes, num_resamples=bootstrap, seed=seed)
    return out


def evaluate_model(
    model: str | os.PathLike,
    dataset,
    split: str = "test",
    *,
    label_map: str = "auto",
    keep_unmapped: bool = False,
    batch_size: int = 64,
    device: str | None = "auto",
    output_dir: str | os.PathLike | None = None,
    dataset_name: str | None = None,
    benchmark: str | None = None,
    trust_remote_code: bool = False,
    max_samples: int | None = None,
    progress: bool = True,
    plots: bool = True,
    protocol: str = "hf_fer",
    tta: str = "none",
    bootstrap: int = 1000,
    seed: int = 0,
    ece_bins: int = ECE_BINS,
    synthetic: dict | None = None,
    alignment: str | None = None,
    attention_plot: bool = False,
) -> EvaluationResult:
    """Evaluate ``model`` on ``dataset[split]``; write ``eval_results.json`` and PNGs to ``output_dir``.

    Args:
        model: a model folder or Hub id (loaded with the image processor saved next to it).
        dataset: a ``datasets.Dataset``/``DatasetDict``, a saved-dataset or imagefolder directory, a Hub
            dataset id, or ``"synthetic"``. The label column must be a ``ClassLabel`` (its names matter).
        label_map: ``"auto"`` matches classes by name (cross-dataset evaluation), ``"strict"`` requires
            identical label spaces, ``"none"`` trusts indices.
        keep_unmapped: keep samples of classes the model does not have (always wrong) instead of dropping them.
        dataset_name: the name shown in results and cards (default: the dataset folder's name).
        benchmark: the benchmark the data is (``raf-db``...), used as the card's dataset type; read from
            prepare-dataset's ``validation_report.json`` when not given.
        max_samples: evaluate only the first N samples (smoke tests).
        protocol: ``"hf_fer"`` (batch-independent) or ``"paper"`` (the upstream evaluation, e.g. ARM's batches of 64);
            see :mod:`hf_fer.evaluation.protocols`.
        tta: ``"none"`` or ``"flip"`` (mean of the softmax of the image and its mirror image, reported as a separate row).
        bootstrap: resamples for the 95 % confidence intervals (0: none); ``seed`` seeds them.
        synthetic: overrides (``image_size``, ``difficulty``, ``num_images``, ``seed``) of the synthetic faces rendered for
            ``dataset="synthetic"``; by default they are the model's training faces (its ``training_info.json``).
        alignment: how the dataset's faces were cropped/aligned, recorded in the results (default: as stored).
        attention_plot: models that return per-image ``attention_weights`` (DACL): write the mean vector per true
            class to ``attention_weights.json`` and ``attention_weights.png``.
    """
    if label_map not in LABEL_MAP_MODES:
        raise ValueError(f"--label-map must be one of {LABEL_MAP_MODES}, got {label_map!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    import datasets as hf_datasets

    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if tta not in TTA_MODES:
        raise ValueError(f"--tta must be one of {TTA_MODES}, got {tta!r}")
    loaded = load_model_for_inference(model, device=device, trust_remote_code=trust_remote_code)
    if attention_plot and "output_attention_weights" not in inspect.signature(loaded.model.forward).parameters:
        raise ValueError(f"--attention-plot: {type(loaded.model).__name__} returns no attention weights (DACL models do)")
    attention_sums: dict[int, torch.Tensor] = {}
    attention_counts: dict[int, int] = {}
    model_names = loaded.label_names
    plan = plan_protocol(protocol, loaded.model, batch_size, tta)
    if plan.name != "hf_fer" or plan.forward_batch_size == 1:  # a decision the scores depend on: one visible line
        print(f"hf-fer evaluate: protocol {plan.name}: " + "; ".join(plan.notes), file=sys.stderr)
    if plan.name == "paper" and plan.forward_batch_size:
        batch_size = plan.forward_batch_size  # upstream's consecutive batches, one forward call each
    synthetic_record = None
    synthetic_options = None
    if isinstance(dataset, (str, os.PathLike)) and str(dataset) == "synthetic":
        from .synthetic import synthetic_render_options

        overrides = {k: v for k, v in (synthetic or {}).items() if k != "_source"}
        synthetic_options, synthetic_record = synthetic_render_options(str(model), split, overrides,
                                                                       (synthetic or {}).get("_source", "command line"))
        print(f"synthetic faces: rendering {synthetic_record['num_images']} {synthetic_record['image_size']}-px "
              f"{synthetic_record['difficulty']!r} faces (seed {synthetic_record['render_seed']}, split {split}) - "
              f"settings from {synthetic_record['training_record'] or 'defaults'}"
              + "".join(sorted({", overridden on the command line" if v == "command line" else f", set by the {v}"
                                for v in synthetic_record["sources"].values()
                                if v not in ("default", synthetic_record["training_record"]) and "preprocessor" not in v})), file=sys.stderr)
    data = _load_split(dataset, split, model_names, synthetic_options)
    label_column, image_column = _label_column(data), _image_column(data)
    label_feature = data.features[label_column]
    if not isinstance(label_feature, hf_datasets.ClassLabel):
        raise TypeError(f"column {label_column!r} is {label_feature}, not a ClassLabel: its class names are needed to match the model's")
    dataset_names = [str(name) for name in label_feature.names]
    mapping, mapping_report = _build_label_mapping(model_names, dataset_names, label_map)
    if max_samples is not None:
        data = data.select(range(min(max_samples, len(data))))
    if isinstance(data.features[image_column], hf_datasets.Image):
        data = data.cast_column(image_column, hf_datasets.Image(decode=False))  # decode ourselves: skip bad files

    dataset_classes_unpredictable = set()
    if mapping is not None:
        dataset_classes_unpredictable = {index for index, source in enumerate(mapping.target_to_source) if source < 0}

    # Images are shrunk while decoding to what the processor needs: a batch of huge photos stays small.
    decode_max_size = max_size_for(loaded.image_processor)
    references: list[int] = []
    logits_parts: list[torch.Tensor] = []
    flipped_parts: list[torch.Tensor] = []
    hasher = SplitHasher()
    skipped: list[dict] = []
    dropped_unmapped = 0
    start_time = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(data), desc="evaluating", unit="img", disable=not progress)
    config = loaded.model.config
    original_affinity = getattr(config, "affinity_mode", None)
    if plan.affinity_mode is not None:
        config.affinity_mode = plan.affinity_mode
    with torch.inference_mode():
        for first in range(0, len(data), batch_size):
            rows = data[first:first + batch_size]
            images, labels = [], []
            for offset, (entry, label) in enumerate(zip(rows[image_column], rows[label_column])):
                index = first + offset
                hasher.update(entry, label)
                if label in dataset_classes_unpredictable and not keep_unmapped:
                    dropped_unmapped += 1
                    continue
                where = entry.get("path") if isinstance(entry, dict) else None
                # An empty cell or an entry of another type is bad data like undecodable bytes: skip and list it.
                if entry is None:
                    skipped.append({"index": index, "path": None, "error": f"no image (column {image_column!r} is empty)"})
                    continue
                try:
                    image = load_image(entry, max_size=decode_max_size, name=f"{where or 'image'} (row {index})")
                except ImageDecodeError as error:
                    skipped.append({"index": index, "path": where, "error": error.reason})
                    continue
                except TypeError as error:
                    skipped.append({"index": index, "path": where, "error": f"not an image entry: {error}"})
                    continue
                images.append(image)
                labels.append(int(label))
            if images:
                logits, flipped, attention = _forward(loaded, images, plan, mapping, attention_plot)
                logits_parts.append(logits)
                if flipped is not None:
                    flipped_parts.append(flipped)
                if attention is not None:
                    for weights, label in zip(attention, labels):
                        attention_sums[label] = attention_sums.get(label, 0) + weights
                        attention_counts[label] = attention_counts.get(label, 0) + 1
                references.extend(labels)
            bar.update(len(rows[label_column]))
    bar.close()
    if plan.affinity_mode is not None:
        config.affinity_mode = original_affinity
    elapsed = time.perf_counter() - start_time
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s) (listed in {RESULTS_FILENAME}):", file=sys.stderr)
        for item in skipped[:20]:
            print(f"  row {item['index']} {item['path'] or ''}: {item['error']}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more", file=sys.stderr)
    if not references:
        raise ValueError(f"no image of split {split!r} could be evaluated ({len(skipped)} unreadable, {dropped_unmapped} of unmapped classes)")

    import numpy as np

    all_logits = torch.cat(logits_parts)
    probabilities = torch.softmax(all_logits, dim=-1).double().numpy()
    reference_array = np.asarray(references, dtype=np.int64)
    predictions = probabilities.argmax(axis=1)
    metrics = compute_metrics(reference_array, predictions, label_names=dataset_names)
    uncertainty = _uncertainty(reference_array, probabilities, len(dataset_names), bootstrap, seed, ece_bins)
    temperature = temperature_of(loaded.model.config)
    if temperature != 1.0:  # calibrated confidences, reported next to the raw ones (the argmax is the same)
        scaled = torch.softmax(all_logits / temperature, dim=-1).double().numpy()
        uncertainty["temperature_scaled"] = {"temperature": temperature, "ece": expected_calibration_error(scaled, reference_array, ece_bins)}
    tta_row = None
    if plan.tta == "flip":
        flip_probabilities = 0.5 * (probabilities + torch.softmax(torch.cat(flipped_parts), dim=-1).double().numpy())
        flip_metrics = compute_metrics(reference_array, flip_probabilities.argmax(axis=1), label_names=dataset_names)
        tta_row = {"mode": "flip", "description": "mean of the softmax of each image and its horizontal mirror",
                   "metrics": {key: flip_metrics[key] for key in SUMMARY_METRICS}, "per_class": flip_metrics["per_class"],
                   **{k: v for k, v in _uncertainty(reference_array, flip_probabilities, len(dataset_names), bootstrap, seed, ece_bins).items()
                      if k != "reliability"}}
    mapping_report["unmapped_samples_dropped"] = dropped_unmapped
    mapping_report["unmapped_samples_kept"] = keep_unmapped
    if not mapping_report["identity"]:
        print(f"label mapping: {mapping_report['description']}", file=sys.stderr)
    if dropped_unmapped:
        print(f"dropped {dropped_unmapped} sample(s) of classes the model cannot predict: {mapping_report['dataset_classes_not_in_model']}", file=sys.stderr)

    import transformers

    from .. import __version__

    label_spaces = _matching_benchmarks(dataset_names)
    source_text = str(dataset) if isinstance(dataset, (str, os.PathLike)) else (getattr(data, "info", None) and data.info.dataset_name) or "dataset"
    info = {
        "model": str(model),
        "model_type": getattr(loaded.model.config, "model_type", None),
        "dataset": source_text,
        # a Hub dataset id (what the card's `datasets` and `.eval_results` link to); None for local folders
        "dataset_hub_id": source_text if isinstance(dataset, str) and _is_hub_dataset_id(source_text) else None,
        "dataset_name": dataset_name or (Path(source_text).name if source_text not in ("synthetic",) else "synthetic"),
        # The benchmark is only named when it is known (prepare-dataset's report, or the caller); a label order
        # alone does not make data a benchmark (synthetic faces use RAF-DB's order).
        "benchmark": benchmark or _benchmark_of_source(dataset),
        "label_space": label_spaces[0] if len(label_spaces) == 1 else None,
        "split": split,
        "batch_size": batch_size,
        "device": str(loaded.device),
        "runtime_seconds": round(elapsed, 3),
        "images_per_second": round(len(references) / elapsed, 2) if elapsed > 0 else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hf_fer_version": __version__,
        "hf_fer_commit": _git_commit(),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "protocol": plan.record(batch_size),
        "tta": plan.tta,
        "dataset_fingerprint": {
            "split_sha256": hasher.hexdigest(), "rows_hashed": hasher.count,
            "datasets_fingerprint": getattr(data, "_fingerprint", None),
            "max_samples": max_samples,
        },
        "synthetic": synthetic_record,
        "alignment": alignment_description(loaded.image_processor, alignment),
        "checkpoint": checkpoint_hashes(loaded.source, loaded.model),
        "package_versions": package_versions(),
    }
    training_test = None
    if synthetic_record is not None:
        from .synthetic import training_test_metrics

        training_test = training_test_metrics(str(model))
        from_training = all(v in ("default", synthetic_record["training_record"]) for v in synthetic_record["sources"].values())
        if training_test and synthetic_record["split"] == "test" and from_training:
            info["training_time_test_accuracy"] = training_test.get("accuracy")
    result = EvaluationResult(metrics=metrics, label_mapping=mapping_report, skipped_images=skipped, info=info,
                              uncertainty=uncertainty, tta=tta_row, references=reference_array, probabilities=probabilities,
                              logits=all_logits.numpy())
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        if plots:
            title = f"{info['model_type'] or 'model'} on {info['dataset_name']} ({split})"
            plot_confusion_matrix(metrics["confusion_matrix"], dataset_names, output / CONFUSION_MATRIX_FILENAME, title=title)
            plot_per_class_accuracy(metrics["per_class"], output / PER_CLASS_FILENAME, title=f"Per-class accuracy: {title}",
                                    mean_class_accuracy=metrics["mean_class_accuracy"])
            plot_reliability_diagram(uncertainty["reliability"], output / RELIABILITY_FILENAME, title=f"Calibration: {title}", ece=uncertainty["ece"])
            result.files = {"confusion_matrix": CONFUSION_MATRIX_FILENAME, "per_class_accuracy": PER_CLASS_FILENAME,
                            "reliability_diagram": RELIABILITY_FILENAME}
        if attention_plot:
            result.files.update(_write_attention_weights(attention_sums, attention_counts, dataset_names, output,
                                                         f"Mean attention weights per true class: {info['model_type']} on "
                                                         f"{info['dataset_name']} ({split})"))
        (output / RESULTS_FILENAME).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def fit_temperature_on_split(model: str | os.PathLike, dataset, split: str = "validation", *, store: bool = True, **evaluate_kwargs) -> dict:
    """Fit temperature scaling on ``dataset[split]`` (a validation split, never the test split) and store it in ``model``'s config.

    Returns the record written under ``config.json["temperature_scaling"]``: ``temperature``, NLL and ECE before/after,
    ``fitted_on``. Pipelines apply it only when asked (:func:`hf_fer.evaluation.calibration.apply_temperature`).
    """
    if split == "test":
        raise ValueError("temperature scaling must be fitted on a validation split, not on the test split it would then be judged on")
    evaluate_kwargs = {**evaluate_kwargs, "bootstrap": 0, "tta": "none", "output_dir": None}
    result = evaluate_model(model, dataset, split, **evaluate_kwargs)
    record = fit_temperature(result.logits, result.references)
    record.update(fitted_on={"dataset": result.info["dataset_name"], "split": split, "split_sha256": result.info["dataset_fingerprint"]["split_sha256"]},
                  protocol=result.info["protocol"]["name"], date=result.info["date"])
    if store:
        store_temperature(model, record)
    return record


def _interval(intervals: dict | None, key: str) -> str:
    if not intervals or key not in intervals:
        return ""
    return f"  [{intervals[key]['low'] * 100:6.2f}, {intervals[key]['high'] * 100:6.2f}]"


def _write_attention_weights(sums: dict, counts: dict, names: list[str], output: Path, title: str) -> dict:
    """attention_weights.json (mean vector and image count per true class; null for absent classes) and its PNG."""
    dim = next(iter(sums.values())).shape[0] if sums else 0
    means = [(sums[i] / counts[i]).tolist() if i in counts else None for i in range(len(names))]
    payload = {"label_names": names, "counts": [counts.get(i, 0) for i in range(len(names))], "mean_attention_weights": means}
    (output / f"{ATTENTION_FILENAME}.json").write_text(json.dumps(payload) + "\n")
    rows = [m if m is not None else [float("nan")] * dim for m in means]
    plot_attention_weights(rows, names, output / f"{ATTENTION_FILENAME}.png", title=title, counts=payload["counts"])
    return {"attention_weights": f"{ATTENTION_FILENAME}.png", "attention_weights_data": f"{ATTENTION_FILENAME}.json"}


def _format_summary(result: EvaluationResult) -> str:
    metrics, info = result.metrics, result.info
    intervals = result.uncertainty.get("confidence_intervals")
    protocol = info.get("protocol") or {}
    lines = [
        f"{info['model']} on {info['dataset_name']} [{info['split']}]: {metrics['num_samples']} images, "
        f"{info['images_per_second']} img/s on {info['device']}",
        f"  protocol {protocol.get('name')}: {protocol.get('forward_batch_size')} image(s) per forward call"
        + ("" if protocol.get("batch_independent", True) else " (scores depend on the batch, as upstream)"),
    ]
    lines += [f"    {note}" for note in protocol.get("notes", [])]
    if info.get("synthetic"):
        rendered = info["synthetic"]
        lines.append(f"  synthetic faces: {rendered['num_images']} x {rendered['image_size']} px, difficulty {rendered['difficulty']!r}, "
                     f"seed {rendered['render_seed']} (from {rendered['training_record'] or 'defaults'})")
    header = "single view" + (f", 95 % CI ({intervals['num_resamples']} bootstrap resamples, seed {intervals['seed']})" if intervals else "")
    lines += [
        f"  {header}",
        f"  accuracy            {metrics['accuracy'] * 100:6.2f} %{_interval(intervals, 'accuracy')}",
        f"  mean class accuracy {metrics['mean_class_accuracy'] * 100:6.2f} %{_interval(intervals, 'mean_class_accuracy')}",
        f"  macro-F1            {metrics['macro_f1'] * 100:6.2f} %{_interval(intervals, 'macro_f1')}",
        f"  ECE ({result.uncertainty.get('ece_bins')} bins)       {result.uncertainty.get('ece', float('nan')) * 100:6.2f} %",
    ]
    scaled = result.uncertainty.get("temperature_scaled")
    if scaled:
        lines.append(f"  ECE with the stored temperature T={scaled['temperature']:.3f}: {scaled['ece'] * 100:.2f} % (accuracy unchanged)")
    if info.get("training_time_test_accuracy") is not None:
        lines.append(f"  training-time test accuracy {info['training_time_test_accuracy'] * 100:.2f} % (training_results.json)")
    if result.tta:
        tta_intervals = result.tta.get("confidence_intervals")
        lines += [f"  {result.tta['mode']} TTA (separate row: {result.tta['description']})"]
        lines += [f"  {name:<19} {result.tta['metrics'][key] * 100:6.2f} %{_interval(tta_intervals, key)}"
                  for key, name in (("accuracy", "accuracy"), ("mean_class_accuracy", "mean class accuracy"), ("macro_f1", "macro-F1"))]
    lines.append(f"  {'class':<12} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}")
    for name, row in metrics["per_class"].items():
        lines.append(f"  {name:<12} {row['precision'] * 100:8.1f}% {row['recall'] * 100:6.1f}% {row['f1'] * 100:5.1f}% {row['support']:>8}")
    return "\n".join(lines)


def build_parser(prog: str = "hf-fer evaluate") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import evaluate_parser

    return evaluate_parser(prog)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output_dir = args.output_dir
    if output_dir is None:
        output_dir = args.model if Path(args.model).is_dir() else "eval_results"
    synthetic = {"image_size": args.synthetic_size, "difficulty": args.synthetic_difficulty, "num_images": args.synthetic_num_images,
                 "seed": args.synthetic_seed}
    common = dict(label_map=args.label_map, keep_unmapped=args.keep_unmapped, batch_size=args.batch_size, device=args.device,
                  dataset_name=args.dataset_name, benchmark=args.benchmark, trust_remote_code=args.trust_remote_code,
                  progress=not args.no_progress, protocol=args.protocol, synthetic=synthetic, alignment=args.alignment)
    if args.fit_temperature:
        record = fit_temperature_on_split(args.model, args.dataset, args.calibration_split, **common)
        print(f"temperature scaling: T = {record['temperature']:.4f} fitted on {args.calibration_split} "
              f"(NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f}, ECE {record['ece_before'] * 100:.2f} % -> "
              f"{record['ece_after'] * 100:.2f} %); stored in {Path(args.model) / 'config.json'} (applied only when asked)")
    result = evaluate_model(
        args.model, args.dataset, args.split, output_dir=output_dir, max_samples=args.max_samples, plots=not args.no_plots,
        tta=args.tta, bootstrap=args.bootstrap, seed=args.seed, ece_bins=args.ece_bins, attention_plot=args.attention_plot, **common,
    )
    print(_format_summary(result))
    print(f"wrote {Path(output_dir) / RESULTS_FILENAME}")
    return 0

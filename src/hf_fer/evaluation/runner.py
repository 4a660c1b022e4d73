"""``hf-fer evaluate`` / ``scripts/evaluate.py``: run a model over a dataset split and write the results.

Outputs (in ``--output-dir``): ``eval_results.json`` (every metric, per-class numbers, confusion matrix,
the label mapping used and the images that could not be read), ``confusion_matrix.png`` and
``per_class_accuracy.png``. ``hf-fer push`` turns ``eval_results.json`` into the model card's
``model-index``, so the numbers on the Hub are exactly the numbers measured here.

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

from .inference import ImageLoadError, load_model_for_inference, open_rgb_image
from .metrics import SUMMARY_METRICS, compute_metrics
from .plots import plot_attention_weights, plot_confusion_matrix, plot_per_class_accuracy

__all__ = ["EvaluationResult", "evaluate_model", "build_parser", "main", "LABEL_MAP_MODES", "RESULTS_FILENAME"]

RESULTS_FILENAME = "eval_results.json"
CONFUSION_MATRIX_FILENAME = "confusion_matrix.png"
PER_CLASS_FILENAME = "per_class_accuracy.png"
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

    def to_dict(self) -> dict:
        summary = {key: self.metrics[key] for key in SUMMARY_METRICS}
        return {
            **self.info,
            "metrics": summary,
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


def _load_split(dataset, split: str, model_label_names: list[str]):
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
    try:
        return load_fer_dataset(source, id2label=id2label, label_map="auto", split=split)
    except Exception as error:
        if source == "synthetic" and id2label is not None:  # model classes are not expression names
            return load_fer_dataset(source, split=split)
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
        attention_plot: models that return per-image ``attention_weights`` (DACL): write the mean vector per true
            class to ``attention_weights.json`` and ``attention_weights.png``.
    """
    if label_map not in LABEL_MAP_MODES:
        raise ValueError(f"--label-map must be one of {LABEL_MAP_MODES}, got {label_map!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    import datasets as hf_datasets

    loaded = load_model_for_inference(model, device=device, trust_remote_code=trust_remote_code)
    if attention_plot and "output_attention_weights" not in inspect.signature(loaded.model.forward).parameters:
        raise ValueError(f"--attention-plot: {type(loaded.model).__name__} returns no attention weights (DACL models do)")
    attention_sums: dict[int, torch.Tensor] = {}
    attention_counts: dict[int, int] = {}
    model_names = loaded.label_names
    data = _load_split(dataset, split, model_names)
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

    references: list[int] = []
    predictions: list[int] = []
    skipped: list[dict] = []
    dropped_unmapped = 0
    start_time = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(data), desc="evaluating", unit="img", disable=not progress)
    with torch.inference_mode():
        for first in range(0, len(data), batch_size):
            rows = data[first:first + batch_size]
            images, labels = [], []
            for offset, (entry, label) in enumerate(zip(rows[image_column], rows[label_column])):
                index = first + offset
                if label in dataset_classes_unpredictable and not keep_unmapped:
                    dropped_unmapped += 1
                    continue
                try:
                    image = entry.convert("RGB") if hasattr(entry, "convert") else open_rgb_image(entry)
                except ImageLoadError as error:
                    where = entry.get("path") if isinstance(entry, dict) else None
                    skipped.append({"index": index, "path": where, "error": str(error)})
                    continue
                images.append(image)
                labels.append(int(label))
            if images:
                pixel_values = loaded.image_processor(images=images, return_tensors="pt")["pixel_values"]
                extra = {"output_attention_weights": True} if attention_plot else {}
                outputs = loaded.model(pixel_values=pixel_values.to(loaded.device), **extra)
                logits = outputs.logits.float().cpu()
                if attention_plot:
                    for weights, label in zip(outputs.attention_weights.double().cpu(), labels):
                        attention_sums[label] = attention_sums.get(label, 0) + weights
                        attention_counts[label] = attention_counts.get(label, 0) + 1
                if mapping is not None:
                    logits = mapping.map_logits(logits)
                predictions.extend(logits.argmax(dim=-1).tolist())
                references.extend(labels)
            bar.update(len(rows[label_column]))
    bar.close()
    elapsed = time.perf_counter() - start_time
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s), e.g. #{skipped[0]['index']}: {skipped[0]['error']}", file=sys.stderr)
    if not references:
        raise ValueError(f"no image of split {split!r} could be evaluated ({len(skipped)} unreadable, {dropped_unmapped} of unmapped classes)")

    metrics = compute_metrics(references, predictions, label_names=dataset_names)
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
    }
    result = EvaluationResult(metrics=metrics, label_mapping=mapping_report, skipped_images=skipped, info=info)
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        if plots:
            title = f"{info['model_type'] or 'model'} on {info['dataset_name']} ({split})"
            plot_confusion_matrix(metrics["confusion_matrix"], dataset_names, output / CONFUSION_MATRIX_FILENAME, title=title)
            plot_per_class_accuracy(metrics["per_class"], output / PER_CLASS_FILENAME, title=f"Per-class accuracy: {title}",
                                    mean_class_accuracy=metrics["mean_class_accuracy"])
            result.files = {"confusion_matrix": CONFUSION_MATRIX_FILENAME, "per_class_accuracy": PER_CLASS_FILENAME}
        if attention_plot:
            result.files.update(_write_attention_weights(attention_sums, attention_counts, dataset_names, output,
                                                         f"Mean attention weights per true class: {info['model_type']} on "
                                                         f"{info['dataset_name']} ({split})"))
        (output / RESULTS_FILENAME).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


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
    lines = [
        f"{info['model']} on {info['dataset_name']} [{info['split']}]: {metrics['num_samples']} images, "
        f"{info['images_per_second']} img/s on {info['device']}",
        f"  accuracy            {metrics['accuracy'] * 100:6.2f} %",
        f"  mean class accuracy {metrics['mean_class_accuracy'] * 100:6.2f} %",
        f"  macro-F1            {metrics['macro_f1'] * 100:6.2f} %",
        f"  {'class':<12} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(f"  {name:<12} {row['precision'] * 100:8.1f}% {row['recall'] * 100:6.1f}% {row['f1'] * 100:5.1f}% {row['support']:>8}")
    return "\n".join(lines)


def build_parser(prog: str = "hf-fer evaluate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate a FER model on a dataset split: accuracy, mean class accuracy, macro-F1, per-class "
        "precision/recall, confusion matrix (eval_results.json + PNG plots).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  hf-fer evaluate --model runs/pv2 --dataset data/rafdb --split test
  hf-fer evaluate --model poster-v2-rafdb --dataset data/fer2013 --label-map auto --output-dir eval/rafdb-on-fer2013
  hf-fer evaluate --model runs/arm --dataset synthetic --batch-size 32 --device cpu

--dataset takes a prepare-dataset/save_to_disk folder, an imagefolder directory, a Hub dataset id or
'synthetic'. With --label-map auto, classes are matched by name (cross-dataset evaluation); classes that
cannot be mapped are reported, and test images of classes the model lacks are dropped (--keep-unmapped
counts them as errors instead).""",
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--dataset", required=True, help="dataset folder, imagefolder directory, Hub id, or 'synthetic'")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--label-map", default="auto", choices=LABEL_MAP_MODES, help="how model classes are matched to dataset classes (default: auto)")
    parser.add_argument("--keep-unmapped", action="store_true", help="keep images of classes the model lacks (counted as errors)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    parser.add_argument("--output-dir", default=None, help="where eval_results.json and plots go (default: the model folder, or ./eval_results)")
    parser.add_argument("--dataset-name", default=None, help="name shown in the results and model card (default: the folder name)")
    parser.add_argument("--benchmark", default=None, help="benchmark the data is, e.g. raf-db (default: from prepare-dataset's report)")
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model folders whose code is not part of hf_fer")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    parser.add_argument("--attention-plot", action="store_true",
                        help="DACL: also write the mean attention-weight vector per true class (attention_weights.png/.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output_dir = args.output_dir
    if output_dir is None:
        output_dir = args.model if Path(args.model).is_dir() else "eval_results"
    result = evaluate_model(
        args.model, args.dataset, args.split, label_map=args.label_map, keep_unmapped=args.keep_unmapped,
        batch_size=args.batch_size, device=args.device, output_dir=output_dir, dataset_name=args.dataset_name,
        benchmark=args.benchmark, trust_remote_code=args.trust_remote_code, max_samples=args.max_samples, progress=not args.no_progress,
        plots=not args.no_plots, attention_plot=args.attention_plot,
    )
    print(_format_summary(result))
    print(f"wrote {Path(output_dir) / RESULTS_FILENAME}")
    return 0

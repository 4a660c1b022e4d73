"""Classification metrics for FER, computed with numpy so that they work offline.

``evaluate.load("accuracy")`` needs the Hub (the ``evaluate`` wheel ships no metric scripts), so the
numbers reported in ``eval_results.json`` and in model cards come from here. FER papers report two
different "accuracies" (DACL #2): the overall accuracy (correct / total) and the mean class accuracy
(mean of the diagonal of the row-normalised confusion matrix, also called "average" or "balanced"
accuracy). Both are always computed, together with macro-F1 and per-class precision/recall.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["confusion_matrix", "normalize_confusion_matrix", "compute_metrics", "SUMMARY_METRICS"]

#: Metric keys of :func:`compute_metrics` that are single numbers (what goes into a model card).
SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "mean_class_accuracy", "macro_f1")


def _as_index_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{name} must hold integer class indices, got {array.dtype} values")
        array = array.astype(np.int64)
    return array.astype(np.int64, copy=False)


def confusion_matrix(references: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` = number of samples of true class ``i`` predicted as class ``j``."""
    references = _as_index_array(references, "references")
    predictions = _as_index_array(predictions, "predictions")
    if references.shape != predictions.shape:
        raise ValueError(f"references and predictions differ in length: {references.size} vs {predictions.size}")
    for name, array in (("references", references), ("predictions", predictions)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(f"{name} must be class indices in 0..{num_classes - 1}, got values {sorted(set(array.tolist()))}")
    counts = np.bincount(references * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def normalize_confusion_matrix(counts: np.ndarray) -> np.ndarray:
    """Row-normalise (each true class sums to 1); rows of classes with no samples stay all zero."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def compute_metrics(
    references: Sequence[int],
    predictions: Sequence[int],
    label_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> dict:
    """All FER metrics for one evaluation, as plain Python types (ready for ``json.dump``).

    Conventions (stated because papers differ):
      * ``mean_class_accuracy`` averages per-class recall over the classes that *have* samples
        (a class absent from the test split cannot be scored).
      * ``macro_f1`` averages F1 over classes that have samples or were predicted (scikit-learn's
        default); an undefined precision/recall counts as 0.
      * per-class ``precision`` of a class that was never predicted is 0 (and flagged by ``predicted=0``).

    Returns a dict with ``accuracy``, ``mean_class_accuracy``, ``macro_f1``, ``num_samples``,
    ``per_class`` (``{name: {precision, recall, f1, support, predicted}}``), ``confusion_matrix``
    (counts) and ``confusion_matrix_normalized`` (rows sum to 1), and ``label_names``.
    """
    if label_names is not None:
        label_names = [str(name) for name in label_names]
        if num_classes is not None and num_classes != len(label_names):
            raise ValueError(f"num_classes {num_classes} disagrees with the {len(label_names)} label names")
        num_classes = len(label_names)
    if num_classes is None:
        raise ValueError("pass label_names or num_classes")
    counts = confusion_matrix(references, predictions, num_classes)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no samples to evaluate (references is empty)")
    names = label_names or [str(index) for index in range(num_classes)]

    true_positives = np.diag(counts)
    support = counts.sum(axis=1)  # samples of each true class
    predicted = counts.sum(axis=0)  # times each class was predicted
    recall = _safe_ratio(true_positives, support)
    precision = _safe_ratio(true_positives, predicted)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)

    has_samples = support > 0
    scored_for_f1 = has_samples | (predicted > 0)
    return {
        "accuracy": float(true_positives.sum() / total),
        "mean_class_accuracy": float(recall[has_samples].mean()),
        "macro_f1": float(f1[scored_for_f1].mean()),
        "num_samples": total,
        "label_names": list(names),
        "per_class": {
            name: {
                "precision": float(precision[index]),
                "recall": float(recall[index]),
                "f1": float(f1[index]),
                "support": int(support[index]),
                "predicted": int(predicted[index]),
            }
            for index, name in enumerate(names)
        },
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalized": normalize_confusion_matrix(counts).tolist(),
    }

"""Classification metrics for FER: scikit-learn for the standard ones, numpy where no library does it.

FER papers report two different "accuracies" (DACL #2): the overall accuracy (correct / total) and the mean
class accuracy (mean of the diagonal of the row-normalised confusion matrix, also called "average" or
"balanced" accuracy). Both are always computed, together with macro-F1 and per-class precision/recall
(``sklearn.metrics``). What scikit-learn does not offer is written here: bootstrap confidence intervals of
all three summary numbers at once (vectorised over resamples), and McNemar's paired test for two models.
Calibration (ECE, reliability bins, temperature scaling) lives in :mod:`hf_fer.evaluation.calibration`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "confusion_matrix",
    "normalize_confusion_matrix",
    "compute_metrics",
    "bootstrap_confidence_intervals",
    "mcnemar_test",
    "SUMMARY_METRICS",
    "MCNEMAR_METHODS",
]

#: Metric keys of :func:`compute_metrics` that are single numbers (what goes into a model card).
SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "mean_class_accuracy", "macro_f1")
MCNEMAR_METHODS: tuple[str, ...] = ("exact", "continuity")


def _as_index_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{name} must hold integer class indices, got {array.dtype} values")
        array = array.astype(np.int64)
    return array.astype(np.int64, copy=False)


def _checked_pair(references, predictions, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    references = _as_index_array(references, "references")
    predictions = _as_index_array(predictions, "predictions")
    if references.shape != predictions.shape:
        raise ValueError(f"references and predictions differ in length: {references.size} vs {predictions.size}")
    for name, array in (("references", references), ("predictions", predictions)):
        if array.size and (array.min() < 0 or array.max() >= num_classes):
            raise ValueError(f"{name} must be class indices in 0..{num_classes - 1}, got values {sorted(set(array.tolist()))}")
    return references, predictions


def confusion_matrix(references: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` = number of samples of true class ``i`` predicted as class ``j`` (``sklearn.metrics``)."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    references, predictions = _checked_pair(references, predictions, num_classes)
    if references.size == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return sk_confusion_matrix(references, predictions, labels=np.arange(num_classes)).astype(np.int64)


def normalize_confusion_matrix(counts: np.ndarray) -> np.ndarray:
    """Row-normalise (each true class sums to 1); rows of classes with no samples stay all zero."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def compute_metrics(
    references: Sequence[int],
    predictions: Sequence[int],
    label_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> dict:
    """All FER metrics for one evaluation, as plain Python types (ready for ``json.dump``).

    Conventions (stated because papers differ; they are scikit-learn's):
      * ``mean_class_accuracy`` averages per-class recall over the classes that *have* samples
        (``balanced_accuracy_score``: a class absent from the test split cannot be scored).
      * ``macro_f1`` averages F1 over classes that have samples or were predicted (``f1_score(average="macro")``
        with its default labels); an undefined precision/recall counts as 0.
      * per-class ``precision`` of a class that was never predicted is 0 (and flagged by ``predicted=0``).

    Returns a dict with ``accuracy``, ``mean_class_accuracy``, ``macro_f1``, ``num_samples``,
    ``per_class`` (``{name: {precision, recall, f1, support, predicted}}``), ``confusion_matrix``
    (counts) and ``confusion_matrix_normalized`` (rows sum to 1), and ``label_names``.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_recall_fscore_support

    if label_names is not None:
        label_names = [str(name) for name in label_names]
        if num_classes is not None and num_classes != len(label_names):
            raise ValueError(f"num_classes {num_classes} disagrees with the {len(label_names)} label names")
        num_classes = len(label_names)
    if num_classes is None:
        raise ValueError("pass label_names or num_classes")
    references, predictions = _checked_pair(references, predictions, num_classes)
    if references.size == 0:
        raise ValueError("no samples to evaluate (references is empty)")
    names = label_names or [str(index) for index in range(num_classes)]
    counts = confusion_matrix(references, predictions, num_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        references, predictions, labels=np.arange(num_classes), average=None, zero_division=0
    )
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected and handled
        warnings.simplefilter("ignore")
        mean_class_accuracy = balanced_accuracy_score(references, predictions)
    return {
        "accuracy": float(accuracy_score(references, predictions)),
        "mean_class_accuracy": float(mean_class_accuracy),
        "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        "num_samples": int(references.size),
        "label_names": list(names),
        "per_class": {
            name: {
                "precision": float(precision[index]),
                "recall": float(recall[index]),
                "f1": float(f1[index]),
                "support": int(support[index]),
                "predicted": int(counts[:, index].sum()),
            }
            for index, name in enumerate(names)
        },
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalized": normalize_confusion_matrix(counts).tolist(),
    }


def _summary_from_confusion(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, mean class accuracy and macro-F1 of a stack of confusion matrices ``[..., K, K]`` (same conventions as above)."""
    counts = counts.astype(np.float64)
    true_positives = np.diagonal(counts, axis1=-2, axis2=-1)
    support = counts.sum(axis=-1)
    predicted = counts.sum(axis=-2)
    total = support.sum(axis=-1)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positives), where=denominator > 0)
    has_samples = support > 0
    scored = has_samples | (predicted > 0)
    return {
        "accuracy": true_positives.sum(axis=-1) / total,
        "mean_class_accuracy": (recall * has_samples).sum(axis=-1) / has_samples.sum(axis=-1),
        "macro_f1": (f1 * scored).sum(axis=-1) / scored.sum(axis=-1),
    }


def bootstrap_confidence_intervals(
    references: Sequence[int],
    predictions: Sequence[int],
    num_classes: int,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_size: int = 250,
) -> dict:
    """Percentile-bootstrap confidence intervals of accuracy, mean class accuracy and macro-F1.

    Test images are resampled with replacement ``num_resamples`` times (``numpy.random.default_rng(seed)``:
    the same seed gives the same interval); each resample's metrics are computed from its confusion matrix,
    all resamples at once. Returns ``{metric: {"low", "high"}, "confidence", "num_resamples", "seed", "method"}``.
    The interval covers the variability of the *test sample* only (not of training).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be positive, got {num_resamples}")
    references, predictions = _checked_pair(references, predictions, num_classes)
    size = references.size
    if size == 0:
        raise ValueError("no samples to bootstrap (references is empty)")
    rng = np.random.default_rng(seed)
    cell = references * num_classes + predictions
    values = {key: [] for key in SUMMARY_METRICS}
    for start in range(0, num_resamples, chunk_size):
        count = min(chunk_size, num_resamples - start)
        drawn = cell[rng.integers(0, size, size=(count, size))]  # [count, size] confusion cell of each drawn image
        offsets = (np.arange(count) * num_classes * num_classes)[:, None]
        counts = np.bincount((drawn + offsets).ravel(), minlength=count * num_classes * num_classes)
        summary = _summary_from_confusion(counts.reshape(count, num_classes, num_classes))
        for key in SUMMARY_METRICS:
            values[key].append(summary[key])
    tail = 100 * (1 - confidence) / 2
    result: dict = {}
    for key in SUMMARY_METRICS:
        low, high = np.percentile(np.concatenate(values[key]), [tail, 100 - tail])
        result[key] = {"low": float(low), "high": float(high)}
    result.update(confidence=confidence, num_resamples=num_resamples, seed=seed, method="percentile bootstrap over test images")
    return result


def _chi2_one_dof_survival(statistic: float) -> float:
    """P(X > statistic) for a chi-square with one degree of freedom: erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(max(statistic, 0.0) / 2))


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool], method: str = "exact") -> dict:
    """McNemar's paired test: do two models on the *same* images differ in accuracy more than chance would?

    Only discordant images count: ``b`` = A right and B wrong, ``c`` = A wrong and B right.
      * ``"exact"`` (default): two-sided binomial test of ``min(b, c)`` under Binomial(b + c, 1/2),
        ``p = min(1, 2 * P(X <= min(b, c)))`` (valid for any count).
      * ``"continuity"``: chi-square with Edwards' continuity correction, ``(|b - c| - 1)^2 / (b + c)``,
        one degree of freedom (the large-sample approximation).
    Returns ``{"method", "b", "c", "statistic", "p_value"}`` (``p_value`` 1.0 when there is no discordant image).
    """
    if method not in MCNEMAR_METHODS:
        raise ValueError(f"McNemar method must be one of {MCNEMAR_METHODS}, got {method!r}")
    a = np.asarray(correct_a, dtype=bool)
    b_arr = np.asarray(correct_b, dtype=bool)
    if a.shape != b_arr.shape or a.ndim != 1:
        raise ValueError(f"McNemar needs two 1-D per-image correctness vectors of the same length, got {a.shape} and {b_arr.shape}")
    b = int(np.sum(a & ~b_arr))
    c = int(np.sum(~a & b_arr))
    discordant = b + c
    if discordant == 0:
        return {"method": method, "b": b, "c": c, "statistic": 0.0, "p_value": 1.0}
    if method == "exact":
        from scipy.stats import binom

        statistic = float(min(b, c))
        p_value = min(1.0, 2.0 * float(binom.cdf(min(b, c), discordant, 0.5)))
    else:
        statistic = (abs(b - c) - 1) ** 2 / discordant
        p_value = _chi2_one_dof_survival(statistic)
    return {"method": method, "b": b, "c": c, "statistic": float(statistic), "p_value": float(p_value)}

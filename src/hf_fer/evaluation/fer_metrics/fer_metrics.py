"""A local ``evaluate`` metric module: ``evaluate.load(hf_fer.evaluation.FER_METRIC_PATH)`` works offline.

``evaluate.load("accuracy")`` needs the Hub. This module gives the same ``add_batch`` / ``compute`` interface
for code written against ``evaluate``, and computes everything with :func:`hf_fer.evaluation.compute_metrics`
(accuracy, mean class accuracy, macro-F1, per-class precision/recall, confusion matrix) and, with ``bootstrap=N``,
:func:`hf_fer.evaluation.bootstrap_confidence_intervals`: the same numbers as ``hf-fer evaluate``.
"""
import datasets
import evaluate

_DESCRIPTION = "Facial expression recognition metrics: accuracy, mean class accuracy, macro-F1, per-class precision/recall, confusion matrix."
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class indices.
    references: true class indices.
    label_names: ordered class names (optional; sets the number of classes).
    num_classes: number of classes when label_names is not given (default: 1 + the largest index seen).
    bootstrap: resamples for 95 % confidence intervals (default 0: none); seed: their seed (default 0).
Returns: the dict of hf_fer.evaluation.compute_metrics (+ "confidence_intervals" with bootstrap).
"""


class FerMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, label_names=None, num_classes=None, bootstrap=0, seed=0):
        from hf_fer.evaluation.metrics import bootstrap_confidence_intervals, compute_metrics

        if label_names is None and num_classes is None:
            num_classes = 1 + max(max(predictions, default=0), max(references, default=0))
        result = compute_metrics(references, predictions, label_names=label_names, num_classes=num_classes)
        if bootstrap:
            result["confidence_intervals"] = bootstrap_confidence_intervals(
                references, predictions, len(result["label_names"]), num_resamples=bootstrap, seed=seed)
        return result

"""A local ``evaluate`` metric module: ``evaluate.load(hf_fer.evaluation.FER_METRIC_PATH)`` works offline.

``evaluate.load("accuracy")`` needs the Hub. This module gives the same ``add_batch`` / ``compute`` interface
for code written against ``evaluate``, and computes everything with :func:`hf_fer.evaluation.compute_metrics`
(accuracy, mean class accuracy, macro-F1, per-class precision/recall, confusion matrix).
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
Returns: the dict of hf_fer.evaluation.compute_metrics.
"""


class FerMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, label_names=None, num_classes=None):
        from hf_fer.evaluation.metrics import compute_metrics

        if label_names is None and num_classes is None:
            num_classes = 1 + max(max(predictions, default=0), max(references, default=0))
        return compute_metrics(references, predictions, label_names=label_names, num_classes=num_classes)

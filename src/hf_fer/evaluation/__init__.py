"""Evaluation: offline metrics, confusion-matrix plots and the ``hf-fer evaluate`` command."""
from pathlib import Path as _Path

from .inference import load_model_for_inference, open_rgb_image, resolve_device
from .metrics import SUMMARY_METRICS, compute_metrics, confusion_matrix, normalize_confusion_matrix
from .plots import plot_confusion_matrix, plot_per_class_accuracy
from .runner import RESULTS_FILENAME, EvaluationResult, evaluate_model, main

#: ``evaluate.load(FER_METRIC_PATH)`` gives these metrics through the ``evaluate`` API, offline.
FER_METRIC_PATH = str(_Path(__file__).resolve().parent / "fer_metrics" / "fer_metrics.py")

__all__ = [
    "FER_METRIC_PATH",
    "SUMMARY_METRICS",
    "compute_metrics",
    "confusion_matrix",
    "normalize_confusion_matrix",
    "plot_confusion_matrix",
    "plot_per_class_accuracy",
    "EvaluationResult",
    "evaluate_model",
    "RESULTS_FILENAME",
    "load_model_for_inference",
    "open_rgb_image",
    "resolve_device",
    "main",
]

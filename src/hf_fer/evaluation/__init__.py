"""Evaluation: offline metrics, confusion-matrix plots and the ``hf-fer evaluate`` command."""
from .inference import load_model_for_inference, open_rgb_image, resolve_device
from .metrics import SUMMARY_METRICS, compute_metrics, confusion_matrix, normalize_confusion_matrix
from .plots import plot_confusion_matrix, plot_per_class_accuracy
from .runner import RESULTS_FILENAME, EvaluationResult, evaluate_model, main

__all__ = [
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

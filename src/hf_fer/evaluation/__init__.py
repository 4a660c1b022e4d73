"""Evaluation: offline metrics with uncertainty and calibration, plots, and the ``hf-fer evaluate`` / ``compare`` commands."""
from pathlib import Path as _Path

from .inference import load_model_for_inference, open_rgb_image, resolve_device
from .metrics import SUMMARY_METRICS, compute_metrics, confusion_matrix, normalize_confusion_matrix
from .plots import plot_confusion_matrix, plot_per_class_accuracy
from .calibration import apply_temperature, expected_calibration_error, fit_temperature, reliability_bins, temperature_of
from .metrics import MCNEMAR_METHODS, bootstrap_confidence_intervals, mcnemar_test
from .plots import plot_reliability_diagram
from .protocols import PROTOCOLS, TTA_MODES
from .runner import RESULTS_FILENAME, EvaluationResult, evaluate_model, fit_temperature_on_split, main

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
    "apply_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "fit_temperature_on_split",
    "reliability_bins",
    "temperature_of",
    "bootstrap_confidence_intervals",
    "mcnemar_test",
    "MCNEMAR_METHODS",
    "plot_reliability_diagram",
    "PROTOCOLS",
    "TTA_MODES",
]

"""Calibration: expected calibration error (ECE), reliability bins and temperature scaling.

A FER model that says "happiness, 0.97" should be right about 97 % of the time at that confidence. ECE
measures the gap (15 equal-width confidence bins, the usual setting since Guo et al., 2017); the reliability
diagram (:func:`hf_fer.evaluation.plots.plot_reliability_diagram`) shows it per bin. Temperature scaling
divides the logits by one scalar ``T`` fitted on the *validation* split (never the test split); it changes
confidences, not the argmax, so accuracy is untouched. ``T`` is stored in the model's ``config.json`` under
``temperature_scaling`` and applied only when asked (:func:`apply_temperature`).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "ECE_BINS",
    "TEMPERATURE_KEY",
    "reliability_bins",
    "expected_calibration_error",
    "softmax",
    "fit_temperature",
    "apply_temperature",
    "temperature_of",
    "store_temperature",
]

ECE_BINS = 15
#: ``config.json`` key holding ``{"temperature", "fitted_on", "nll_before", "nll_after", ...}``.
TEMPERATURE_KEY = "temperature_scaling"


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _check_probabilities(probabilities, references) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    references = np.asarray(references, dtype=np.int64)
    if probabilities.ndim != 2 or references.ndim != 1 or probabilities.shape[0] != references.shape[0]:
        raise ValueError(f"expected probabilities [N, K] and references [N], got {probabilities.shape} and {references.shape}")
    if probabilities.shape[0] == 0:
        raise ValueError("no samples (empty probabilities)")
    return probabilities, references


def reliability_bins(probabilities, references, num_bins: int = ECE_BINS) -> dict:
    """Per confidence bin: count, mean confidence and accuracy of the top-1 prediction.

    Bins are equal-width on (0, 1]: bin ``i`` holds confidences in ``(i/num_bins, (i+1)/num_bins]`` (a
    confidence of exactly 0 goes to the first bin). Empty bins have ``count`` 0 and ``None`` averages.
    """
    probabilities, references = _check_probabilities(probabilities, references)
    confidences = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == references
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.ceil(confidences * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    confidence_sums = np.bincount(index, weights=confidences, minlength=num_bins)
    correct_sums = np.bincount(index, weights=correct.astype(np.float64), minlength=num_bins)
    return {
        "edges": edges.tolist(),
        "count": counts.tolist(),
        "confidence": [float(s / n) if n else None for s, n in zip(confidence_sums, counts)],
        "accuracy": [float(s / n) if n else None for s, n in zip(correct_sums, counts)],
    }


def expected_calibration_error(probabilities, references, num_bins: int = ECE_BINS) -> float:
    """ECE = Σ_bins (n_bin / N) · |accuracy(bin) − mean confidence(bin)| over equal-width confidence bins."""
    bins = reliability_bins(probabilities, references, num_bins)
    total = sum(bins["count"])
    return float(sum(n / total * abs(acc - conf) for n, acc, conf in zip(bins["count"], bins["accuracy"], bins["confidence"]) if n))


def _nll(logits: np.ndarray, references: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(references)), references].mean())


def fit_temperature(logits, references, bounds: tuple[float, float] = (0.05, 20.0)) -> dict:
    """The temperature ``T`` minimising the negative log-likelihood of ``softmax(logits / T)`` (scipy, bounded in log T).

    Fit it on a validation split. Returns ``{"temperature", "nll_before", "nll_after", "ece_before", "ece_after", "num_samples"}``.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    probabilities, references = _check_probabilities(softmax(logits), references)
    fit = minimize_scalar(lambda log_t: _nll(logits, references, float(np.exp(log_t))),
                          bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-6})
    temperature = float(np.exp(fit.x))
    return {
        "temperature": temperature,
        "nll_before": _nll(logits, references, 1.0),
        "nll_after": _nll(logits, references, temperature),
        "ece_before": expected_calibration_error(probabilities, references),
        "ece_after": expected_calibration_error(softmax(logits / temperature), references),
        "num_samples": int(len(references)),
    }


def temperature_of(config_or_value) -> float:
    """The stored temperature of a config (object or dict), or the number itself; 1.0 when none is stored."""
    if isinstance(config_or_value, (int, float)):
        value = float(config_or_value)
    else:
        record = config_or_value.get(TEMPERATURE_KEY) if isinstance(config_or_value, Mapping) else getattr(config_or_value, TEMPERATURE_KEY, None)
        value = float(record["temperature"]) if isinstance(record, Mapping) and "temperature" in record else 1.0
    if not value > 0:
        raise ValueError(f"temperature must be positive, got {value}")
    return value


def apply_temperature(logits, config_or_temperature):
    """``logits / T`` with ``T`` from the config's ``temperature_scaling`` (or a number). Works on tensors and arrays.

    Call it only when calibrated confidences are wanted: the argmax (the predicted class) does not change.
    """
    return logits / temperature_of(config_or_temperature)


def store_temperature(model_dir: str | os.PathLike, record: Mapping) -> Path:
    """Write ``record`` (from :func:`fit_temperature`, plus where it was fitted) into ``model_dir/config.json`` atomically."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_dir}: no config.json to store the temperature in (a local model folder is needed)") from None
    if "temperature" not in record:
        raise ValueError(f"temperature record needs a 'temperature' field, got keys {sorted(record)}")
    temperature_of(float(record["temperature"]))  # validates
    config[TEMPERATURE_KEY] = dict(record)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".json.tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path

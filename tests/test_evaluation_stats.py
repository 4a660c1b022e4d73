"""Uncertainty and calibration against independent computations: bootstrap CIs (exact binomial quantiles, scipy),
ECE (hand computation, scikit-learn's calibration_curve), McNemar (hand computation, scipy), temperature scaling
(brute-force NLL with torch), and the metrics against scikit-learn's definitions on a fixed example."""
import json
import math

import numpy as np
import pytest
import torch

from hf_fer.evaluation import (
    apply_temperature,
    bootstrap_confidence_intervals,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
    mcnemar_test,
    plot_reliability_diagram,
    reliability_bins,
)
from hf_fer.evaluation.calibration import store_temperature, temperature_of


def _fixed_example(size=120, classes=4, accuracy=0.7, seed=3):
    rng = np.random.default_rng(seed)
    references = rng.integers(0, classes, size)
    wrong = rng.random(size) > accuracy
    predictions = np.where(wrong, (references + rng.integers(1, classes, size)) % classes, references)
    return references, predictions


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_accuracy_interval_is_the_binomial_quantiles():
    """Resampling n images with k correct makes the resampled accuracy Binomial(n, k/n)/n: its 2.5/97.5 % quantiles are known."""
    from scipy.stats import binom

    n, k = 50, 40
    references = np.zeros(n, dtype=int)
    predictions = np.r_[np.zeros(k, dtype=int), np.ones(n - k, dtype=int)]
    ci = bootstrap_confidence_intervals(references, predictions, 2, num_resamples=20000, seed=1)["accuracy"]
    assert ci["low"] == pytest.approx(binom.ppf(0.025, n, k / n) / n, abs=1 / n)
    assert ci["high"] == pytest.approx(binom.ppf(0.975, n, k / n) / n, abs=1 / n)
    assert ci["low"] < k / n < ci["high"]


def test_bootstrap_macro_f1_and_mean_class_accuracy_match_scipy():
    from scipy.stats import bootstrap
    from sklearn.metrics import balanced_accuracy_score, f1_score

    references, predictions = _fixed_example()
    ours = bootstrap_confidence_intervals(references, predictions, 4, num_resamples=4000, seed=0)
    for key, statistic in (("macro_f1", lambda r, p: f1_score(r, p, average="macro", zero_division=0)),
                           ("mean_class_accuracy", balanced_accuracy_score)):
        theirs = bootstrap((references, predictions), statistic, paired=True, vectorized=False, n_resamples=400,
                           method="percentile", rng=np.random.default_rng(7)).confidence_interval
        assert ours[key]["low"] == pytest.approx(theirs.low, abs=0.03), key  # Monte Carlo error of 400 resamples
        assert ours[key]["high"] == pytest.approx(theirs.high, abs=0.03), key
    assert bootstrap_confidence_intervals(references, predictions, 4, num_resamples=300, seed=5) == \
        bootstrap_confidence_intervals(references, predictions, 4, num_resamples=300, seed=5)  # seeded
    assert ours["confidence"] == 0.95 and ours["num_resamples"] == 4000


def test_metrics_match_scikit_learn_definitions():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_score, recall_score

    references, predictions = _fixed_example()
    metrics = compute_metrics(references, predictions, num_classes=4)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    assert metrics["mean_class_accuracy"] == pytest.approx(balanced_accuracy_score(references, predictions))
    assert metrics["macro_f1"] == pytest.approx(f1_score(references, predictions, average="macro"))
    precision = precision_score(references, predictions, average=None)
    recall = recall_score(references, predictions, average=None)
    for index in range(4):
        assert metrics["per_class"][str(index)]["precision"] == pytest.approx(precision[index])
        assert metrics["per_class"][str(index)]["recall"] == pytest.approx(recall[index])


# ------------------------------------------------------------------------------------------ calibration

PROBABILITIES = np.array([
    [0.90, 0.05, 0.05],  # right, confidence 0.90 -> bin (13/15, 14/15]
    [0.10, 0.85, 0.05],  # wrong, 0.85 -> bin (12/15, 13/15]
    [0.62, 0.30, 0.08],  # right, 0.62 -> bin (9/15, 10/15]
    [0.20, 0.30, 0.50],  # right, 0.50 -> bin (7/15, 8/15]
    [0.02, 0.10, 0.88],  # wrong, 0.88 -> same bin as the first
])
REFERENCES = np.array([0, 0, 0, 2, 1])


def test_ece_by_hand():
    # bin 13: accuracy 1/2, confidence 0.89 (2 images); the others hold one image each
    expected = 2 / 5 * abs(0.5 - 0.89) + 1 / 5 * (0.85 + abs(1 - 0.62) + abs(1 - 0.5))
    assert expected_calibration_error(PROBABILITIES, REFERENCES) == pytest.approx(expected)  # = 0.502
    bins = reliability_bins(PROBABILITIES, REFERENCES)
    assert len(bins["count"]) == 15 and sum(bins["count"]) == 5 and bins["count"][13] == 2
    assert bins["accuracy"][13] == pytest.approx(0.5) and bins["confidence"][13] == pytest.approx(0.89)


def test_ece_matches_scikit_learn_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 5)) * 2
    references = rng.integers(0, 5, 400)
    references[:200] = logits[:200].argmax(1)  # half the images right
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    confidence, correct = probabilities.max(1), probabilities.argmax(1) == references
    accuracy_per_bin, confidence_per_bin = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
    counts = np.histogram(confidence, bins=15, range=(0, 1))[0]
    expected = float(np.sum(counts[counts > 0] / len(confidence) * np.abs(accuracy_per_bin - confidence_per_bin)))
    assert expected_calibration_error(probabilities, references, num_bins=15) == pytest.approx(expected, abs=1e-12)


def test_reliability_diagram_png(tmp_path):
    bins = reliability_bins(PROBABILITIES, REFERENCES)
    figure = plot_reliability_diagram(bins, tmp_path / "reliability.png", ece=0.502)
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ECE 0.502" in figure.axes[0].get_title()


def test_temperature_scaling_minimises_nll_and_is_stored_in_the_config(tmp_path):
    from transformers import PretrainedConfig

    rng = np.random.default_rng(0)
    references = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4))
    logits[np.arange(300), references] += 1.5
    logits *= 4  # over-confident
    record = fit_temperature(logits, references)
    grid = np.linspace(1.0, 8.0, 1401)
    target = torch.as_tensor(references)
    nll = [float(torch.nn.functional.cross_entropy(torch.as_tensor(logits / t), target)) for t in grid]
    assert record["temperature"] == pytest.approx(grid[int(np.argmin(nll))], abs=0.01)
    assert record["nll_after"] < record["nll_before"] and record["ece_after"] < record["ece_before"]

    PretrainedConfig(num_labels=4).save_pretrained(tmp_path)
    store_temperature(tmp_path, {**record, "fitted_on": {"split": "validation"}})
    config = PretrainedConfig.from_pretrained(tmp_path)
    assert temperature_of(config) == pytest.approx(record["temperature"])
    scaled = apply_temperature(torch.as_tensor(logits), config)
    torch.testing.assert_close(scaled, torch.as_tensor(logits) / record["temperature"])
    assert torch.equal(scaled.argmax(-1), torch.as_tensor(logits).argmax(-1))  # accuracy is untouched
    assert temperature_of(PretrainedConfig()) == 1.0
    with pytest.raises(ValueError, match="temperature"):
        store_temperature(tmp_path, {"nll": 1.0})


# ------------------------------------------------------------------------------------------ McNemar


def _pairs(b, c, both=5, neither=3):
    a = [True] * b + [False] * c + [True] * both + [False] * neither
    bb = [False] * b + [True] * c + [True] * both + [False] * neither
    return a, bb


def test_mcnemar_exact_and_continuity_by_hand_and_with_scipy():
    from scipy.stats import binomtest, chi2

    a, b = _pairs(2, 8)
    exact = mcnemar_test(a, b, "exact")
    assert (exact["b"], exact["c"]) == (2, 8)
    assert exact["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 2 ** 10)  # 2·P(X ≤ 2), X ~ Binomial(10, 1/2) = 0.109375
    assert exact["p_value"] == pytest.approx(binomtest(2, 10, 0.5).pvalue)
    corrected = mcnemar_test(a, b, "continuity")
    assert corrected["statistic"] == pytest.approx((abs(2 - 8) - 1) ** 2 / 10)  # 2.5
    assert corrected["p_value"] == pytest.approx(chi2.sf(2.5, 1))
    assert mcnemar_test(*_pairs(0, 0))["p_value"] == 1.0
    big = mcnemar_test(*_pairs(40, 12), "exact")
    assert big["p_value"] == pytest.approx(binomtest(12, 52, 0.5).pvalue) and big["p_value"] < 0.001
    with pytest.raises(ValueError, match="same length"):
        mcnemar_test([True], [True, False])
    with pytest.raises(ValueError, match="method"):
        mcnemar_test([True], [True], "midp")
    json.dumps(big)
    assert math.isfinite(corrected["statistic"])

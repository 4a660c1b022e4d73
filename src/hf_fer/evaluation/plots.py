"""Confusion-matrix, per-class-accuracy and (DACL) attention-weight figures (PNG), labelled with class names.

The figures are what a model card shows next to the numbers: a class-order mistake (the most
common silent bug in FER) is visible at a glance as an off-diagonal block.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["plot_confusion_matrix", "plot_per_class_accuracy", "plot_reliability_diagram", "plot_attention_weights"]


def _pyplot():
    """matplotlib with a file-only backend: evaluation must run on headless machines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(
    counts: Sequence[Sequence[int]] | np.ndarray,
    label_names: Sequence[str],
    path: str | os.PathLike | None = None,
    title: str | None = None,
):
    """Row-normalised confusion matrix as a heat map; each cell shows the rate and the count.

    Rows are true classes, columns predictions. Returns the matplotlib ``Figure`` (saved to ``path``
    as PNG when given, then closed).
    """
    from .metrics import normalize_confusion_matrix

    plt = _pyplot()
    counts = np.asarray(counts)
    if counts.shape != (len(label_names), len(label_names)):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {len(label_names)} label names")
    rates = normalize_confusion_matrix(counts)
    size = max(4.0, 0.8 * len(label_names) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size * 0.9))
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(len(label_names))
    axes.set_xticks(ticks, labels=list(label_names), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(label_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row in range(len(label_names)):
        for column in range(len(label_names)):
            rate = rates[row, column]
            axes.text(column, row, f"{rate:.2f}\n({counts[row, column]})", ha="center", va="center", fontsize=7,
                      color="white" if rate > 0.5 else "black")
    axes.set_title(title or "Confusion matrix (row-normalised)")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
        plt.close(figure)
    return figure


def plot_per_class_accuracy(
    per_class: dict[str, dict],
    path: str | os.PathLike | None = None,
    title: str | None = None,
    mean_class_accuracy: float | None = None,
):
    """Bar chart of per-class recall (= per-class accuracy) with the sample count above each bar."""
    plt = _pyplot()
    names = list(per_class)
    recalls = [per_class[name]["recall"] for name in names]
    supports = [per_class[name]["support"] for name in names]
    figure, axes = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 2), 3.5))
    bars = axes.bar(names, recalls, color="tab:blue")
    for bar, support in zip(bars, supports):
        axes.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"n={support}", ha="center", va="bottom", fontsize=7)
    title = title or "Per-class accuracy"
    if mean_class_accuracy is not None:  # dashed line; its value goes in the title so no legend hides a bar
        axes.axhline(mean_class_accuracy, color="tab:red", linestyle="--", linewidth=1)
        title += f" (mean {mean_class_accuracy:.3f}, dashed)"
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("accuracy (recall)")
    axes.set_title(title, fontsize=10)
    plt.setp(axes.get_xticklabels(), rotation=45, ha="right")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
        plt.close(figure)
    return figure


def plot_reliability_diagram(
    bins: dict,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    ece: float | None = None,
):
    """Reliability diagram: accuracy vs confidence per bin (from :func:`hf_fer.evaluation.calibration.reliability_bins`).

    Bars are the accuracy of each confidence bin, the diagonal is perfect calibration, and the grey histogram
    below shows how many images fall in each bin. Returns the ``Figure`` (saved to ``path`` as PNG, then closed).
    """
    plt = _pyplot()
    edges = np.asarray(bins["edges"], dtype=float)
    counts = np.asarray(bins["count"], dtype=float)
    accuracy = np.array([value if value is not None else 0.0 for value in bins["accuracy"]])
    confidence = np.array([value if value is not None else np.nan for value in bins["confidence"]])
    width = np.diff(edges)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(edges[:-1], accuracy, width=width, align="edge", color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    top.scatter(confidence, accuracy, s=8, color="tab:red", zorder=3, label="mean confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=7)
    top.set_title((title or "Reliability diagram") + (f" (ECE {ece:.3f})" if ece is not None else ""), fontsize=10)
    bottom.bar(edges[:-1], counts, width=width, align="edge", color="lightgrey", edgecolor="black", linewidth=0.5)
    bottom.set_xlabel("confidence of the top-1 prediction")
    bottom.set_ylabel("images")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
        plt.close(figure)
    return figure


def plot_attention_weights(
    mean_weights: Sequence[Sequence[float]] | np.ndarray,
    label_names: Sequence[str],
    path: str | os.PathLike | None = None,
    title: str | None = None,
    counts: Sequence[int] | None = None,
):
    """Mean attention-weight vector of each class as a small image (DACL: 512 weights → a 16×32 grid), one panel per
    class on a shared colour scale, so per-class patterns (which feature dimensions the center loss weighs) compare
    at a glance. Rows of ``mean_weights`` follow ``label_names``; a row of NaN (class absent) is drawn blank."""
    plt = _pyplot()
    weights = np.asarray(mean_weights, dtype=float)
    if weights.ndim != 2 or weights.shape[0] != len(label_names):
        raise ValueError(f"mean_weights shape {weights.shape} does not match {len(label_names)} label names (one row each)")
    dim = weights.shape[1]
    rows = int(np.sqrt(dim / 2)) or 1  # 512 → 16×32
    while dim % rows:
        rows -= 1
    finite = weights[np.isfinite(weights)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    columns = min(4, len(label_names))
    grid_rows = -(-len(label_names) // columns)
    figure, axes = plt.subplots(grid_rows, columns, figsize=(3.2 * columns, 2.0 * grid_rows + 0.8), squeeze=False)
    image = None
    for index, axis in enumerate(axes.flat):
        axis.set_xticks([])
        axis.set_yticks([])
        if index >= len(label_names):
            axis.set_axis_off()
            continue
        image = axis.imshow(weights[index].reshape(rows, dim // rows), cmap="viridis", vmin=low, vmax=high)
        suffix = f" (n={counts[index]})" if counts is not None else ""
        axis.set_title(f"{label_names[index]}{suffix}", fontsize=9)
    if image is not None:
        figure.colorbar(image, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="mean attention weight")
    figure.suptitle(title or "Mean attention weights per class", fontsize=10)
    if path is not None:
        figure.savefig(path, dpi=120)
        plt.close(figure)
    return figure

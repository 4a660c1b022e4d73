"""``hf-fer compare MODEL_A MODEL_B --dataset D``: two models on the same images, with intervals and a paired test.

Both models are evaluated with the same protocol on the same split (checked through the split's SHA-256). Each
model's metrics get their bootstrap 95 % interval; the difference in accuracy gets a *paired* bootstrap interval
(the same resampled images for both models) and McNemar's test on the images where exactly one model is right —
so "+0.3 points" can be judged against the noise of the test set.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .metrics import MCNEMAR_METHODS, SUMMARY_METRICS, mcnemar_test
from .protocols import PROTOCOLS

__all__ = ["compare_models", "paired_bootstrap_difference", "build_parser", "main"]


def paired_bootstrap_difference(correct_a, correct_b, *, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Percentile interval of accuracy(A) − accuracy(B) over the same resampled test images."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two non-empty per-image correctness vectors of equal length, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    difference = a - b
    draws = np.concatenate([difference[rng.integers(0, a.size, size=(min(250, num_resamples - start), a.size))].mean(axis=1)
                            for start in range(0, num_resamples, 250)])
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return {"difference": float(difference.mean()), "low": float(low), "high": float(high), "confidence": confidence,
            "num_resamples": num_resamples, "seed": seed, "method": "paired percentile bootstrap over test images"}


def compare_models(
    model_a: str,
    model_b: str,
    dataset,
    split: str = "test",
    *,
    mcnemar: str = "exact",
    bootstrap: int = 1000,
    seed: int = 0,
    **evaluate_kwargs,
) -> dict:
    """Evaluate both models (:func:`hf_fer.evaluation.evaluate_model`) and compare them image by image."""
    from .runner import evaluate_model

    if mcnemar not in MCNEMAR_METHODS:
        raise ValueError(f"--mcnemar must be one of {MCNEMAR_METHODS}, got {mcnemar!r}")
    evaluate_kwargs = {**evaluate_kwargs, "bootstrap": bootstrap, "seed": seed, "output_dir": None, "plots": False}
    if str(dataset) == "synthetic":  # both models on model A's faces (its training recipe, or the given overrides)
        from .synthetic import synthetic_render_options

        _, record = synthetic_render_options(str(model_a), split, evaluate_kwargs.get("synthetic"))
        evaluate_kwargs["synthetic"] = {key: record[key] for key in ("image_size", "difficulty", "num_images", "seed")}
        evaluate_kwargs["synthetic"]["_source"] = f"comparison (model A's faces: {record['training_record'] or 'defaults'})"
    results = [evaluate_model(model, dataset, split, **evaluate_kwargs) for model in (model_a, model_b)]
    hashes = [r.info["dataset_fingerprint"]["split_sha256"] for r in results]
    if hashes[0] != hashes[1] or not np.array_equal(results[0].references, results[1].references):
        raise ValueError("the two models were not evaluated on the same images (different split hashes or kept images: "
                         "label mappings or unreadable images differ); a paired comparison needs identical test sets")
    correct = [r.predictions == r.references for r in results]
    test = mcnemar_test(correct[0], correct[1], method=mcnemar)
    both = int(np.sum(correct[0] & correct[1]))
    neither = int(np.sum(~correct[0] & ~correct[1]))
    models = []
    for name, result in zip((model_a, model_b), results):
        models.append({
            "model": str(name),
            "metrics": {key: result.metrics[key] for key in SUMMARY_METRICS},
            "confidence_intervals": result.uncertainty.get("confidence_intervals"),
            "ece": result.uncertainty.get("ece"),
            "protocol": result.info["protocol"],
            "checkpoint": result.info["checkpoint"],
        })
    return {
        "dataset": results[0].info["dataset_name"],
        "split": split,
        "num_samples": int(results[0].references.size),
        "dataset_fingerprint": results[0].info["dataset_fingerprint"],
        "synthetic": results[0].info.get("synthetic"),
        "models": models,
        "accuracy_difference": paired_bootstrap_difference(correct[0], correct[1], num_resamples=bootstrap or 1000, seed=seed),
        "mcnemar": {**test, "both_correct": both, "both_wrong": neither,
                    "a_right_b_wrong": test["b"], "a_wrong_b_right": test["c"]},
    }


def format_comparison(report: dict) -> str:
    lines = [f"{report['num_samples']} images of {report['dataset']} [{report['split']}] (split sha256 "
             f"{report['dataset_fingerprint']['split_sha256'][:12]}), protocol {report['models'][0]['protocol']['name']}"]
    for label, model in zip("AB", report["models"]):
        intervals = model["confidence_intervals"] or {}
        parts = []
        for key, name in (("accuracy", "accuracy"), ("mean_class_accuracy", "mean class acc."), ("macro_f1", "macro-F1")):
            ci = intervals.get(key)
            parts.append(f"{name} {model['metrics'][key] * 100:.2f}" + (f" [{ci['low'] * 100:.2f}, {ci['high'] * 100:.2f}]" if ci else ""))
        lines.append(f"  {label} {model['model']}: " + "; ".join(parts))
    diff = report["accuracy_difference"]
    lines.append(f"  accuracy A - B: {diff['difference'] * 100:+.2f} points, 95 % CI [{diff['low'] * 100:+.2f}, {diff['high'] * 100:+.2f}] "
                 f"(paired bootstrap, {diff['num_resamples']} resamples, seed {diff['seed']})")
    test = report["mcnemar"]
    method = "exact binomial" if test["method"] == "exact" else "chi-square with continuity correction"
    lines.append(f"  McNemar ({method}): A right/B wrong {test['b']}, A wrong/B right {test['c']}, statistic {test['statistic']:.4g}, "
                 f"p = {test['p_value']:.4g}" + (" - the difference is not significant at 5 %" if test["p_value"] >= 0.05 else " - significant at 5 %"))
    return "\n".join(lines)


def build_parser(prog: str = "hf-fer compare") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import compare_parser

    return compare_parser(prog)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = compare_models(args.model_a, args.model_b, args.dataset, args.split, mcnemar=args.mcnemar, bootstrap=args.bootstrap,
                            seed=args.seed, protocol=args.protocol, label_map=args.label_map, batch_size=args.batch_size,
                            device=args.device, max_samples=args.max_samples, trust_remote_code=args.trust_remote_code, progress=False,
                            synthetic={"image_size": args.synthetic_size, "difficulty": args.synthetic_difficulty,
                                       "num_images": args.synthetic_num_images, "seed": args.synthetic_seed})
    print(format_comparison(report))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0

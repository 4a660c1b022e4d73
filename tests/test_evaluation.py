"""Metrics against hand-computed values, plots, and ``hf-fer evaluate`` on tiny saved datasets."""
import json

import numpy as np
import pytest

import test_evaluation_fixtures as fx
from hf_fer.evaluation import compute_metrics, confusion_matrix, normalize_confusion_matrix, plot_confusion_matrix, plot_per_class_accuracy

# 3 classes, 10 samples. Confusion matrix (rows true, columns predicted):
#   [[2, 1, 0],
#    [0, 2, 0],
#    [1, 0, 4]]
REFERENCES = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
PREDICTIONS = [0, 0, 1, 1, 1, 2, 2, 2, 0, 2]


def test_confusion_matrix_counts_and_rows():
    counts = confusion_matrix(REFERENCES, PREDICTIONS, 3)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 4]]
    rates = normalize_confusion_matrix(counts)
    np.testing.assert_allclose(rates[0], [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(rates.sum(axis=1), 1.0)


def test_metrics_match_hand_computed_values():
    metrics = compute_metrics(REFERENCES, PREDICTIONS, label_names=["anger", "happiness", "neutral"])
    assert metrics["accuracy"] == pytest.approx(8 / 10)
    # recall per class: 2/3, 2/2, 4/5
    assert metrics["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 4 / 5) / 3)
    # precision per class: 2/3, 2/3, 4/4 -> F1: 2/3, 0.8, 8/9
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 8 / 9) / 3)
    happiness = metrics["per_class"]["happiness"]
    assert happiness["precision"] == pytest.approx(2 / 3) and happiness["recall"] == pytest.approx(1.0)
    assert happiness["support"] == 2 and happiness["predicted"] == 3
    assert metrics["num_samples"] == 10
    json.dumps(metrics)  # plain Python types only


def test_metrics_with_a_class_absent_from_the_test_data():
    # class 2 never occurs nor is predicted; class 3 never occurs but is predicted once.
    metrics = compute_metrics([0, 1, 1], [0, 1, 3], num_classes=4)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["mean_class_accuracy"] == pytest.approx((1 + 0.5) / 2)  # only classes with samples
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # class 2 left out, class 3 scores 0
    assert metrics["per_class"]["3"]["precision"] == 0.0


@pytest.mark.parametrize(
    "references, predictions, message",
    [([0, 1], [0], "differ in length"), ([0, 5], [0, 1], "0..2"), ([], [], "no samples"), ([[0]], [[0]], "1-D")],
)
def test_metrics_reject_bad_input(references, predictions, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(references, predictions, num_classes=3)


def test_plots_are_png_and_labelled_with_class_names(tmp_path):
    names = ["anger", "happiness", "neutral"]
    metrics = compute_metrics(REFERENCES, PREDICTIONS, label_names=names)
    figure = plot_confusion_matrix(metrics["confusion_matrix"], names)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == names
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == names
    cell_texts = {t.get_text() for t in figure.axes[0].texts}
    assert "0.80\n(4)" in cell_texts  # neutral row: 4 of 5
    plot_confusion_matrix(metrics["confusion_matrix"], names, tmp_path / "cm.png")
    plot_per_class_accuracy(metrics["per_class"], tmp_path / "acc.png", mean_class_accuracy=metrics["mean_class_accuracy"])
    for name in ("cm.png", "acc.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="label names"):
        plot_confusion_matrix(metrics["confusion_matrix"], names[:2])


# ---------------------------------------------------------------------------------------------
# hf-fer evaluate
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
    with fx.toy_architecture() as arch:
        yield arch


def _dataset_with_corrupt_image(label_space: str, num_images: int, corrupt_index: int | None):
    import datasets

    from hf_fer.data.synthetic import make_synthetic_fer

    clean = make_synthetic_fer(num_images, image_size=32, seed=3, label_space=label_space)
    raw = clean.cast_column("image", datasets.Image(decode=False))
    images = list(raw["image"])
    if corrupt_index is not None:
        images[corrupt_index] = {"bytes": b"not an image at all", "path": "broken.png"}
    rebuilt = datasets.Dataset.from_dict({"image": images, "label": raw["label"]}, features=clean.features)
    return clean, datasets.DatasetDict({"test": rebuilt})


def test_evaluate_matches_an_independent_computation(toy, tmp_path):
    from hf_fer.cli import main

    model_dir = fx.save_toy_model(tmp_path / "model", id2label={0: "anger", 1: "happiness", 2: "neutral"})
    clean, dataset = _dataset_with_corrupt_image("raf-db", 24, corrupt_index=5)
    dataset.save_to_disk(str(tmp_path / "data"))

    # Independent: plain transformers on the decoded images, classes matched by hand (RAF-DB order -> toy order).
    names = clean.features["label"].names
    keep = [i for i in range(len(clean)) if i != 5 and names[clean[i]["label"]] in ("anger", "happiness", "neutral")]
    logits = fx.reference_predictions(model_dir, [clean[i]["image"] for i in keep])
    toy_to_dataset = [names.index(n) for n in ("anger", "happiness", "neutral")]
    expected_predictions = [toy_to_dataset[p] for p in logits.argmax(-1).tolist()]
    expected_references = [clean[i]["label"] for i in keep]
    expected_accuracy = np.mean(np.array(expected_predictions) == np.array(expected_references))

    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(tmp_path / "data"), "--batch-size", "7",
                 "--output-dir", str(tmp_path / "eval"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert results["metrics"]["accuracy"] == pytest.approx(expected_accuracy)
    assert results["num_samples"] == len(keep)
    assert results["label_names"] == names  # metrics are reported in the dataset's label space
    assert [s["index"] for s in results["skipped_images"]] == [5]
    assert "cannot decode" in results["skipped_images"][0]["error"]
    mapping = results["label_mapping"]
    assert mapping["identity"] is False
    assert sorted(mapping["dataset_classes_not_in_model"]) == sorted(set(names) - {"anger", "happiness", "neutral"})
    dropped = sum(1 for i in range(len(clean)) if i != 5 and i not in keep)
    assert mapping["unmapped_samples_dropped"] == dropped
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file() and (tmp_path / "eval" / "per_class_accuracy.png").is_file()
    # predictions can only land on classes the model has
    never = [names.index(n) for n in mapping["dataset_classes_not_in_model"]]
    assert all(np.array(results["confusion_matrix"])[:, never].sum(axis=0) == 0)


def test_keep_unmapped_counts_them_as_errors(toy, tmp_path):
    from hf_fer.evaluation import evaluate_model

    model_dir = fx.save_toy_model(tmp_path / "model")
    clean, dataset = _dataset_with_corrupt_image("fer2013", 12, corrupt_index=None)
    result = evaluate_model(model_dir, dataset, keep_unmapped=True, progress=False, batch_size=12)
    assert result.metrics["num_samples"] == 12
    assert result.label_mapping["unmapped_samples_dropped"] == 0


def test_evaluate_strict_label_map_refuses_other_orders(toy, tmp_path):
    from hf_fer.evaluation import evaluate_model

    model_dir = fx.save_toy_model(tmp_path / "model")
    _, dataset = _dataset_with_corrupt_image("fer2013", 4, corrupt_index=None)
    with pytest.raises(ValueError, match="label-map strict"):
        evaluate_model(model_dir, dataset, label_map="strict", progress=False)


def test_evaluate_cli_errors_are_one_line(toy, tmp_path, capsys):
    from hf_fer.cli import main

    assert main(["evaluate", "--model", str(tmp_path / "missing"), "--dataset", "synthetic"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "Traceback" not in err
    assert main(["evaluate", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_local_evaluate_module_works_offline(tmp_path):
    evaluate = pytest.importorskip("evaluate")
    from hf_fer.evaluation import FER_METRIC_PATH

    metric = evaluate.load(FER_METRIC_PATH, cache_dir=str(tmp_path))
    metric.add_batch(predictions=PREDICTIONS[:4], references=REFERENCES[:4])
    metric.add_batch(predictions=PREDICTIONS[4:], references=REFERENCES[4:])
    result = metric.compute(label_names=["anger", "happiness", "neutral"])
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 4 / 5) / 3)
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 4]]
    from hf_fer.evaluation import bootstrap_confidence_intervals

    with_ci = metric.compute(predictions=PREDICTIONS, references=REFERENCES, num_classes=3, bootstrap=200, seed=3)
    assert with_ci["confidence_intervals"] == bootstrap_confidence_intervals(REFERENCES, PREDICTIONS, 3, num_resamples=200, seed=3)

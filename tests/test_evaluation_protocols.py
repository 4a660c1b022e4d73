"""``hf-fer evaluate`` records how a number was made (protocol, TTA row, split and checkpoint hashes, versions),
renders the synthetic faces a model was trained on, fits temperature scaling on validation only, and
``hf-fer compare`` pairs two models; ARM's paper protocol (batches of 64) vs our batch-independent one."""
import hashlib
import json

import numpy as np
import pytest
import torch

import harness
import test_evaluation_fixtures as fx
from hf_fer.labels import get_label_names

RAF = dict(enumerate(get_label_names("raf-db")))


@pytest.fixture(scope="module")
def toy():
    with fx.toy_architecture() as arch:
        yield arch


@pytest.fixture(scope="module")
def faces():
    from hf_fer.data.synthetic import make_synthetic_fer

    return make_synthetic_fer(30, image_size=32, seed=5, label_space="raf-db")


def _save(dataset, path):
    import datasets

    datasets.DatasetDict({"test": dataset}).save_to_disk(str(path))
    return path


def _probabilities(model_dir, images):
    """Softmax of the saved model, the plain transformers way (no hf_fer code), one batch."""
    return torch.softmax(fx.reference_predictions(model_dir, images).double(), dim=-1).numpy()


def test_results_record_protocol_tta_row_and_provenance(toy, faces, tmp_path, capsys):
    from PIL import ImageOps

    from hf_fer.cli import main
    from hf_fer.evaluation import compute_metrics, expected_calibration_error

    model_dir = fx.save_toy_model(tmp_path / "model", id2label=RAF)
    data = _save(faces, tmp_path / "data")
    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(data), "--batch-size", "7", "--tta", "flip",
                 "--output-dir", str(tmp_path / "eval"), "--no-progress", "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())

    images = [faces[i]["image"] for i in range(len(faces))]
    labels = np.array(faces["label"])
    single = _probabilities(model_dir, images)
    flipped = _probabilities(model_dir, [ImageOps.mirror(image) for image in images])
    assert results["metrics"]["accuracy"] == pytest.approx(np.mean(single.argmax(1) == labels))
    assert results["ece"] == pytest.approx(expected_calibration_error(single, labels), abs=1e-6)
    tta_expected = compute_metrics(labels, (0.5 * (single + flipped)).argmax(1), num_classes=7)
    assert results["tta_results"]["metrics"]["accuracy"] == pytest.approx(tta_expected["accuracy"])  # its own row
    assert results["tta"] == "flip" and "flip TTA" in out and "ECE (15 bins)" in out
    ci = results["confidence_intervals"]["accuracy"]
    assert ci["low"] <= results["metrics"]["accuracy"] <= ci["high"] and results["confidence_intervals"]["num_resamples"] == 200

    assert results["protocol"]["name"] == "hf_fer" and results["protocol"]["batch_independent"] is True
    weights = (model_dir / "model.safetensors").read_bytes()
    assert results["checkpoint"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert results["package_versions"]["torch"] == torch.__version__ and results["package_versions"]["scikit-learn"]
    assert results["alignment"]["processor"]["size"] == {"height": 32, "width": 32}
    assert (tmp_path / "eval" / "reliability_diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the split hash identifies the images: the same data gives the same hash, one changed image another
    from hf_fer.evaluation import evaluate_model

    same = evaluate_model(model_dir, str(data), bootstrap=0, progress=False)
    assert same.info["dataset_fingerprint"]["split_sha256"] == results["dataset_fingerprint"]["split_sha256"]
    images_changed = images[:29] + [images[0]]  # the last face replaced, labels unchanged
    changed = type(faces).from_dict({"image": images_changed, "label": faces["label"]}, features=faces.features)
    other = evaluate_model(model_dir, changed, bootstrap=0, progress=False)
    assert other.info["dataset_fingerprint"]["split_sha256"] != results["dataset_fingerprint"]["split_sha256"]
    with pytest.raises(ValueError, match="not part of the paper protocol"):
        evaluate_model(model_dir, faces, protocol="paper", tta="flip", progress=False)


def test_synthetic_renders_the_training_faces_and_says_so(toy, tmp_path, capsys):
    from hf_fer.data.synthetic import make_synthetic_fer
    from hf_fer.evaluation import evaluate_model

    model_dir = fx.save_toy_model(tmp_path / "model", id2label=RAF)
    recipe = {"data": {"synthetic": {"num_train": 10, "num_validation": 6, "num_test": 9, "image_size": 40, "seed": 4, "difficulty": "easy"}}}
    (model_dir / "training_info.json").write_text(json.dumps({"dataset": "synthetic", "recipe_values": recipe}))
    result = evaluate_model(model_dir, "synthetic", bootstrap=0, progress=False)
    rendered = result.info["synthetic"]
    assert (rendered["num_images"], rendered["image_size"], rendered["difficulty"], rendered["render_seed"]) == (9, 40, "easy", 4 + 2000)
    assert rendered["sources"]["image_size"] == "training_info.json"
    assert "rendering 9 40-px 'easy' faces" in capsys.readouterr().err
    # exactly the recipe's held-out faces: the split test of the training run (seed + 2000)
    expected = make_synthetic_fer(9, image_size=40, seed=4 + 2000, label_space="raf-db", difficulty="easy")
    assert result.references.tolist() == expected["label"]
    assert np.allclose(result.probabilities, _probabilities(model_dir, expected["image"]), atol=1e-5)

    overridden = evaluate_model(model_dir, "synthetic", bootstrap=0, progress=False, synthetic={"image_size": 32, "difficulty": "standard"})
    assert (overridden.info["synthetic"]["image_size"], overridden.info["synthetic"]["difficulty"]) == (32, "standard")
    assert overridden.info["synthetic"]["sources"]["difficulty"] == "command line"


def test_fit_temperature_on_validation_then_report_calibrated_ece(toy, tmp_path, capsys):
    from transformers import AutoConfig

    from hf_fer.cli import main
    from hf_fer.evaluation import fit_temperature_on_split

    model_dir = fx.save_toy_model(tmp_path / "model", id2label=RAF)
    recipe = {"data": {"synthetic": {"num_validation": 40, "num_test": 12, "image_size": 32, "seed": 0}}}
    (model_dir / "training_info.json").write_text(json.dumps({"dataset": "synthetic", "recipe_values": recipe}))
    with pytest.raises(ValueError, match="not on the test split"):
        fit_temperature_on_split(model_dir, "synthetic", "test")
    assert main(["evaluate", "--model", str(model_dir), "--dataset", "synthetic", "--fit-temperature", "--no-progress", "--bootstrap", "0",
                 "--output-dir", str(tmp_path / "eval")]) == 0
    assert "temperature scaling: T =" in capsys.readouterr().out
    stored = AutoConfig.from_pretrained(model_dir).temperature_scaling
    assert stored["fitted_on"]["split"] == "validation" and stored["temperature"] > 0 and stored["num_samples"] == 40
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert results["temperature_scaled"]["temperature"] == pytest.approx(stored["temperature"])


def test_compare_two_models_with_mcnemar(toy, faces, tmp_path, capsys):
    from scipy.stats import binomtest

    from hf_fer.cli import main

    model_a = fx.save_toy_model(tmp_path / "a", id2label=RAF, seed=0)
    model_b = fx.save_toy_model(tmp_path / "b", id2label=RAF, seed=1)
    data = _save(faces, tmp_path / "data")
    assert main(["compare", str(model_a), str(model_b), "--dataset", str(data), "--bootstrap", "200",
                 "--output", str(tmp_path / "compare.json")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "compare.json").read_text())
    labels = np.array(faces["label"])
    right_a = _probabilities(model_a, faces["image"]).argmax(1) == labels
    right_b = _probabilities(model_b, faces["image"]).argmax(1) == labels
    b, c = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    assert (report["mcnemar"]["b"], report["mcnemar"]["c"]) == (b, c)
    expected_p = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
    assert report["mcnemar"]["p_value"] == pytest.approx(expected_p)
    assert report["accuracy_difference"]["difference"] == pytest.approx(right_a.mean() - right_b.mean())
    assert "McNemar (exact binomial)" in out and "95 % CI" in out
    assert [m["metrics"]["accuracy"] for m in report["models"]] == pytest.approx([right_a.mean(), right_b.mean()])


# ------------------------------------------------------------------------------ ARM: paper vs hf_fer protocol


@pytest.fixture(scope="module")
def converted_arm(tmp_path_factory):
    """The ARM parity fixture as upstream saved it, converted with the CLI (affinity_mode="batch", 224 px)."""
    folder = tmp_path_factory.mktemp("arm")
    state_dict = harness.load_fixture_state_dict("arm")
    torch.save({"iter": 59, "model_state_dict": state_dict}, folder / "arm.pth")
    return harness.convert_with_cli("arm", folder / "arm.pth", folder / "converted", ["--dataset", "raf-db"])


def _softmax_references(model_dir, images, chunk):
    """Independent references with plain transformers: consecutive batches of ``chunk`` images, and each image alone."""
    import hf_fer  # noqa: F401
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    assert model.config.affinity_mode == "batch"
    pixel_values = AutoImageProcessor.from_pretrained(model_dir)(images=list(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        batched = torch.cat([model(pixel_values=pixel_values[i:i + chunk]).logits for i in range(0, len(pixel_values), chunk)])
        alone = torch.cat([model(pixel_values=pixel_values[i:i + 1]).logits for i in range(len(pixel_values))])
    return torch.softmax(batched.double(), -1).numpy(), torch.softmax(alone.double(), -1).numpy()


def test_converted_arm_paper_protocol_is_upstreams_batch_and_hf_fer_is_batch_independent(converted_arm, tmp_path):
    from hf_fer.data.synthetic import make_synthetic_fer
    from hf_fer.evaluation import evaluate_model
    from hf_fer.evaluation.runner import _format_summary

    faces = make_synthetic_fer(9, image_size=32, seed=11, label_space="raf-db")
    upstream, alone = _softmax_references(converted_arm, faces["image"], 64)
    paper = evaluate_model(converted_arm, faces, protocol="paper", batch_size=4, bootstrap=0, progress=False)
    summary = _format_summary(paper)
    assert "protocol paper: 64 image(s) per forward call (scores depend on the batch, as upstream)" in summary
    assert "batch size 64 as upstream (--batch-size 4 ignored)" in summary
    assert paper.info["protocol"]["forward_batch_size"] == 64 and paper.info["protocol"]["batch_independent"] is False
    np.testing.assert_allclose(paper.probabilities, upstream, atol=1e-5)
    ours = evaluate_model(converted_arm, faces, protocol="hf_fer", batch_size=4, bootstrap=0, progress=False)
    np.testing.assert_allclose(ours.probabilities, alone, atol=1e-5)  # same image -> same scores, whatever the batch
    assert ours.info["protocol"]["forward_batch_size"] == 1 and "each image is run alone" in ours.info["protocol"]["notes"][0]
    assert np.abs(paper.probabilities - ours.probabilities).max() > 1e-3  # the two protocols really differ here


def test_arm_paper_protocol_runs_consecutive_batches_of_64(tmp_path, capsys):
    """66 faces = a batch of 64 then one of 2 (upstream's file-order batches); a tiny batch-mode ARM keeps it fast."""
    from test_arm import tiny_config, tiny_processor

    from hf_fer.cli import main
    from hf_fer.conversion import save_with_remote_code
    from hf_fer.data.synthetic import make_synthetic_fer
    from hf_fer.evaluation import evaluate_model
    from hf_fer.models.arm import ArmForImageClassification

    torch.manual_seed(0)
    model = ArmForImageClassification(tiny_config(alpha_init=1.0, affinity_mode="batch")).eval()
    save_with_remote_code(model, tiny_processor(), tmp_path / "arm")
    faces = make_synthetic_fer(66, image_size=64, seed=2, label_space="raf-db")
    upstream, alone = _softmax_references(tmp_path / "arm", faces["image"], 64)
    data = _save(faces, tmp_path / "data")
    assert main(["evaluate", "--model", str(tmp_path / "arm"), "--dataset", str(data), "--protocol", "paper", "--no-progress",
                 "--no-plots", "--bootstrap", "0", "--output-dir", str(tmp_path / "eval")]) == 0
    assert "protocol paper: 64 image(s) per forward call" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval" / "eval_results.json").read_text())["protocol"]["name"] == "paper"
    paper = evaluate_model(tmp_path / "arm", str(data), protocol="paper", bootstrap=0, progress=False)
    np.testing.assert_allclose(paper.probabilities, upstream, atol=1e-5)
    for size in (5, 66):
        np.testing.assert_allclose(evaluate_model(tmp_path / "arm", str(data), batch_size=size, bootstrap=0, progress=False).probabilities,
                                   alone, atol=1e-5)

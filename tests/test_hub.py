"""Model cards (metadata validity, numbers from eval_results.json, never invented) and ``hf-fer push --to-folder``."""
import json
import re

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData

import test_evaluation_fixtures as fx
from hf_fer.hub import prepare_upload_folder, push_to_hub, render_model_card, weights_license
from hf_fer.hub.model_card import find_template
from hf_fer.models import ARCHITECTURES

EVAL_RESULTS = {
    "dataset_name": "RAF-DB",
    "benchmark": "raf-db",
    "split": "test",
    "num_samples": 3068,
    "metrics": {"accuracy": 0.912345, "mean_class_accuracy": 0.854321, "macro_f1": 0.861111},
    "per_class": {"surprise": {"precision": 0.9, "recall": 0.8, "f1": 0.847, "support": 329, "predicted": 300}},
    "label_mapping": {"identity": True},
    "files": {"confusion_matrix": "confusion_matrix.png"},
}


def _metadata(readme: str) -> dict:
    return yaml.safe_load(readme.split("---")[1])


def _write_model_folder(folder, arch="arm", id2label=None):
    """config.json + preprocessor_config.json are all the card needs (no weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    id2label = id2label or {"0": "surprise", "1": "fear", "2": "disgust", "3": "happiness", "4": "sadness", "5": "anger", "6": "neutral"}
    (folder / "config.json").write_text(json.dumps({"model_type": arch, "id2label": id2label}))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ArmImageProcessor", "size": {"height": 224, "width": 224}, "resample": 2,
        "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "do_rescale": True,
    }))
    return folder


def test_card_carries_the_evaluation_numbers_and_round_trips(tmp_path):
    folder = _write_model_folder(tmp_path / "model")
    card, license_info = render_model_card(folder, eval_results=[EVAL_RESULTS], repo_id="org/arm-rafdb", training_dataset="raf-db", commit="abc123")
    card.save(tmp_path / "README.md")

    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert ModelCardData(**data).to_dict() == data  # metadata round-trips through huggingface_hub
    assert data == card.data.to_dict()
    values = {(r.metric_type, r.dataset_type, r.dataset_split): r.metric_value for r in loaded.data.eval_results}
    assert values == {("accuracy", "raf-db", "test"): 0.9123, ("balanced_accuracy", "raf-db", "test"): 0.8543, ("f1", "raf-db", "test"): 0.8611}
    assert data["license"] == "other" and data["license_name"] == "raf-db-research-only" and license_info["license"] == "other"
    assert data["pipeline_tag"] == "image-classification" and data["library_name"] == "transformers"

    text = loaded.text
    assert "| RAF-DB | test | – | single | 3068 | 91.23 | – | 85.43 | 86.11 | – |" in text
    assert "| RAF-DB | 92.05 | arXiv 2103.10189 v2" in text  # paper next to reproduced
    assert "![Confusion matrix on RAF-DB test](confusion_matrix.png)" in text
    assert "| 0 | surprise |" in text and "| 6 | neutral |" in text  # label order table
    assert "@article{shi2021arm" in text and "92.05" in text  # citation and the paper's (labelled) numbers
    assert "consent" in text.lower() and "bias" in text.lower()
    assert "`abc123`" in text and 'pipeline("image-classification", model="org/arm-rafdb", trust_remote_code=True)' in text


def test_no_results_means_no_model_index(tmp_path):
    folder = _write_model_folder(tmp_path / "model")
    card, _ = render_model_card(folder, eval_results=[], training_dataset="synthetic")
    assert "model-index" not in _metadata(str(card))
    assert card.data.eval_results is None
    assert "No evaluation results are attached" in card.text
    assert card.data.license == "apache-2.0"


def test_results_file_must_hold_the_metrics(tmp_path):
    folder = _write_model_folder(tmp_path / "model")
    bad = tmp_path / "eval_results.json"
    bad.write_text(json.dumps({"dataset_name": "x", "split": "test", "metrics": {"accuracy": 0.5}}))
    with pytest.raises(ValueError, match="metrics.mean_class_accuracy"):
        render_model_card(folder, eval_results=[bad])


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_template_renders_valid_metadata(arch, tmp_path):
    template = find_template(arch)
    assert template.name == f"{arch}.md" and template.parent.name == "templates"
    assert template == ARCHITECTURES[arch].card_template and ARCHITECTURES[arch].card is not None
    folder = _write_model_folder(tmp_path / arch, arch=arch)
    card, _ = render_model_card(folder, eval_results=[EVAL_RESULTS], training_dataset="raf-db", commit="abc")
    data = ModelCard(str(card)).data.to_dict()
    assert ModelCardData(**data).to_dict() == data
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.9123
    assert "```bibtex" in card.text and "## Intended use and limitations" in card.text
    assert not re.search(r"\{\{ *\w+ *\}\}|\{%", card.text), "unrendered template syntax in the card"


def test_weights_licence_follows_the_data():
    assert weights_license("poster_v2", "affectnet-8", converted=True)["license_name"] == "affectnet-research-only"
    assert weights_license("dacl", None, converted=True)["license_name"] == "upstream-unlicensed"
    assert weights_license("arm", "synthetic", converted=False)["license"] == "apache-2.0"
    assert weights_license("arm", None, converted=False)["license_name"] == "unknown-training-data"


@pytest.fixture(scope="module")
def toy():
    with fx.toy_architecture() as arch:
        yield arch


def test_to_folder_writes_exactly_the_upload(toy, tmp_path):
    model_dir = fx.save_toy_model(tmp_path / "model")
    (model_dir / "pytorch_model.bin").write_bytes(b"pickle")  # never published
    (model_dir / "checkpoints").mkdir()
    (model_dir / "training_info.json").write_text(json.dumps({"dataset": "synthetic", "epochs": 2, "seed": 0}))
    (model_dir / "eval_results.json").write_text(json.dumps({**EVAL_RESULTS, "dataset_name": "synthetic", "benchmark": "synthetic"}))
    (model_dir / "confusion_matrix.png").write_bytes(b"\x89PNG\r\n\x1a\n")

    result = prepare_upload_folder(model_dir, tmp_path / "upload", repo_id="me/toy")
    assert result.files == sorted([
        "README.md", "config.json", "model.safetensors", "preprocessor_config.json", "configuration_toy.py",
        "modeling_toy.py", "layers_toy.py", "image_processing_toy.py", "training_info.json", "eval_results.json",
        "confusion_matrix.png", ".eval_results/synthetic-test-reproduced-unrecorded-protocol.yaml",
    ])
    assert any("pytorch_model.bin" in note for note in result.skipped) and any("checkpoints/" in note for note in result.skipped)
    readme = (tmp_path / "upload" / "README.md").read_text()
    assert "training record `training_info.json`: dataset=synthetic, epochs=2, seed=0" in readme
    assert _metadata(readme)["license"] == "apache-2.0"  # trained on synthetic faces only
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_upload_folder(model_dir, tmp_path / "upload")


def test_folder_without_auto_map_gets_its_remote_code(toy, tmp_path):
    model, processor = fx.make_toy_model()
    model.save_pretrained(tmp_path / "plain")  # no register_for_auto_class: no auto_map, no .py files
    processor.save_pretrained(tmp_path / "plain")
    result = prepare_upload_folder(tmp_path / "plain", tmp_path / "upload", training_dataset="raf-db")
    config = json.loads((tmp_path / "upload" / "config.json").read_text())
    assert "AutoModelForImageClassification" in config["auto_map"]
    assert "modeling_toy.py" in result.files and "LICENSE" in result.files
    assert "research use only" in (tmp_path / "upload" / "LICENSE").read_text()


def test_push_uploads_the_prepared_folder(toy, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class Repo:
        repo_id = "me/toy"

    def fake_create_repo(repo_id, private=False, exist_ok=False, token=None):
        calls["create"] = (repo_id, private, exist_ok)
        return Repo()

    def fake_upload_folder(repo_id, folder_path, **kwargs):
        from pathlib import Path

        calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
        return "https://huggingface.co/me/toy/commit/1"

    monkeypatch.setattr(huggingface_hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", fake_upload_folder)
    model_dir = fx.save_toy_model(tmp_path / "model")
    result = push_to_hub(model_dir, "me/toy", private=True)
    assert calls["create"] == ("me/toy", True, True)
    assert "README.md" in calls["files"] and "model.safetensors" in calls["files"] and "modeling_toy.py" in calls["files"]
    assert result.url.endswith("/commit/1")


def test_push_cli_errors_are_one_line(toy, tmp_path, capsys):
    from hf_fer.cli import main

    assert main(["push", "--model", str(tmp_path / "nope"), "--repo-id", "me/x", "--to-folder", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main(["push", "--model", str(tmp_path), "--repo-id", "not a repo id!", "--to-folder", str(tmp_path / "o")]) == 1
    assert "repository id" in capsys.readouterr().err
    assert main(["push", "--help"]) == 0 and "--to-folder" in capsys.readouterr().out


def test_converted_checkpoint_is_described_and_licensed_by_its_upstream(tmp_path):
    folder = _write_model_folder(tmp_path / "dacl", arch="dacl")
    config = json.loads((folder / "config.json").read_text())
    config["hf_fer_converted_from"] = {"arch": "dacl", "checkpoint": "dacl_rafdb_best.pth"}  # the converter's record
    (folder / "config.json").write_text(json.dumps(config))
    card, license_info = render_model_card(folder, eval_results=[])
    assert "converted from the upstream checkpoint `dacl_rafdb_best.pth`" in card.text
    assert license_info["license_name"] == "upstream-unlicensed"
    assert "no licence (all rights reserved by the authors)" in card.text


# ---------------------------------------------------------------------------------------------
# Hub metadata people and tools read: base_model, datasets, model-index and .eval_results/*.yaml
# ---------------------------------------------------------------------------------------------

FULL_RESULTS = {
    **EVAL_RESULTS,
    "dataset": "data/rafdb",
    "date": "2026-11-29T19:00:00+00:00",
    "protocol": {"name": "paper", "forward_batch_size": 64, "batch_independent": False, "notes": []},
    "tta": "flip",
    "confidence_intervals": {"accuracy": {"low": 0.902, "high": 0.922}, "mean_class_accuracy": {"low": 0.84, "high": 0.87},
                             "macro_f1": {"low": 0.85, "high": 0.872}, "confidence": 0.95, "num_resamples": 1000, "seed": 0},
    "ece": 0.0412,
    "tta_results": {"mode": "flip", "metrics": {"accuracy": 0.9201, "mean_class_accuracy": 0.86, "macro_f1": 0.87},
                    "confidence_intervals": {"accuracy": {"low": 0.91, "high": 0.93}}, "ece": 0.05},
    "dataset_fingerprint": {"split_sha256": "ab" * 32},
    "checkpoint": {"sha256": "cd" * 32},
}


def test_pushed_folder_has_hub_metadata_and_eval_results_files(toy, tmp_path):
    from huggingface_hub import parse_eval_result_entries

    model_dir = fx.save_toy_model(tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    config.update(model_type="arm", hf_fer_converted_from={"arch": "arm", "checkpoint": "epoch59_acc0.9205.pth"})  # an ARM conversion
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "eval_results.json").write_text(json.dumps(FULL_RESULTS))
    prepare_upload_folder(model_dir, tmp_path / "upload", repo_id="me/arm-rafdb", training_dataset="raf-db",
                          base_model="someone/arm-upstream-mirror", base_model_relation="quantized")

    card = ModelCard.load(tmp_path / "upload" / "README.md")
    data = card.data.to_dict()
    assert ModelCardData(**data).to_dict() == data
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert data["base_model"] == "someone/arm-upstream-mirror" and data["base_model_relation"] == "quantized"
    assert data["datasets"] == ["raf-db"] and data["license"] == "other"
    index = data["model-index"][0]["results"][0]
    assert index["dataset"]["type"] == "raf-db" and index["metrics"][0] == {"type": "accuracy", "value": 0.9123, "name": "Accuracy"}
    # results table: single view and the TTA row apart; paper next to reproduced
    assert "| RAF-DB | test | paper | single | 3068 | 91.23 | 90.20–92.20 | 85.43 | 86.11 | 4.12 |" in card.text
    assert "| RAF-DB | test | paper | flip TTA | 3068 | 92.01 | 91.00–93.00 |" in card.text
    assert "| RAF-DB | 92.05 | arXiv 2103.10189 v2" in card.text and "| 91.23 | 90.20–92.20 | paper |" in card.text

    files = sorted(p.name for p in (tmp_path / "upload" / ".eval_results").iterdir())
    assert files == ["raf-db-test-paper-reported.yaml", "raf-db-test-reproduced-paper-tta-flip.yaml", "raf-db-test-reproduced-paper.yaml"]
    reproduced = parse_eval_result_entries(yaml.safe_load((tmp_path / "upload" / ".eval_results" / "raf-db-test-reproduced-paper.yaml").read_text()))
    assert {(e.dataset_id, e.task_id, e.value) for e in reproduced} >= {("raf-db", "accuracy", 91.23), ("raf-db", "macro_f1", 86.11)}
    assert all(e.source_name == "reproduced by hf_fer" and e.source_url == "https://huggingface.co/me/arm-rafdb/blob/main/eval_results.json"
               and e.date == "2026-11-29T19:00:00+00:00" for e in reproduced)
    tta = parse_eval_result_entries(yaml.safe_load((tmp_path / "upload" / ".eval_results" / "raf-db-test-reproduced-paper-tta-flip.yaml").read_text()))
    assert {e.task_id: e.value for e in tta}["accuracy"] == 92.01 and all("flip TTA" in e.notes for e in tta)


def test_paper_numbers_are_marked_as_the_papers(tmp_path):
    from huggingface_hub import parse_eval_result_entries

    from hf_fer.hub import eval_results_files

    files = eval_results_files([{**FULL_RESULTS, "tta_results": None}], "arm", repo_id="me/arm")
    paper = parse_eval_result_entries(files["raf-db-test-paper-reported.yaml"])
    assert len(paper) == 1 and paper[0].value == 92.05 and paper[0].source_name == "paper"
    assert paper[0].source_url == "https://arxiv.org/abs/2103.10189" and paper[0].date == "2021-06"
    assert sorted(files) == ["raf-db-test-paper-reported.yaml", "raf-db-test-reproduced-paper.yaml"]
    # a benchmark with no paper number (synthetic faces) gets only the reproduced file
    synthetic = eval_results_files([{**FULL_RESULTS, "benchmark": "synthetic", "dataset_name": "synthetic", "tta_results": None}], "arm")
    assert list(synthetic) == ["synthetic-test-reproduced-paper.yaml"]
    assert all(e.source_name is None and "reproduced by hf_fer" in e.notes
               for e in parse_eval_result_entries(synthetic["synthetic-test-reproduced-paper.yaml"]))


def test_fine_tune_gets_base_model_from_its_recipe(toy, tmp_path):
    model_dir = fx.save_toy_model(tmp_path / "model")
    (model_dir / "training_info.json").write_text(json.dumps({"dataset": "synthetic", "recipe_values": {"model": {"init_from": "org/base-fer"}}}))
    card, _ = render_model_card(model_dir, eval_results=[], training_dataset="synthetic")
    assert card.data.base_model == "org/base-fer" and card.data.to_dict()["base_model_relation"] == "finetune"
    assert "fine-tuned from: `org/base-fer`" in card.text
    with pytest.raises(ValueError, match="base-model-relation"):
        render_model_card(model_dir, eval_results=[], base_model="a/b", base_model_relation="cousin")


def test_results_of_other_weights_or_another_architecture_are_never_published(toy, tmp_path):
    """An ``eval_results.json`` left in a folder that was converted or trained again describes other weights: the
    card would publish one model's numbers under another (its checkpoint hash and model_type say so)."""
    from hf_fer.evaluation.provenance import checkpoint_hashes

    model_dir = fx.save_toy_model(tmp_path / "model")
    own = checkpoint_hashes(str(model_dir))
    model_type = json.loads((model_dir / "config.json").read_text())["model_type"]
    results = {**EVAL_RESULTS, "dataset_name": "synthetic", "benchmark": "synthetic", "model_type": model_type}
    (model_dir / "eval_results.json").write_text(json.dumps({**results, "checkpoint": own}))
    prepare_upload_folder(model_dir, tmp_path / "ok", repo_id="me/toy")  # its own results: published
    stale = {"files": {"model.safetensors": "597bba8e" + "0" * 56}, "sha256": "597bba8e" + "0" * 56}
    (model_dir / "eval_results.json").write_text(json.dumps({**results, "checkpoint": stale}))
    with pytest.raises(ValueError, match="measured on other weights .*597bba8e0000.*run `hf-fer evaluate` on this model"):
        prepare_upload_folder(model_dir, tmp_path / "stale", repo_id="me/toy")
    (model_dir / "eval_results.json").write_text(json.dumps({**results, "model_type": "mini_xception", "checkpoint": own}))
    with pytest.raises(ValueError, match="measured on a 'mini_xception' model"):
        prepare_upload_folder(model_dir, tmp_path / "other_arch", repo_id="me/toy")
    assert not (tmp_path / "stale").exists() and not (tmp_path / "other_arch").exists()  # refused before writing


def test_a_base_model_relation_needs_its_base_model(tmp_path):
    """It was silently dropped from the card."""
    model_dir = _write_model_folder(tmp_path / "model")
    with pytest.raises(ValueError, match="--base-model-relation quantized needs --base-model"):
        prepare_upload_folder(model_dir, tmp_path / "upload", base_model_relation="quantized")

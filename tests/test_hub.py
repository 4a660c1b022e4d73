"""Model cards (metadata validity, numbers from eval_results.json, never invented) and ``hf-fer push --to-folder``."""
import json
import re

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData

import test_evaluation_fixtures as fx
from hf_fer.hub import ARCH_CARD_INFO, prepare_upload_folder, push_to_hub, render_model_card, weights_license
from hf_fer.hub.model_card import find_template

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
    assert "| RAF-DB | test | 3068 | 91.23 | 85.43 | 86.11 |" in text
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


@pytest.mark.parametrize("arch", sorted(ARCH_CARD_INFO))
def test_every_architecture_template_renders_valid_metadata(arch, tmp_path):
    template = find_template(arch)
    assert template.name == f"{arch}.md" and template.parent.name == "model_cards"
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
        "confusion_matrix.png",
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
    (folder / "conversion_info.json").write_text(json.dumps({"checkpoint": "dacl_rafdb_best.pth"}))
    card, license_info = render_model_card(folder, eval_results=[])
    assert "converted from the upstream checkpoint `dacl_rafdb_best.pth`" in card.text
    assert license_info["license_name"] == "upstream-unlicensed"
    assert "no licence (all rights reserved by the authors)" in card.text

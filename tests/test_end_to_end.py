"""The whole user path on CPU in one test.

synthetic faces → train a tiny ARM (``hf_fer.training.train``) → ``hf-fer evaluate`` → model card →
``hf-fer push --to-folder`` → load the folder with ``trust_remote_code=True`` in a Python where hf_fer
cannot be imported, and run ``pipeline("image-classification")`` there → ``hf-fer predict`` on a folder
that contains one corrupt file.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData

import test_evaluation_fixtures as fx

REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_fer"] = None  # `import hf_fer` fails: only the folder's own code can be used
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
    folder, image_path = sys.argv[1:3]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    image = Image.open(image_path).convert("RGB")
    with torch.no_grad():
        logits = model(**processor(images=[image], return_tensors="pt")).logits
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    predictions = classifier(image, top_k=3)
    print("RESULT" + json.dumps({"logits": logits[0].tolist(), "pipeline": predictions, "class": type(model).__name__}))
    """
)


def _tiny_arm_recipe():
    from hf_fer.training import recipe_from_dict

    return recipe_from_dict({
        "description": "end-to-end test: a tiny ARM on synthetic faces",
        "model": {"arch": "arm", "label_space": "raf-db", "config": {"image_size": 64, "backbone_depths": [1, 1, 1, 1]},
                  "image_processor": {"size": {"height": 64, "width": 64}}},
        "data": {"synthetic": {"num_train": 48, "num_validation": 16, "num_test": 0, "image_size": 64, "seed": 0, "label_space": "raf-db"}},
        "training": {"seed": 0, "epochs": 1, "max_steps": 3, "batch_size": 16, "eval_batch_size": 16,
                     "optimizer": {"name": "adam", "lr": 1.0e-3}},
    })


def test_synthetic_to_hub_folder_to_pipeline_and_predict(tmp_path, capsys):
    pytest.importorskip("hf_fer.models.arm")
    from hf_fer.cli import main
    from hf_fer.data.synthetic import make_synthetic_fer
    from hf_fer.training import train

    # 1. train (tiny): the model folder has weights, configs, remote code and training records
    model_dir = tmp_path / "run"
    train(_tiny_arm_recipe(), "synthetic", model_dir, quiet=True)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "training_info.json"} <= {p.name for p in model_dir.iterdir()}

    # 2. evaluate on held-out synthetic faces (new identities), through the command line
    test_set = make_synthetic_fer(21, image_size=64, seed=99, label_space="raf-db")
    test_set.save_to_disk(str(tmp_path / "test_data"))
    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(tmp_path / "test_data"), "--split", "train",
                 "--dataset-name", "synthetic faces", "--benchmark", "synthetic", "--batch-size", "8", "--no-progress"]) == 0
    results = json.loads((model_dir / "eval_results.json").read_text())
    assert results["num_samples"] == 21 and results["label_mapping"]["identity"] is True

    # 3-4. card + push to a local folder
    upload = tmp_path / "upload"
    assert main(["push", "--model", str(model_dir), "--repo-id", "hf-fer-tests/arm-synthetic", "--to-folder", str(upload)]) == 0
    files = {p.name for p in upload.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "eval_results.json",
            "confusion_matrix.png", "training_info.json", "configuration_arm.py", "modeling_arm.py", "image_processing_arm.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    card = ModelCard.load(upload / "README.md")
    data = card.data.to_dict()
    assert ModelCardData(**data).to_dict() == data
    card_values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert card_values == {"accuracy": round(results["metrics"]["accuracy"], 4),
                           "balanced_accuracy": round(results["metrics"]["mean_class_accuracy"], 4),
                           "f1": round(results["metrics"]["macro_f1"], 4)}
    assert f"| {100 * results['metrics']['accuracy']:.2f} |" in card.text
    assert data["license"] == "apache-2.0"  # synthetic training data only
    assert "@article{shi2021arm" in card.text
    assert "training record `training_info.json`: dataset=synthetic, model.arch=arm, training.epochs=1, training.max_steps=3" in card.text

    # 5. load back without hf_fer (remote code), logits identical to the trained model, pipeline gives names
    image_path = tmp_path / "face.png"
    test_set[0]["image"].save(image_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    completed = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(upload), str(image_path)], capture_output=True,
                               text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    remote = json.loads(completed.stdout.split("RESULT", 1)[1])
    assert remote["class"] == "ArmForImageClassification"
    local = fx.reference_predictions(model_dir, [test_set[0]["image"]])[0]
    torch.testing.assert_close(torch.tensor(remote["logits"]), local, atol=1e-5, rtol=1e-5)
    names = set(json.loads((upload / "config.json").read_text())["id2label"].values())
    assert len(remote["pipeline"]) == 3 and all(p["label"] in names for p in remote["pipeline"])
    assert remote["pipeline"][0]["label"] == json.loads((upload / "config.json").read_text())["id2label"][str(int(local.argmax()))]

    # 6. hf-fer predict on a folder with one corrupt file: the good ones are classified, the bad one reported
    faces = tmp_path / "faces"
    faces.mkdir()
    for index in range(3):
        test_set[index]["image"].save(faces / f"{index}.png")
    fx.write_corrupt_image(faces / "1_corrupt.jpg")
    capsys.readouterr()
    assert main(["predict", "--model", str(upload), str(faces), "--no-detect", "--json"]) == 0  # synthetic crops: no detection
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert sum(len(line.get("faces", [])) == 1 for line in lines) == 3 and sum("error" in line for line in lines) == 1
    assert "1_corrupt.jpg" in captured.err

"""The README's ``transformers.Trainer`` example, run verbatim on synthetic faces; its output folder (and the
checkpoint Trainer wrote) then load in a Python where ``import hf_fer`` is impossible, with trust_remote_code=True."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in the output's parent folder after the example: logits of fixed inputs from the trained model, for the check below.
REFERENCE = """
import json, torch
torch.manual_seed(0)
pixel_values = torch.randn(3, 1, 64, 64)
trainer.model.eval()
with torch.no_grad():
    logits = trainer.model(pixel_values=pixel_values).logits
json.dump({"pixel_values": pixel_values.tolist(), "logits": logits.tolist()}, open("reference.json", "w"))
"""

# A Python where hf_fer cannot be imported: a meta-path finder refuses it before any other finder looks.
WITHOUT_HF_FER = r"""
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_fer" or name.startswith("hf_fer."):
            raise ImportError(f"hf_fer is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, Blocked())
try:
    import hf_fer  # noqa: F401
    raise SystemExit("hf_fer was importable")
except ImportError:
    pass

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

reference = json.load(open("reference.json"))
results = {}
for folder in sys.argv[1:]:
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        logits = model(pixel_values=torch.tensor(reference["pixel_values"])).logits
    pixel_values = processor(Image.new("RGB", (90, 120), (200, 150, 100)), return_tensors="pt")["pixel_values"]
    results[folder] = {"max_diff": float((logits - torch.tensor(reference["logits"])).abs().max()),
                       "model_class": type(model).__name__, "model_module": type(model).__module__,
                       "processor_class": type(processor).__name__, "pixel_shape": list(pixel_values.shape),
                       "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
                       "hf_fer_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "hf_fer")}
print(json.dumps(results))
"""


def readme_trainer_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Training with `transformers.Trainer`", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_readme_trainer_example_loads_without_hf_fer(tmp_path):
    code = readme_trainer_example()
    assert "save_for_hub(" in code and "image_processor_for(" in code
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false")
    run = subprocess.run([sys.executable, "-c", code + REFERENCE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]

    output = tmp_path / "runs" / "trainer-mini"
    checkpoint = output / "checkpoint-16"
    for folder in (output, checkpoint):
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_mini_xception.MiniXceptionForImageClassification", folder
        assert (folder / "modeling_mini_xception.py").is_file() and (folder / "preprocessor_config.json").is_file()
        assert "auto_map" in json.loads((folder / "preprocessor_config.json").read_text())
        assert not list(folder.glob(".save_for_hub.*"))  # the staging folder is gone

    # Blocked hf_fer: the package's own src/ must not be reachable through PYTHONPATH either.
    blocked_env = dict(env, PYTHONPATH="")
    load = subprocess.run([sys.executable, "-c", WITHOUT_HF_FER, str(output), str(checkpoint)], cwd=tmp_path, env=blocked_env,
                          capture_output=True, text=True, timeout=300)
    assert load.returncode == 0, load.stdout[-2000:] + load.stderr[-4000:]
    results = json.loads(load.stdout.strip().splitlines()[-1])
    for folder, result in results.items():
        assert result["hf_fer_loaded"] == [], folder
        assert result["model_class"] == "MiniXceptionForImageClassification" and not result["model_module"].startswith("hf_fer")
        assert result["processor_class"] == "MiniXceptionImageProcessor" and result["pixel_shape"] == [1, 1, 64, 64]
        assert result["labels"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
        # the trained weights (same step: the final model and checkpoint-16 hold the same ones)
        assert result["max_diff"] < 1e-5, (folder, result["max_diff"])

"""Every architecture learns: its `synthetic.yaml` recipe trains on CPU to >= 85 % on held-out synthetic faces.

These run the real loop (`hf_fer.training.train`) on the embedded faces ("easy" difficulty: less pose,
clutter and noise, label still only in face geometry) with each architecture's own loss (DACL's center
loss, DMUE's auxiliary branches, VT-NR's F-PDLS, POSTER V2 with SAM).
"""
import json
from pathlib import Path

import pytest

from hf_fer.training import load_recipe, train

REPO = Path(__file__).resolve().parents[1]
ARCHS = ["arm", "dacl", "poster_v2", "dmue", "vt_nr", "mini_xception"]


@pytest.mark.parametrize("arch", ARCHS)
def test_synthetic_recipe_learns(arch, tmp_path):
    recipe = load_recipe(REPO / "modeling_configs" / arch / "synthetic.yaml")
    results = train(recipe, "synthetic", tmp_path / arch, quiet=True)
    test_accuracy = results["test"]["accuracy"]
    chance = 1 / len(results["test"]["label_names"])
    print(f"{arch}: test accuracy {test_accuracy:.3f} (chance {chance:.3f}), {results['train_seconds']:.0f} s, "
          f"{results['train_images_per_second']:.0f} train images/s")
    assert results["test"]["num_samples"] == recipe.data.synthetic.num_test
    assert test_accuracy >= 0.85, json.dumps(results["history"], default=str)[:2000]
    saved = sorted(p.name for p in (tmp_path / arch).iterdir())
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "training_results.json", "last"} <= set(saved)

"""Recipes are validated by schema before any data is loaded: types, ranges, unknown keys (also in model.config)."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_fer.training import RecipeError, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
BASE = {"model": {"arch": "arm", "config": {"image_size": 64, "de_albino_kernel_size": 8, "de_albino_stride": 4}}}


def with_values(**sections):
    values = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in sections.items():
        node = values
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return values


@pytest.mark.parametrize("key, value, message", [
    ("training__optimizer__lr", True, r"training\.optimizer\.lr: expected a number, got bool True"),
    ("training__optimizer__lr", 1e6, r"training\.optimizer\.lr: expected in \(0, 10\), got 1000000\.0"),
    ("training__optimizer__lr", 0, r"training\.optimizer\.lr: expected in \(0, 10\), got 0"),
    ("training__optimizer__lr", "fast", r"training\.optimizer\.lr: expected a number, got str 'fast'"),
    ("training__epochs", 1.5, r"training\.epochs: expected an integer, got float 1\.5"),
    ("training__epochs", 0, r"training\.epochs: expected a positive integer, got 0"),
    ("training__epochs", True, r"training\.epochs: expected an integer, got bool True"),
    ("training__eval_every_epochs", 0, r"training\.eval_every_epochs: expected >= 1, got 0"),
    ("training__batch_size", -4, r"training\.batch_size: expected a positive integer, got -4"),
    ("training__optimizer__betas", [0.9], r"training\.optimizer\.betas: expected a list of 2 a number, got list \[0\.9\]"),
    ("training__optimizer__momentum", 1.5, r"training\.optimizer\.momentum: expected in \[0, 1\)"),
    ("training__param_groups", [{"pattern": "fc", "lr": -1}], r"training\.param_groups\[0\]\.lr: expected in \(0, 10\), got -1"),
    ("training__param_groups", [{"pattern": "fc", "scheduler": {"gama": 0.1}}],
     r"training\.param_groups\[0\]\.scheduler: unknown key\(s\) \['gama' \(did you mean 'gamma'\?\)\]"),
    ("data__validation_fraction", 1.0, r"data\.validation_fraction: expected in \(0, 1\), got 1\.0"),
    ("data__drop_last", "yes", r"data\.drop_last: expected true/false, got str 'yes'"),
    ("data__synthetic__num_trian", 5, r"data\.synthetic: unknown key\(s\) \['num_trian' \(did you mean 'num_train'\?\)\]"),
    ("data__synthetic__difficulty", "hard", r"data\.synthetic\.difficulty is 'hard'; expected one of"),
    ("data__synthetic__train_difficulty", "hard", r"data\.synthetic\.train_difficulty must be one of \['easy', 'standard'\] or a mix"),
    ("data__synthetic__train_difficulty", {"easy": 0.3, "standard": 0.6},
     r"data\.synthetic\.train_difficulty: the fractions of the mix must sum to 1, got 0\.9"),
    ("data__synthetic__train_difficulty", {"easy": 0.5, "hard": 0.5}, r"data\.synthetic\.train_difficulty: unknown difficulty 'hard' in the mix"),
    ("data__synthetic__train_difficulty", {"easy": 0, "standard": 1}, r"data\.synthetic\.train_difficulty\.easy: expected a fraction in \(0, 1\], got 0"),
    ("data__synthetic__train_difficulty", ["easy"], r"data\.synthetic\.train_difficulty must be one of .* got \['easy'\]"),
    ("data__augmentation", [{"name": "RandomHorizontalFlip", "prob": 0.5}], r"data\.augmentation\[0\]: augmentation RandomHorizontalFlip"),
    ("model__config__backbone_depth", [1, 1, 1, 1], r"model\.config: unknown key\(s\) \['backbone_depth' \(did you mean 'backbone_depths'\?\)\] for ArmConfig"),
    ("model__image_processor__sise", {"height": 64, "width": 64}, r"model\.image_processor: unknown key\(s\) \['sise' \(did you mean 'size'\?\)\]"),
    ("model__config__de_albino_kernel_size", 64, r"model\.config: image_size 64 is too small"),
    ("model__label_space", "rafdbx", r"model\.label_space: expected one of \["),
    ("model__arch", "resnet", r"model\.arch: expected one of \["),
])
def test_bad_values_name_the_key_expected_and_got(key, value, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(with_values(**{key: value}))


def test_good_values_are_kept_and_coerced():
    recipe = recipe_from_dict(with_values(training__optimizer__lr="1e-3", training__optimizer__betas=[0.5, 0.9], training__max_steps=None,
                                          model__config__backbone_depths=[1, 1, 1, 1]))
    assert recipe.training.optimizer.lr == 1e-3 and recipe.training.optimizer.betas == (0.5, 0.9)
    assert recipe.training.max_steps is None and recipe.model.config["backbone_depths"] == [1, 1, 1, 1]
    # a known PretrainedConfig key (not in ArmConfig's own signature) is accepted
    assert recipe_from_dict(with_values(model__config__problem_type="single_label_classification")).model.config


def test_train_difficulty_mix_is_kept_and_held_out_faces_keep_difficulty():
    recipe = recipe_from_dict(with_values(data__synthetic__train_difficulty={"easy": 0.25, "standard": 0.75}))
    assert recipe.data.synthetic.train_difficulty == {"easy": 0.25, "standard": 0.75}
    assert recipe.data.synthetic.difficulty == "standard"
    assert recipe_from_dict(with_values(data__synthetic__train_difficulty={"easy": 1})).data.synthetic.train_difficulty == "easy"
    assert recipe_from_dict(BASE).data.synthetic.train_difficulty is None


def test_every_shipped_recipe_validates():
    recipes = sorted((REPO / "modeling_configs").glob("*/*.yaml"))
    assert len(recipes) >= 15
    for path in recipes:
        load_recipe(path)


def test_the_recipe_is_checked_before_any_data_is_loaded(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(with_values(training__epochs=1.5)))
    result = subprocess.run([sys.executable, "-m", "hf_fer.cli", "train", "--recipe", str(recipe), "--dataset", str(tmp_path / "no-such-data"),
                             "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1 and "training.epochs: expected an integer, got float 1.5" in result.stderr, result.stderr[-2000:]
    assert "no-such-data" not in result.stderr and not (tmp_path / "out").exists()

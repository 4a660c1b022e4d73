"""``--dataset synthetic`` for evaluation: render the held-out faces of the model's own training run, not the defaults.

A model's score depends on the rendering (size, difficulty), so the rendering options are read from the training
record ``hf-fer train`` writes next to the weights (``training_info.json``: the recipe's ``data.synthetic``), then
overridden by explicit flags. The test split is rendered with the held-out difficulty (``data.synthetic.difficulty``,
``standard`` in every shipped recipe; ``train_difficulty`` only shapes the training faces) and its own seed, so
``--split test`` gives exactly the held-out faces the training run tested on.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["synthetic_render_options", "training_test_metrics"]

_SPLIT_KEYS = {"train": "num_train", "validation": "num_validation", "test": "num_test"}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recipe_synthetic(model_dir: Path) -> tuple[dict | None, str | None]:
    for name in ("training_info.json", "training_results.json"):
        info = _read_json(model_dir / name)
        if not info:
            continue
        values = info.get("recipe_values") or {}
        synthetic = ((values.get("data") or {}).get("synthetic")) if isinstance(values, Mapping) else None
        if isinstance(synthetic, Mapping) and (info.get("dataset") in (None, "synthetic")):
            return dict(synthetic), name
    return None, None


def _processor_size(model_dir: Path) -> int | None:
    processor = _read_json(model_dir / "preprocessor_config.json") or {}
    size = processor.get("crop_size") if processor.get("do_center_crop") else processor.get("size")
    if isinstance(size, Mapping):
        return size.get("height") or size.get("shortest_edge")
    return None


def synthetic_render_options(model: str, split: str = "test", overrides: Mapping | None = None,
                             override_source: str = "command line") -> tuple[dict, dict]:
    """Options for :func:`hf_fer.data.loading.load_fer_dataset` (``synthetic_options``) and a record of where each came from.

    Only ``split`` is rendered. ``overrides`` (``image_size``, ``difficulty``, ``num_images``, ``seed``) win over the
    training record; without a record the model's input size and ``"standard"`` difficulty are used, and the
    record says so.
    """
    if split not in _SPLIT_KEYS:
        raise ValueError(f"--dataset synthetic has splits {sorted(_SPLIT_KEYS)}, got --split {split!r}")
    from ..data.loading import SYNTHETIC_DEFAULTS

    model_dir = Path(str(model)).expanduser()
    recipe, record_file = _recipe_synthetic(model_dir) if model_dir.is_dir() else (None, None)
    sources = {}
    options = {key: SYNTHETIC_DEFAULTS[key] for key in ("image_size", "seed", "difficulty", "label_space")}
    count = SYNTHETIC_DEFAULTS["num_test"]
    if recipe:
        for key in ("image_size", "seed", "difficulty", "label_space"):
            if recipe.get(key) is not None:
                options[key] = recipe[key]
                sources[key] = record_file
        if recipe.get(_SPLIT_KEYS[split]):
            count = int(recipe[_SPLIT_KEYS[split]])
            sources["num_images"] = record_file
    else:
        size = _processor_size(model_dir) if model_dir.is_dir() else None
        if size:
            options["image_size"] = int(size)
            sources["image_size"] = "preprocessor_config.json (no training record)"
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "num_images":
            count = int(value)
        elif key in options:
            options[key] = value
        else:
            raise ValueError(f"unknown synthetic override {key!r}")
        sources[key] = override_source
    for key in ("image_size", "seed", "difficulty", "num_images"):
        sources.setdefault(key, "default")
    load_options = {**options, "num_train": 0, "num_validation": 0, "num_test": 0}
    load_options[_SPLIT_KEYS[split]] = count
    offset = list(_SPLIT_KEYS).index(split)
    record = {
        "split": split, "num_images": count, "image_size": options["image_size"], "difficulty": options["difficulty"],
        "seed": options["seed"], "render_seed": options["seed"] + 1000 * offset, "label_space": options["label_space"],
        "sources": sources, "training_record": record_file,
    }
    return load_options, record


def training_test_metrics(model: str) -> dict | None:
    """The test metrics ``hf-fer train`` measured at the end of training (``training_results.json``), if any."""
    data = _read_json(Path(str(model)).expanduser() / "training_results.json")
    test = (data or {}).get("test")
    return test if isinstance(test, dict) else None

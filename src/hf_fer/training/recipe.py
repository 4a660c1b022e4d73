"""Training recipes: one YAML file per (architecture, dataset), validated into dataclasses.

A recipe says everything a paper's training script hard-codes — model config, data and
augmentations, sampler, optimizer and parameter groups, SAM, schedule, epochs, precision — so that
one generic loop (:mod:`hf_fer.training.loop`) reproduces every paper without special-casing an
architecture. Unknown keys are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe file is invalid; the message names the file and the field."""


@dataclass
class ModelSection:
    arch: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the architecture's config fields
    config_file: str | None = None  # a modeling_configs/<arch>/<dataset>.json to start from
    image_processor: dict[str, Any] = field(default_factory=dict)  # overrides of the image processor (e.g. size)
    init_from: str | None = None  # a from_pretrained folder or Hub id to fine-tune from
    label_space: str | None = None  # benchmark key; default: the dataset's own label names


@dataclass
class SyntheticSection:
    num_train: int = 1200
    num_validation: int = 300
    num_test: int = 0
    image_size: int = 112
    seed: int = 0
    label_space: str = "raf-db"
    difficulty: str = "standard"  # of the validation and test faces (and of the training faces unless train_difficulty says)
    # Training faces only: "easy", "standard" or a mix {easy: 0.3, standard: 0.7} (shares of the faces); null = `difficulty`.
    # Held-out faces keep `difficulty`, so a recipe can train partly on easier faces and still be judged on standard ones.
    train_difficulty: str | dict[str, float] | None = None


@dataclass
class DataSection:
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)  # used when --dataset synthetic
    train_split: str = "train"
    validation_split: str | None = "validation"  # falls back to a seeded split of train (never test)
    validation_fraction: float = 0.1
    test_split: str | None = "test"  # evaluated once at the end, never used for model selection
    augmentation: list[dict[str, Any]] = field(default_factory=list)
    sampler: str = "random"  # random | class_balanced | mrr
    mrr_cap: int | None = None
    num_workers: int = 0
    drop_last: bool = False  # drop an incomplete last training batch (BatchNorm1d heads fail on a batch of 1)
    label_map: str = "strict"  # strict | auto (map dataset classes to the model's label space by name)


@dataclass
class OptimizerSection:
    name: str = "adamw"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class SchedulerSection:
    name: str = "constant"  # constant | exponential | step | multistep | piecewise | cosine | linear
    warmup_steps: int = 0
    gamma: float = 0.1
    step_size: int = 1  # epochs, for "step"
    milestones: list[int] = field(default_factory=list)  # epochs, for "multistep"/"piecewise"
    values: list[float] = field(default_factory=list)  # lr factors per piece, for "piecewise"
    epoch_offset: int = 0  # 1 = upstream stepped the scheduler at the *start* of each epoch
    min_lr_ratio: float = 0.0  # for cosine/linear


@dataclass
class ParamGroupSection:
    pattern: str = ""  # regular expression matched (re.search) against parameter names
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    betas: tuple[float, float] | None = None
    scheduled: bool = True  # false: the group keeps its lr (e.g. DACL's class centers)
    scheduler: SchedulerSection | None = None  # a schedule of its own (e.g. DMUE's classifier table)
    frozen: bool = False  # exclude these parameters from training


@dataclass
class SamSection:
    rho: float = 0.05
    adaptive: bool = False


@dataclass
class TrainingSection:
    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    batch_size: int = 32  # per process
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    max_grad_norm: float | None = None
    find_unused_parameters: bool = False  # DDP: parameters may get no gradient in a step (e.g. DMUE branches)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    param_groups: list[ParamGroupSection] = field(default_factory=list)
    sam: SamSection | None = None
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    checkpoint_every_steps: int | None = None
    keep_checkpoints: int = 2
    selection_metric: str = "accuracy"  # accuracy | mean_class_accuracy | macro_f1 | loss
    eval_every_epochs: int = 1
    log_every_steps: int = 10
    report_to: str | None = None  # tensorboard


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    description: str = ""
    source: str = ""  # where the numbers come from (paper, upstream script, spec section)
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("path", None)
        return data


# ---------------------------------------------------------------------------------------------- schema checks

# Value ranges per (section, field): a test and what it means, for the error message.
_RANGES: dict[tuple[str, str], tuple[Any, str]] = {
    ("OptimizerSection", "lr"): (lambda v: 0 < v < 10, "in (0, 10)"),
    ("OptimizerSection", "weight_decay"): (lambda v: 0 <= v < 10, "in [0, 10)"),
    ("OptimizerSection", "eps"): (lambda v: 0 < v < 1, "in (0, 1)"),
    ("OptimizerSection", "momentum"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    ("OptimizerSection", "betas"): (lambda v: all(0 <= b < 1 for b in v), "two values in [0, 1)"),
    ("ParamGroupSection", "lr"): (lambda v: 0 < v < 10, "in (0, 10)"),
    ("ParamGroupSection", "weight_decay"): (lambda v: 0 <= v < 10, "in [0, 10)"),
    ("ParamGroupSection", "momentum"): (lambda v: 0 <= v < 1, "in [0, 1)"),
    ("ParamGroupSection", "betas"): (lambda v: all(0 <= b < 1 for b in v), "two values in [0, 1)"),
    ("SchedulerSection", "warmup_steps"): (lambda v: v >= 0, ">= 0"),
    ("SchedulerSection", "gamma"): (lambda v: 0 < v <= 10, "in (0, 10]"),
    ("SchedulerSection", "step_size"): (lambda v: v >= 1, ">= 1"),
    ("SchedulerSection", "milestones"): (lambda v: all(m >= 0 for m in v) and list(v) == sorted(v), "non-negative and increasing"),
    ("SchedulerSection", "values"): (lambda v: all(0 <= x <= 100 for x in v), "each in [0, 100]"),
    ("SchedulerSection", "epoch_offset"): (lambda v: v >= 0, ">= 0"),
    ("SchedulerSection", "min_lr_ratio"): (lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("SamSection", "rho"): (lambda v: 0 < v < 10, "in (0, 10)"),
    ("TrainingSection", "seed"): (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    ("TrainingSection", "epochs"): (lambda v: v >= 1, "a positive integer"),
    ("TrainingSection", "max_steps"): (lambda v: v >= 1, "a positive integer"),
    ("TrainingSection", "batch_size"): (lambda v: v >= 1, "a positive integer"),
    ("TrainingSection", "eval_batch_size"): (lambda v: v >= 1, "a positive integer"),
    ("TrainingSection", "gradient_accumulation_steps"): (lambda v: v >= 1, "a positive integer"),
    ("TrainingSection", "max_grad_norm"): (lambda v: v > 0, "> 0"),
    ("TrainingSection", "checkpoint_every_steps"): (lambda v: v >= 1, "a positive integer"),
    ("TrainingSection", "keep_checkpoints"): (lambda v: v >= 1, "a positive integer"),
    ("TrainingSection", "eval_every_epochs"): (lambda v: v >= 1, ">= 1"),
    ("TrainingSection", "log_every_steps"): (lambda v: v >= 1, ">= 1"),
    ("DataSection", "validation_fraction"): (lambda v: 0 < v < 1, "in (0, 1)"),
    ("DataSection", "mrr_cap"): (lambda v: v >= 1, "a positive integer"),
    ("DataSection", "num_workers"): (lambda v: v >= 0, ">= 0"),
    ("SyntheticSection", "num_train"): (lambda v: v >= 1, "a positive integer"),
    ("SyntheticSection", "num_validation"): (lambda v: v >= 1, "a positive integer"),
    ("SyntheticSection", "num_test"): (lambda v: v >= 0, ">= 0"),
    ("SyntheticSection", "image_size"): (lambda v: 32 <= v <= 4096, "in [32, 4096]"),
    ("SyntheticSection", "seed"): (lambda v: v >= 0, ">= 0"),
}


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} {_describe(args[0])}"
    if origin is dict or hint is dict:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to ``hint`` (a type annotation), or a RecipeError naming ``where``, expected and got."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def wrong() -> RecipeError:
        return RecipeError(f"{where}: expected {_describe(hint)}, got {type(value).__name__} {value!r}")

    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise wrong()
        options = [a for a in args if a is not type(None)]
        return _check_value(value, options[0], where) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if hint is float:
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise wrong() from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise wrong()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    if origin is list:
        if not isinstance(value, list):
            raise wrong()
        return [_check_value(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise wrong()
        return tuple(_check_value(item, arg, f"{where}[{i}]") for i, (item, arg) in enumerate(zip(value, args)))
    if origin is dict or hint is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise wrong()
        return dict(value)
    return value


def _build(cls, values: Any, where: str):
    """Build dataclass ``cls`` from ``values``: unknown keys, wrong types and out-of-range values are errors."""
    if values is None:
        return None
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(values).__name__}: {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(map(str, values)) - set(fields))
    if unknown:
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, fields, n=1)) else repr(k) for k in unknown]
        raise RecipeError(f"{where}: unknown key(s) [{', '.join(hints)}]; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        path = f"{where}.{name}"
        checked = _check_value(value, hints[name], path)
        rule = _RANGES.get((cls.__name__, name))
        if rule is not None and checked is not None and not rule[0](checked):
            raise RecipeError(f"{path}: expected {rule[1]}, got {value!r}")
        kwargs[name] = checked
    return cls(**kwargs)


_CHOICES = {
    "data.sampler": ("random", "class_balanced", "mrr"),
    "data.label_map": ("strict", "auto"),
    "training.mixed_precision": ("no", "bf16", "fp16"),
    "training.optimizer.name": ("adam", "adamw", "sgd"),
    "training.scheduler.name": ("constant", "exponential", "step", "multistep", "piecewise", "cosine", "linear"),
    "training.selection_metric": ("accuracy", "mean_class_accuracy", "macro_f1", "loss"),
    "data.synthetic.difficulty": ("standard", "easy"),
}


def _allowed_keys(cls, instance) -> set[str]:
    """Keys a config / image processor accepts: its ``__init__`` parameters (whole MRO) and its default attributes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return (names | set(instance.to_dict())) - {"self"}


def _check_unknown(values: dict[str, Any], allowed: set[str], where: str, what: str) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, allowed, n=1)) else repr(k) for k in unknown]
        raise RecipeError(f"{where}: unknown key(s) [{', '.join(hints)}] for {what}")


def _validate_model_section(recipe: Recipe, where: str) -> None:
    """``model.config`` / ``model.image_processor`` keys against the architecture's classes; the config must build."""
    from ..labels import BENCHMARKS, benchmark_key
    from ..models import ARCHITECTURES

    for path, space in (("model.label_space", recipe.model.label_space), ("data.synthetic.label_space", recipe.data.synthetic.label_space)):
        if space is not None:
            try:
                benchmark_key(space)
            except (KeyError, ValueError):
                raise RecipeError(f"{where}.{path}: expected one of {sorted(BENCHMARKS)}, got {space!r}") from None
    arch = recipe.model.arch
    source = recipe.model.config_file or recipe.model.init_from
    if not arch and source and (Path(source) / "config.json").is_file():
        import json

        arch = json.loads((Path(source) / "config.json").read_text()).get("model_type", "")
    elif not arch and source and Path(source).is_file():
        import json

        arch = json.loads(Path(source).read_text()).get("model_type", "")
    if not arch:
        return
    if arch not in ARCHITECTURES:
        raise RecipeError(f"{where}.model.arch: expected one of {sorted(ARCHITECTURES)}, got {arch!r}")
    entry = ARCHITECTURES[arch]
    default_config = entry.config_class()
    _check_unknown(recipe.model.config, _allowed_keys(entry.config_class, default_config), f"{where}.model.config",
                   f"{entry.config_class.__name__}")
    _check_unknown(recipe.model.image_processor, _allowed_keys(entry.image_processor_class, entry.image_processor_class()),
                   f"{where}.model.image_processor", entry.image_processor_class.__name__)
    if not recipe.model.config_file and not recipe.model.init_from:
        try:
            entry.config_class(**recipe.model.config)
        except (ValueError, TypeError) as error:
            raise RecipeError(f"{where}.model.config: {error}") from None
    from . import data as training_data

    make = getattr(training_data, "_make", None)  # builds one augmentation; None if data.py changes shape
    for index, spec in enumerate(recipe.data.augmentation if make is not None else []):
        try:
            make(spec)
        except (ValueError, TypeError) as error:
            raise RecipeError(f"{where}.data.augmentation[{index}]: {error}") from None


def recipe_from_dict(values: dict[str, Any], where: str = "recipe") -> Recipe:
    """Validate ``values`` against the recipe schema (before any data is loaded) and build the :class:`Recipe`."""
    recipe = _build(Recipe, values, where)
    for dotted, allowed in _CHOICES.items():
        obj = recipe
        for part in dotted.split("."):
            obj = getattr(obj, part)
        if obj not in allowed:
            raise RecipeError(f"{where}: {dotted} is {obj!r}; expected one of {list(allowed)}")
    if recipe.data.synthetic.train_difficulty is not None:
        from ..data.synthetic import check_difficulty

        try:
            recipe.data.synthetic.train_difficulty = check_difficulty(recipe.data.synthetic.train_difficulty, "data.synthetic.train_difficulty")
        except ValueError as error:
            raise RecipeError(f"{where}: {error}") from None
    if not recipe.model.arch and not recipe.model.init_from:
        raise RecipeError(f"{where}: model.arch (or model.init_from) is required")
    if recipe.training.sam is not None and recipe.training.gradient_accumulation_steps != 1:
        raise RecipeError(f"{where}: SAM needs the same batch for both passes; gradient_accumulation_steps must be 1")
    _validate_model_section(recipe, where)
    return recipe


def _resolve_config_file(value: str, recipe_path: Path) -> str:
    """A relative ``model.config_file`` as the recipe means it, whatever the current directory.

    Looked up next to the recipe, then in the folders above it (the repository's recipes write paths from its root,
    ``modeling_configs/<arch>/<name>.json``), then in the current directory (the old behaviour). A ``.json`` found
    nowhere is an error listing where it was looked for; anything else (a Hub id) is left as written.
    """
    relative = Path(value).expanduser()
    if relative.is_absolute():
        return str(relative)
    folder = recipe_path.resolve().parent
    candidates = [base / relative for base in (folder, *folder.parents)] + [Path.cwd() / relative]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    if relative.suffix == ".json":
        raise RecipeError(f"{recipe_path}: model.config_file {value!r} not found next to the recipe ({folder}), in the folders "
                          f"above it, or in the current directory ({Path.cwd()})")
    return value


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a YAML recipe; ``overrides`` are ``dotted.key=value`` strings (YAML values)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    model = values.get("model") if isinstance(values, dict) else None
    if isinstance(model, dict) and isinstance(model.get("config_file"), str):
        model["config_file"] = _resolve_config_file(model["config_file"], path)
    for override in overrides or []:  # command-line values stay relative to the current directory
        key, sep, raw = override.partition("=")
        if not sep:
            raise RecipeError(f"override {override!r}: expected dotted.key=value")
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    recipe = recipe_from_dict(values, where=str(path))
    recipe.path = str(path)
    return recipe

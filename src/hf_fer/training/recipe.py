"""Training recipes: one YAML file per (architecture, dataset), validated into dataclasses.

A recipe says everything a paper's training script hard-codes — model config, data and
augmentations, sampler, optimizer and parameter groups, SAM, schedule, epochs, precision — so that
one generic loop (:mod:`hf_fer.training.loop`) reproduces every paper without special-casing an
architecture. Unknown keys are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
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
    difficulty: str = "standard"  # "easy": less nuisance, for short CPU runs


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


def _build(cls, values: Any, where: str):
    """Recursively build dataclass ``cls`` from ``values``, rejecting unknown keys with a clear message."""
    if values is None:
        return None
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(values).__name__}: {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields) - {"path"})
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(k for k in fields if k != 'path')}")
    kwargs = {}
    for name, value in values.items():
        kind = fields[name].type if isinstance(fields[name].type, str) else str(fields[name].type)
        sub = None
        for candidate in (ModelSection, SyntheticSection, DataSection, OptimizerSection, SchedulerSection, SamSection, TrainingSection):
            if kind.startswith(candidate.__name__):
                sub = candidate
        if sub is not None:
            kwargs[name] = _build(sub, value, f"{where}.{name}")
        elif name == "param_groups":
            if not isinstance(value, list):
                raise RecipeError(f"{where}.param_groups: expected a list")
            kwargs[name] = [_build(ParamGroupSection, group, f"{where}.param_groups[{i}]") for i, group in enumerate(value)]
            for group in kwargs[name]:
                if group.scheduler is not None and not isinstance(group.scheduler, SchedulerSection):
                    group.scheduler = _build(SchedulerSection, group.scheduler, f"{where}.param_groups.scheduler")
        elif name in ("betas",) and value is not None:
            kwargs[name] = tuple(float(v) for v in value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise RecipeError(f"{where}: {error}") from None


def _coerce_numbers(section: Any, where: str) -> None:
    """YAML reads '1e-3' as a string: coerce numeric fields and check simple choices."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _coerce_numbers(value, f"{where}.{f.name}")
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                _coerce_numbers(item, f"{where}.{f.name}[{i}]")
        elif isinstance(value, str) and f.type in ("float", "float | None", "int", "int | None"):
            try:
                setattr(section, f.name, float(value) if "float" in f.type else int(value))
            except ValueError:
                raise RecipeError(f"{where}.{f.name}: expected a number, got {value!r}") from None


_CHOICES = {
    "data.sampler": ("random", "class_balanced", "mrr"),
    "data.label_map": ("strict", "auto"),
    "training.mixed_precision": ("no", "bf16", "fp16"),
    "training.optimizer.name": ("adam", "adamw", "sgd"),
    "training.scheduler.name": ("constant", "exponential", "step", "multistep", "piecewise", "cosine", "linear"),
    "training.selection_metric": ("accuracy", "mean_class_accuracy", "macro_f1", "loss"),
}


def recipe_from_dict(values: dict[str, Any], where: str = "recipe") -> Recipe:
    recipe = _build(Recipe, values, where)
    _coerce_numbers(recipe, where)
    for dotted, allowed in _CHOICES.items():
        obj = recipe
        for part in dotted.split("."):
            obj = getattr(obj, part)
        if obj not in allowed:
            raise RecipeError(f"{where}: {dotted} is {obj!r}; expected one of {list(allowed)}")
    if not recipe.model.arch and not recipe.model.init_from:
        raise RecipeError(f"{where}: model.arch (or model.init_from) is required")
    if recipe.training.sam is not None and recipe.training.gradient_accumulation_steps != 1:
        raise RecipeError(f"{where}: SAM needs the same batch for both passes; gradient_accumulation_steps must be 1")
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a YAML recipe; ``overrides`` are ``dotted.key=value`` strings (YAML values)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    for override in overrides or []:
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

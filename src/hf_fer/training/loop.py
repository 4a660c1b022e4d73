"""The Accelerate training loop shared by every architecture.

The loop knows no architecture by name. It relies on the model contract (DESIGN §3): ``model(
pixel_values=..., labels=...)`` returns the model's own training loss (auxiliary terms included)
and its logits. Optional duck-typed hooks let a model take part in training without the loop
special-casing it:

* ``model.set_epoch(epoch: int)`` — called at the start of every epoch (e.g. DMUE's ramp-up).

Model selection uses a validation split, never the test split (upstream POSTER V2, ARM and DACL
select on test; we report test once, at the end, for the selected model).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data import EpochSampler, EvalImages, TrainingImages, build_train_transform, collate
from .optim import build_lr_lambdas, build_optimizer, build_param_groups, wrap_sam
from .recipe import Recipe, RecipeError
from .state import (
    CHECKPOINTS,
    OutputLockedError,
    TrainingStateError,
    acquire_lock,
    check_checkpointing_supported,
    checkpoint_steps,
    fault_point,
    finish_pending_publish,
    load_checkpoint,
    publish,
    release_lock,
    save_checkpoint,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainerState:
    """Counters saved (as JSON) in every checkpoint."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # dataloader batches of ``epoch`` already consumed
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False  # the final evaluation, publication and checkpoint are done
    epoch_losses: list[float] = field(default_factory=list)  # training losses of ``epoch`` so far (its history's train_loss)
    run: dict[str, Any] = field(default_factory=dict)  # what the results depend on (recipe, dataset, steps): checked on resume

    def state_dict(self) -> dict[str, Any]:
        return {"json": json.dumps(self.__dict__)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(json.loads(state["json"]))


def reorder_classes(model, order: list[int]) -> None:
    """Permute every class-indexed axis of ``model`` so that new class ``i`` is old class ``order[i]``.

    The class-indexed axes are found, not hard-coded: a copy of the architecture built (on the meta
    device) with one more class shows which tensor axes grow with the number of classes. Architectures
    whose label-dependent structure is not a plain class axis (extra modules per class, a ``2C`` input)
    are refused rather than half-permuted. A ``[C, C]`` ``label_prior_matrix`` in the config is permuted too.
    """
    import copy

    config = model.config
    count = config.num_labels
    probe_config = copy.deepcopy(config)
    probe_config.id2label = {i: f"class_{i}" for i in range(count + 1)}
    probe_config.label2id = {v: k for k, v in probe_config.id2label.items()}
    if getattr(probe_config, "label_prior_matrix", None) is not None:
        probe_config.label_prior_matrix = None
    with torch.device("meta"):
        probe = type(model)(probe_config)
    own, grown = model.state_dict(), probe.state_dict()
    name = type(model).__name__
    if set(own) != set(grown):
        changed = sorted(set(own) ^ set(grown))[:6]
        raise RecipeError(f"cannot reorder the classes of {name}: it has modules per class ({changed} ...); "
                          "set model.label_space to the order of the init_from model and data.label_map: auto")
    index = torch.as_tensor(order)
    with torch.no_grad():
        for key, tensor in own.items():
            if tensor.shape == grown[key].shape:
                continue
            axes = [d for d in range(tensor.ndim) if tensor.shape[d] != grown[key].shape[d]]
            if any(tensor.shape[d] != count or grown[key].shape[d] != count + 1 for d in axes):
                raise RecipeError(f"cannot reorder the classes of {name}: {key} {tuple(tensor.shape)} depends on the number of classes "
                                  "in a way other than one row per class; set model.label_space to the order of the init_from model")
            permuted = tensor
            for axis in axes:
                permuted = permuted.index_select(axis, index.to(tensor.device))
            tensor.copy_(permuted.clone())
    prior = getattr(config, "label_prior_matrix", None)
    if prior is not None:
        config.label_prior_matrix = [[prior[r][c] for c in order] for r in order]
    names = [config.id2label[i] for i in order]
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}


def _apply_face_alignment(processor, config, section, dataset: str | None) -> None:
    """Give the processor the face crop of the training data (it is saved in preprocessor_config.json).

    An explicit ``model.image_processor.face_alignment`` in the recipe wins; then the config file's (the
    modeling_configs JSONs carry one, with its source); then the dataset's (synthetic) or label space's. The key
    belongs to the processor, so it is moved out of the model config.
    """
    from ..faces.alignment import training_alignment

    alignment = config.__dict__.pop("face_alignment", None)
    if "face_alignment" in section.image_processor:
        return
    if dataset == "synthetic":
        alignment = training_alignment(section.arch, "synthetic")
    elif alignment is None:
        alignment = training_alignment(section.arch, section.label_space)
    if alignment is not None:
        processor.face_alignment = alignment


def _build_model(recipe: Recipe, id2label: dict[int, str] | None, dataset: str | None = None, announce=print):
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    from ..models import ARCHITECTURES

    section = recipe.model
    label_kwargs = {}
    if id2label is not None:
        label_kwargs = {"num_labels": len(id2label), "id2label": dict(id2label), "label2id": {v: k for k, v in id2label.items()}}
    if section.init_from:
        from hf_fer_cli.parsers import source_problem

        problem = source_problem("model.init_from", str(section.init_from), "model")  # a local path that is not there
        if problem:
            raise RecipeError(problem)
        source_config = AutoConfig.from_pretrained(section.init_from)
        source = [str(source_config.id2label[i]) for i in range(source_config.num_labels)]
        target = [str(id2label[i]) for i in range(len(id2label))] if id2label is not None else source
        processor = AutoImageProcessor.from_pretrained(section.init_from, **section.image_processor)
        if target == source:
            return AutoModelForImageClassification.from_pretrained(section.init_from, **section.config), processor
        if sorted(target) == sorted(source):
            model = AutoModelForImageClassification.from_pretrained(section.init_from, **section.config)
            reorder_classes(model, [source.index(name) for name in target])
            announce(f"init_from {section.init_from}: classifier rows reordered by class name from {source} to the dataset's order {target}")
            return model, processor
        if len(target) == len(source):
            raise RecipeError(
                f"model.init_from {section.init_from} has the classes {source} but the dataset has {target}: the names differ, so "
                "its classifier rows cannot be matched to the data. Rename the dataset's classes, or set model.label_space "
                "and data.label_map: auto to map them by name."
            )
        model = AutoModelForImageClassification.from_pretrained(section.init_from, **section.config, **label_kwargs, ignore_mismatched_sizes=True)
        announce(f"init_from {section.init_from}: {len(source)} classes {source} -> the dataset's {len(target)} {target}: "
                 "the classifier is newly initialised")
        return model, processor
    if section.arch not in ARCHITECTURES:
        raise RecipeError(f"model.arch {section.arch!r} is not one of {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[section.arch]
    if section.config_file:
        config = AutoConfig.from_pretrained(section.config_file, **section.config, **label_kwargs)
    else:
        config = arch.config_class(**section.config, **label_kwargs)
    processor = arch.image_processor_class(**section.image_processor)
    _apply_face_alignment(processor, config, section, dataset)
    model = arch.model_class(config)
    return model, processor


def _resolve_label_space(recipe: Recipe) -> dict[int, str] | None:
    from ..labels import id2label

    return id2label(recipe.model.label_space) if recipe.model.label_space else None


def _load_data(recipe: Recipe, dataset: str, id2label: dict[int, str] | None):
    from ..data.loading import load_fer_dataset

    synthetic = recipe.data.synthetic
    options = {"num_train": synthetic.num_train, "num_validation": synthetic.num_validation, "num_test": synthetic.num_test,
               "image_size": synthetic.image_size, "seed": synthetic.seed, "label_space": synthetic.label_space,
               "difficulty": synthetic.difficulty, "train_difficulty": synthetic.train_difficulty}
    used = [name for name in (recipe.data.train_split, recipe.data.validation_split, recipe.data.test_split) if name]
    # Only the splits the recipe uses are checked (an unlabelled split it ignores is fine); a missing train split is an error.
    data = load_fer_dataset(dataset, id2label=id2label, label_map=recipe.data.label_map, splits=used,
                            synthetic_options=options if dataset == "synthetic" else None)
    train = data[recipe.data.train_split]
    validation_name = recipe.data.validation_split
    if validation_name and validation_name in data:
        validation = data[validation_name]
        note = None
    else:  # a seeded, stratification-free split of train; the test split is never used for selection
        split = train.train_test_split(test_size=recipe.data.validation_fraction, seed=recipe.training.seed)
        note = (f"validation: {len(split['test'])} of the {len(train)} {recipe.data.train_split} images held out for model selection "
                f"({f'no {validation_name!r} split in {dataset}' if validation_name else 'data.validation_split is unset'}; data.validation_fraction {recipe.data.validation_fraction}, "
                f"seed {recipe.training.seed}); they are not trained on")
        train, validation = split["train"], split["test"]
    test = data[recipe.data.test_split] if recipe.data.test_split and recipe.data.test_split in data else None
    return train, validation, test, note


# Recipe fields that may change between a run and its resumption: they do not change the trained weights or metrics.
RESUMABLE_CHANGES = {
    "description", "source", "data.num_workers", "training.checkpoint_every_steps", "training.keep_checkpoints",
    "training.log_every_steps", "training.report_to", "training.find_unused_parameters",
    "model.config_file",  # a path (the repository may move); what it says is checked when the checkpoint's weights load
}


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict) and values:
        flat: dict[str, Any] = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: values}


def run_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``field: checkpoint X, now Y`` for every result-changing setting that differs (see RESUMABLE_CHANGES)."""
    # JSON round trip: the saved side went through it (tuples became lists)
    old, new = _flatten(json.loads(json.dumps(saved))), _flatten(json.loads(json.dumps(current)))
    changed = []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] == "recipe" and key.split(".", 1)[-1] in RESUMABLE_CHANGES:
            continue
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            changed.append(f"{key}: checkpoint {old.get(key, '<unset>')!r}, now {new.get(key, '<unset>')!r}")
    return changed


def _check_resumable(state: TrainerState, run: dict[str, Any], checkpoint: Path) -> None:
    """Refuse to continue a checkpoint under settings that would give another result than the uninterrupted run.

    Called with the checkpoint's trainer state loaded and nothing else yet, so a changed optimizer is reported here
    rather than failing inside ``optimizer.load_state_dict``.
    """
    if state.finished:  # nothing left to do
        return
    changed = run_differences(state.run, run) if state.run else []  # older checkpoints did not record their settings
    # The dataset's path may change (a preempted job resumed on another machine mounts it elsewhere): said, not refused.
    moved = [line for line in changed if line.startswith("dataset:")]
    changed = [line for line in changed if not line.startswith("dataset:")]
    for line in moved:
        logger.warning("resuming %s with the dataset at another path (%s): it must hold the same data", checkpoint, line)
    reached = run["total_steps"] <= state.global_step
    if not changed and not reached:
        return
    problems = []
    if changed:
        problems.append("other settings than the run that wrote it: " + "; ".join(changed) + (
            " (total_steps comes from --max-steps, else training.max_steps, else training.epochs x steps per epoch)"
            if state.run.get("total_steps") != run["total_steps"] else ""))
    if reached:
        problems.append(f"the checkpoint is already at step {state.global_step}, at or past the {run['total_steps']} steps now asked for")
    raise RecipeError(
        f"cannot resume {checkpoint}: " + ". And ".join(problems)
        + ". Resume with the original recipe and options, or start a new run (another --output, or --force without --resume)."
    )


def _keeping_torch_rng(loader):
    """Iterate ``loader`` leaving the global torch RNG as it was before the iteration started.

    Creating a DataLoader iterator draws its base seed from the global torch RNG. An uninterrupted run drew it
    at the start of the epoch, before a mid-epoch checkpoint saved the RNG state; a run resumed from that
    checkpoint must not draw it again, or every later dropout mask is shifted. (The base seed only seeds
    worker processes, and augmentations are seeded per sample: it changes nothing else.)
    """
    state = torch.get_rng_state()
    iterator = iter(loader)
    try:
        first = next(iterator)  # accelerate's loaders create the underlying iterator here
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from iterator


def latest_checkpoint(output: str | Path) -> Path | None:
    found = checkpoint_steps(Path(output))
    return found[-1] if found else None


def _model_writer(accelerator, model, processor, extra: dict[str, Any]):
    """A callable that saves the current weights (+ config, processor, remote code, training_info.json) into a folder."""
    from ..conversion import save_with_remote_code

    def write(folder: Path) -> None:
        save_with_remote_code(accelerator.unwrap_model(model), processor, folder)
        (folder / "training_info.json").write_text(json.dumps(extra, indent=2, default=str))

    return write


@torch.no_grad()
def evaluate_model(accelerator, model, dataloader, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, mean class accuracy, macro-F1 and mean loss over the whole split, each sample counted once."""
    model.eval()
    predictions, references, losses = [], [], []
    for batch in dataloader:
        outputs = model(pixel_values=batch["pixel_values"])
        logits = outputs.logits.float()
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
        valid = batch.get("valid", torch.ones_like(batch["labels"], dtype=torch.bool)).long()  # 0: unreadable image, left out
        preds, refs, loss, valid = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"], loss, valid))
        valid = valid.cpu().bool()
        predictions.append(preds.cpu()[valid])
        references.append(refs.cpu()[valid])
        losses.append(loss.cpu()[valid])
    predictions_np = torch.cat(predictions).numpy()
    references_np = torch.cat(references).numpy()
    from ..evaluation.metrics import compute_metrics

    metrics = compute_metrics(references_np, predictions_np, label_names=label_names)
    metrics["loss"] = float(torch.cat(losses).mean())
    metrics["num_samples"] = int(len(references_np))
    return metrics


def _write_rank_checksums(accelerator, model) -> None:
    """Debug aid for distributed runs: with ``HF_FER_RANK_CHECKSUMS=DIR`` every process writes the
    checksums of its own copy of the weights (tests check that all ranks hold identical weights)."""
    folder = os.environ.get("HF_FER_RANK_CHECKSUMS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    state = accelerator.unwrap_model(model).state_dict()
    checksums = {name: [float(t.double().sum()), float(t.double().abs().sum())] for name, t in state.items() if t.is_floating_point()}
    payload = {"rank": accelerator.process_index, "num_processes": accelerator.num_processes, "checksums": checksums}
    (Path(folder) / f"rank{accelerator.process_index}.json").write_text(json.dumps(payload))


def _results(state: TrainerState, settings, info: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``training_results.json``: always published together with the model it describes."""
    return {"status": "finished" if state.finished else "running", "best_epoch": state.best_epoch,
            "best_validation_" + settings.selection_metric: state.best_metric, "history": state.history,
            "global_step": state.global_step, "epochs_completed": state.epoch, **extra, **info}


def _check_output(output: Path, resume, force: bool) -> None:
    """Main process, lock held: finish a committed publish, refuse to start over an unfinished run by accident."""
    if finish_pending_publish(output):
        print(f"completed the publication of the model in {output} that an interrupted run had committed", flush=True)
    for leftover in (output / CHECKPOINTS).glob(".tmp_step_*"):
        shutil.rmtree(leftover, ignore_errors=True)
    existing = checkpoint_steps(output)
    if resume or not existing:
        return
    results = output / "training_results.json"
    finished = results.is_file() and json.loads(results.read_text() or "{}").get("status") == "finished"
    if not finished and not force:
        raise TrainingStateError(
            f"{output} holds an unfinished training run (checkpoints up to {existing[-1].name}): pass --resume to continue it, "
            "or --force to start over (its checkpoints are deleted)"
        )
    print(f"starting over in {output}: removing the checkpoints of the earlier {'finished' if finished else 'unfinished'} run", flush=True)
    shutil.rmtree(output / CHECKPOINTS)


def train(recipe: Recipe, dataset: str, output: str | Path, *, resume: str | bool | None = None, max_steps: int | None = None,
          stop_after_steps: int | None = None, quiet: bool = False, force: bool = False) -> dict[str, Any]:
    """Train ``recipe`` on ``dataset`` (``"synthetic"``, a saved dataset, an imagefolder or a Hub id) into ``output``.

    ``output`` receives the best model (validation ``selection_metric``) itself, ``output/last`` the last
    one, ``output/checkpoints/step_K`` resumable states, ``output/training_results.json`` the metrics
    (published together: see :mod:`hf_fer.training.state`). ``resume``: ``True``/``"latest"`` for the
    newest checkpoint in ``output``, or a checkpoint path. ``force`` breaks a stale lock and allows
    starting over a folder that holds an unfinished run. ``stop_after_steps`` ends the run early (as if killed) — for tests.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list

    output = Path(output)
    settings = recipe.training
    mixed_precision = settings.mixed_precision
    if mixed_precision == "fp16" and not torch.cuda.is_available():
        logger.warning("recipe asks for fp16 mixed precision but no GPU is available: training in fp32 (use bf16 on CPU)")
        mixed_precision = "no"
    accelerator = Accelerator(
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=settings.report_to,
        project_dir=str(output),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=settings.find_unused_parameters)],
    )
    lock, problem = None, [None]
    if accelerator.is_main_process:
        try:
            lock = acquire_lock(output, force=force)
            _check_output(output, resume, force)
        except TrainingStateError as error:
            problem = [(isinstance(error, OutputLockedError), str(error))]
    if accelerator.num_processes > 1:
        broadcast_object_list(problem)
    if problem[0] is not None:
        if lock is not None:
            release_lock(lock)
        locked, message = problem[0]
        raise (OutputLockedError if locked else TrainingStateError)(message)
    try:
        return _train(accelerator, recipe, dataset, output, resume=resume, max_steps=max_steps, stop_after_steps=stop_after_steps, quiet=quiet)
    finally:
        if lock is not None:
            release_lock(lock)


def _train(accelerator, recipe: Recipe, dataset: str, output: Path, *, resume, max_steps, stop_after_steps, quiet) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    settings = recipe.training
    set_seed(settings.seed)
    id2label = _resolve_label_space(recipe)
    with accelerator.main_process_first():
        train_data, validation_data, test_data, validation_note = _load_data(recipe, dataset, id2label)
    if validation_note:
        accelerator.print(validation_note)
    if id2label is None:
        names = train_data.features["label"].names
        id2label = dict(enumerate(names))
    model, processor = _build_model(recipe, id2label, announce=accelerator.print, dataset=dataset)
    set_seed(settings.seed)  # model init consumed RNG; keep data/dropout streams independent of it

    transform = build_train_transform(processor, recipe.data.augmentation)
    train_images = TrainingImages(train_data, transform, seed=settings.seed)
    sampler = EpochSampler(train_data["label"], recipe.data.sampler, seed=settings.seed, mrr_cap=recipe.data.mrr_cap)
    train_loader = DataLoader(train_images, batch_size=settings.batch_size, sampler=sampler, collate_fn=collate,
                              num_workers=recipe.data.num_workers, drop_last=recipe.data.drop_last)
    validation_loader = DataLoader(EvalImages(validation_data, processor), batch_size=settings.eval_batch_size, collate_fn=collate,
                                   num_workers=recipe.data.num_workers)

    groups, sources = build_param_groups(model, settings.optimizer, settings.param_groups)
    optimizer = build_optimizer(groups, settings.optimizer)
    model, optimizer, train_loader, validation_loader = accelerator.prepare(model, optimizer, train_loader, validation_loader)

    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise RecipeError(
            f"the training split {recipe.data.train_split!r} has {len(train_data)} images, fewer than one batch: "
            f"training.batch_size {settings.batch_size} x {accelerator.num_processes} process(es) with data.drop_last: "
            f"{recipe.data.drop_last}, so an epoch has no batch and training would never advance. Lower training.batch_size"
            + (" or set data.drop_last: false" if recipe.data.drop_last else "") + "."
        )
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / settings.gradient_accumulation_steps))
    total_steps = max_steps or settings.max_steps or steps_per_epoch * settings.epochs
    lambdas = build_lr_lambdas(settings.scheduler, sources, steps_per_epoch, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    state = TrainerState()
    run = {"recipe": recipe.to_dict(), "dataset": str(Path(dataset).resolve()) if Path(dataset).exists() else dataset,
           "num_processes": accelerator.num_processes, "total_steps": total_steps}
    state.run = run
    sam = wrap_sam(optimizer, settings.sam)
    stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "trainer_state": state}
    if settings.checkpoint_every_steps or resume:
        check_checkpointing_supported(accelerator)

    unwrapped = accelerator.unwrap_model(model)
    label_names = [unwrapped.config.id2label[i] for i in range(unwrapped.config.num_labels)]
    # where and how it ran (the recipe's mixed precision may have been turned off for lack of a GPU)
    info = {"recipe": recipe.path, "recipe_values": recipe.to_dict(), "dataset": dataset, "num_processes": accelerator.num_processes,
            "device": str(accelerator.device), "mixed_precision": str(accelerator.mixed_precision),
            "train_samples": len(train_data), "validation_samples": len(validation_data), "test_samples": len(test_data) if test_data is not None else 0}

    if resume:
        checkpoint = latest_checkpoint(output) if resume in (True, "latest") else Path(resume)
        if checkpoint is None:
            accelerator.print(f"no checkpoint in {output / CHECKPOINTS} to resume from: starting from the beginning")
        elif not checkpoint.is_dir():
            raise FileNotFoundError(f"checkpoint {checkpoint} not found")
        else:
            load_checkpoint(accelerator, checkpoint, **stateful, check=lambda: _check_resumable(state, run, checkpoint))
            accelerator.print(f"resumed from {checkpoint} (step {state.global_step}, epoch {state.epoch}, batch {state.batches_in_epoch})")
            if state.finished:
                accelerator.print(f"the run in {output} had already finished: nothing to do")
                results_path = output / "training_results.json"
                return json.loads(results_path.read_text()) if results_path.is_file() else {"best_epoch": state.best_epoch}

    if settings.report_to:
        accelerator.init_trackers("hf_fer", config={"recipe": recipe.path or "", "dataset": dataset})

    import sys

    progress = tqdm(total=total_steps, initial=state.global_step, disable=quiet or not accelerator.is_local_main_process, desc="training",
                    mininterval=0.5 if sys.stderr.isatty() else 15.0)  # logs and CI get a line every 15 s, not every step
    started = time.perf_counter()
    images_seen = 0
    stopped_early = False
    every = settings.checkpoint_every_steps
    while state.global_step < total_steps:
        epoch = state.epoch
        sampler.set_training_epoch(epoch)
        train_images.set_training_epoch(epoch)
        if hasattr(unwrapped, "set_epoch"):
            unwrapped.set_epoch(epoch)
        model.train()
        if state.batches_in_epoch:  # resumed mid-epoch
            loader = _keeping_torch_rng(accelerator.skip_first_batches(train_loader, state.batches_in_epoch))
        else:
            loader = train_loader
            state.epoch_losses = []
        running = state.epoch_losses
        checkpoint_after_epoch = False
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
                loss = outputs.loss
                if loss is None:
                    raise RuntimeError(f"{type(unwrapped).__name__} returned no loss for labels: it breaks the model contract")
                accelerator.backward(loss)
                fault_point("mid_step")
                if sam is not None:
                    sam.first_step()
                    accelerator.backward(model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss)
                    if settings.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                    sam.second_step()
                else:
                    if settings.max_grad_norm and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batches_in_epoch += 1
            images_seen += batch["pixel_values"].shape[0] * accelerator.num_processes
            running.append(float(loss.detach()))
            if accelerator.sync_gradients:
                scheduler.step()
                state.global_step += 1
                progress.update(1)
                if state.global_step % max(1, settings.log_every_steps) == 0:
                    mean_loss = float(np.mean(running[-settings.log_every_steps:]))
                    progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                    if settings.report_to:
                        accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0]}, step=state.global_step)
                end_of_epoch = state.batches_in_epoch >= batches_per_epoch or state.global_step >= total_steps
                if every and state.global_step % every == 0:
                    if end_of_epoch:  # taken after this epoch's evaluation and model publication, never before
                        checkpoint_after_epoch = True
                    else:
                        save_checkpoint(accelerator, output, state.global_step, settings.keep_checkpoints, **stateful)
                if stopped_early := stop_after_steps is not None and state.global_step >= stop_after_steps:
                    break
                if state.global_step >= total_steps:
                    break
        if stopped_early:
            break
        state.epoch += 1
        state.batches_in_epoch = 0
        final = state.global_step >= total_steps
        parts: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        better = False
        if state.epoch % settings.eval_every_epochs == 0 or final:
            if final:
                fault_point("final_evaluation")
            metrics = evaluate_model(accelerator, model, validation_loader, label_names)
            metrics.update(epoch=state.epoch, step=state.global_step, train_loss=float(np.mean(running)) if running else None)
            state.history.append(metrics)
            accelerator.print(f"epoch {state.epoch}: validation accuracy {metrics['accuracy']:.4f}, mean class accuracy "
                              f"{metrics['mean_class_accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}")
            if settings.report_to:
                accelerator.log({f"validation/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=state.global_step)
            value = metrics[settings.selection_metric]
            better = state.best_metric is None or (value < state.best_metric if settings.selection_metric == "loss" else value > state.best_metric)
            if better:
                state.best_metric, state.best_epoch = value, state.epoch
                parts["best"] = _model_writer(accelerator, model, processor, {
                    **info, "selected_on": "validation", "selection_metric": settings.selection_metric, "validation": metrics})
        if final:
            state.finished = True
            elapsed = time.perf_counter() - started
            parts["last"] = _model_writer(accelerator, model, processor, {
                **info, "last_epoch": state.epoch, "validation": state.history[-1] if state.history else None})
            extra = {"train_seconds": elapsed, "train_images_per_second": images_seen / elapsed if elapsed > 0 else None}
            if test_data is not None:
                extra["test"] = _evaluate_best_on_test(accelerator, model if better else None, output, test_data, processor, settings, label_names)
        if parts or state.epoch % settings.eval_every_epochs == 0:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                needed = len(parts) * sum(t.numel() * t.element_size() for t in unwrapped.state_dict().values()) + (1 << 20)
                publish(output, parts, _results(state, settings, info, **extra), needed)
            accelerator.wait_for_everyone()
        if checkpoint_after_epoch or (final and every):
            save_checkpoint(accelerator, output, state.global_step, settings.keep_checkpoints, **stateful)
    progress.close()
    if stopped_early:
        return {"stopped_early": True, "global_step": state.global_step}
    results = json.loads((output / "training_results.json").read_text())
    _write_rank_checksums(accelerator, model)
    if settings.report_to:
        accelerator.end_training()
    return results


def _evaluate_best_on_test(accelerator, current_model, output: Path, test_data, processor, settings, label_names) -> dict[str, Any]:
    """Test metrics of the selected model: the current one if it was just selected, else the one published in ``output``."""
    if current_model is None:
        from transformers import AutoModelForImageClassification

        current_model = AutoModelForImageClassification.from_pretrained(output).to(accelerator.device)
    test_loader = accelerator.prepare(DataLoader(EvalImages(test_data, processor), batch_size=settings.eval_batch_size, collate_fn=collate))
    metrics = evaluate_model(accelerator, current_model, test_loader, label_names)
    accelerator.print(f"test (best validation model): accuracy {metrics['accuracy']:.4f}, mean class accuracy {metrics['mean_class_accuracy']:.4f}")
    return metrics

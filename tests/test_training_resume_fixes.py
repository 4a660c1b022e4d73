"""Resuming reproduces the uninterrupted run exactly, and refuses what it cannot reproduce.

* a model with dropout resumed mid-epoch gets the uninterrupted weights and history (DataLoader iterator
  creation draws from the global torch RNG; the resumed run used to draw once more);
* a changed recipe, optimizer or step count is refused with the differing fields named;
* a training split smaller than one batch with ``drop_last`` is an error, not an endless loop;
* checkpoints load on gloo CPU ranks (device ``cpu:<rank>``);
* a stale lock whose PID was reused by a live process (even this one) can be broken.

Runs are in-process (``stop_after_steps`` ends a run where a kill would) with a tiny ARM and synthetic faces.
"""
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_fer.training import RecipeError, recipe_from_dict, train
from test_training_faults import RECIPE as FAULT_RECIPE

# 64 faces at 32 px, batch 16: 4 steps per epoch, 2 epochs; checkpoint every 3 steps, so step_3 is mid-epoch.
RECIPE = copy.deepcopy(FAULT_RECIPE)  # the fault tests' tiny ARM, with dropout and a mid-epoch checkpoint
RECIPE["model"]["config"]["drop_rate"] = 0.5
RECIPE["data"]["synthetic"]["num_test"] = 0
RECIPE["training"]["checkpoint_every_steps"] = 3


def _recipe(**training):
    values = copy.deepcopy(RECIPE)
    for key, value in training.items():
        section = values["training"]
        *parents, last = key.split(".")
        for parent in parents:
            section = section[parent]
        section[last] = value
    return recipe_from_dict(values)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted run, and a run stopped right after its mid-epoch checkpoint step_3."""
    root = tmp_path_factory.mktemp("resume")
    train(_recipe(), "synthetic", root / "reference", quiet=True)
    stopped = train(_recipe(), "synthetic", root / "stopped", quiet=True, stop_after_steps=3)
    assert stopped == {"stopped_early": True, "global_step": 3}
    assert [p.name for p in (root / "stopped" / "checkpoints").iterdir()] == ["step_3"]
    return root


def _copy(runs, name):
    target = runs / name
    shutil.copytree(runs / "stopped", target)
    return target


def test_dropout_model_resumed_mid_epoch_matches_the_uninterrupted_run(runs):
    output = _copy(runs, "resumed")
    # log_every_steps does not change results: resuming with another value is allowed
    train(_recipe(log_every_steps=1), "synthetic", output, quiet=True, resume=True)
    reference = runs / "reference"
    for name in ("model.safetensors", "last/model.safetensors"):
        want, got = load_file(str(reference / name)), load_file(str(output / name))
        assert want.keys() == got.keys()
        different = [key for key in want if not torch.equal(want[key], got[key])]
        assert not different, f"{name}: {len(different)} of {len(want)} tensors differ from the uninterrupted run, e.g. {different[:3]}"
    want, got = (json.loads((folder / "training_results.json").read_text()) for folder in (reference, output))
    assert got["status"] == "finished" and got["global_step"] == 8 and got["best_epoch"] == want["best_epoch"]
    # the whole history, train_loss included (epoch 1's mean loss spans the interruption)
    assert [h["train_loss"] for h in got["history"]] == [h["train_loss"] for h in want["history"]]
    assert got["history"] == want["history"]


def test_resume_refuses_a_changed_recipe_and_names_the_fields(runs):
    output = _copy(runs, "changed")
    with pytest.raises(RecipeError) as error:
        train(_recipe(batch_size=8, **{"optimizer.lr": 0.5}), "synthetic", output, quiet=True, resume=True)
    message = str(error.value)
    assert "recipe.training.batch_size: checkpoint 16, now 8" in message, message
    assert "recipe.training.optimizer.lr: checkpoint 0.05, now 0.5" in message, message
    assert str(output / "checkpoints" / "step_3") in message
    # another optimizer used to fail inside optimizer.load_state_dict with a bare KeyError 'step'
    with pytest.raises(RecipeError, match=r"recipe\.training\.optimizer\.name: checkpoint 'sgd', now 'adam'"):
        train(_recipe(optimizer={"name": "adam", "lr": 0.05}), "synthetic", output, quiet=True, resume=True)
    # fewer steps than the checkpoint has already done: it used to exit "successfully" having done nothing
    with pytest.raises(RecipeError, match=r"total_steps: checkpoint 8, now 2.*already at step 3, at or past the 2 steps"):
        train(_recipe(), "synthetic", output, quiet=True, resume=True, max_steps=2)
    # the same for a checkpoint of an older version, which did not record its settings
    state_file = output / "checkpoints" / "step_3" / "training_state.json"
    document = json.loads(state_file.read_text())
    trainer = json.loads(document["payload"]["trainer"]["json"])
    del trainer["run"]
    document["payload"]["trainer"]["json"] = json.dumps(trainer)
    state_file.write_text(json.dumps(document))
    with pytest.raises(RecipeError, match=r"cannot resume .*step_3: the checkpoint is already at step 3, at or past the 2 steps"):
        train(_recipe(), "synthetic", output, quiet=True, resume=True, max_steps=2)
    assert not (output / "last").exists()


def test_drop_last_with_a_split_smaller_than_one_batch_is_an_error(tmp_path):
    values = copy.deepcopy(RECIPE)
    values["data"]["synthetic"]["num_train"] = 10
    values["data"]["drop_last"] = True
    values["training"]["checkpoint_every_steps"] = None

    def hung(*_):
        raise TimeoutError("training never advanced: an epoch without batches loops forever")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 60, 1)  # repeated: one landing in a __del__ would only be printed
    try:
        with pytest.raises(RecipeError, match=r"'train' has 10 images, fewer than one batch: training\.batch_size 16 .*drop_last: True"):
            train(recipe_from_dict(values), "synthetic", tmp_path / "out", quiet=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_checkpoints_load_on_gloo_cpu_ranks(tmp_path):
    from safetensors import SafetensorError

    from hf_fer.training.state import load_device

    path = str(tmp_path / "t.safetensors")
    save_file({"w": torch.ones(2)}, path)
    rank_device = torch.device("cpu", 1)  # what Accelerator.device is on the second gloo CPU rank
    with pytest.raises(SafetensorError, match="invalid"):
        load_file(path, device=str(rank_device))
    assert load_device(rank_device) == "cpu" and load_device("cpu") == "cpu"
    assert torch.equal(load_file(path, device=load_device(rank_device))["w"], torch.ones(2))
    assert load_device(torch.device("cuda", 1)) == "cuda:1"


def test_force_breaks_a_lock_whose_pid_was_reused(tmp_path):
    from hf_fer.training.state import OutputLockedError, acquire_lock, process_start, release_lock

    lock = tmp_path / "training.lock"
    host = socket.gethostname()
    start = process_start(os.getpid())
    assert start is not None and start == process_start(os.getpid())
    # after a container restart the dead run's PID is this very process (or another live one): another start
    for pid in (os.getpid(), 1):
        lock.write_text(json.dumps({"pid": pid, "host": host, "process_start": start.rsplit(":", 1)[0] + ":1"}))
        with pytest.raises(OutputLockedError, match=rf"stale lock .*PID {pid} .*--force"):
            acquire_lock(tmp_path)
        taken = acquire_lock(tmp_path, force=True)
        assert json.loads(taken.read_text())["pid"] == os.getpid()
        release_lock(taken)
    # a lock of an older version (no start recorded) naming this process's own PID is not this process's
    lock.write_text(json.dumps({"pid": os.getpid(), "host": host}))
    release_lock(acquire_lock(tmp_path, force=True))
    # a live holder is still never broken
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": sleeper.pid, "host": host, "process_start": process_start(sleeper.pid)}))
        with pytest.raises(OutputLockedError, match=rf"in use by another training run \(PID {sleeper.pid}"):
            acquire_lock(tmp_path, force=True)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dataset_or_config_file_at_another_path_is_no_reason_to_refuse_a_resume(caplog):
    """A preempted job resumed on another machine may mount the data (or the repository) elsewhere: said, not
    refused; a changed batch size still is."""
    import logging

    import pytest

    from hf_fer.training.loop import RecipeError, TrainerState, _check_resumable

    saved = {"recipe": {"model": {"config_file": "/old/repo/modeling_configs/arm/synthetic.json"},
                        "training": {"batch_size": 16}}, "dataset": "/mnt/a/rafdb", "num_processes": 1, "total_steps": 10}
    state = TrainerState(global_step=4, run=saved)
    moved = {**saved, "dataset": "/mnt/b/rafdb",
             "recipe": {**saved["recipe"], "model": {"config_file": "/new/repo/modeling_configs/arm/synthetic.json"}}}
    with caplog.at_level(logging.WARNING, logger="hf_fer.training.loop"):
        _check_resumable(state, moved, "ckpt")
    assert "/mnt/b/rafdb" in caplog.text
    changed = {**moved, "recipe": {**moved["recipe"], "training": {"batch_size": 8}}}
    with pytest.raises(RecipeError, match="recipe.training.batch_size: checkpoint 16, now 8"):
        _check_resumable(state, changed, "ckpt")

"""Training state under faults: SIGKILL at named points, a full disk, planted pickles, two runs into one folder.

Faults are injected deterministically (``HF_FER_FAULT_POINT=name[:n[:action]]``, see
``hf_fer.training.state.fault_point``), so no case depends on timing. One uninterrupted reference run
(paused once so that a second run can try the same folder) serves every comparison.
"""
import json
import os
import pickle
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]

# 64 faces at 32 px, batch 16: 4 steps per epoch, 2 epochs; checkpoints at steps 2, 4 (after epoch 1's
# evaluation and publication), 6 and 8 (after the final publication); two kept.
RECIPE = {
    "model": {"arch": "arm", "label_space": "raf-db",
              "config": {"image_size": 32, "backbone_depths": [1, 1, 1, 1], "affinity_mode": "running",
                         "de_albino_kernel_size": 8, "de_albino_stride": 4},
              "image_processor": {"size": {"height": 32, "width": 32}}},
    "data": {"synthetic": {"num_train": 64, "num_validation": 16, "num_test": 16, "image_size": 32, "seed": 1,
                           "label_space": "raf-db", "difficulty": "easy"},
             "augmentation": [{"name": "RandomHorizontalFlip", "p": 0.5}]},
    "training": {"seed": 3, "epochs": 2, "batch_size": 16, "eval_batch_size": 16,
                 "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                 "scheduler": {"name": "step", "step_size": 1, "gamma": 0.5},
                 "checkpoint_every_steps": 2, "keep_checkpoints": 2},
}

# (fault point spec, checkpoint the resumed run must start from)
KILL_POINTS = [
    ("mid_step:6", "step_4"),  # between backward and optimizer step of step 6
    ("checkpoint_write:2", "step_2"),  # inside the write of step_4 (weights written, optimizer state not)
    ("best_model_write:1", "step_2"),  # best model of epoch 1 half-staged: O/ must stay as it was
    ("best_model_apply:1", "step_2"),  # best model committed, O/model.safetensors replaced, the rest not yet
    ("final_evaluation:1", "step_6"),  # start of the final validation (the run used to skip it on resume)
    ("last_write:1", "step_6"),  # inside the final publication of O/last
]


def _train(output, *extra, env=None, wait=True):
    environment = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    command = [sys.executable, "-m", "hf_fer.cli", "train", "--recipe", str(output.parent / "recipe.yaml"), "--dataset", "synthetic",
               "--output", str(output), "--quiet", "--no-sample-predictions", *extra]
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return process
    out, _ = process.communicate(timeout=600)
    return process.returncode, out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    return root


@pytest.fixture(scope="module")
def reference(workspace):
    """The uninterrupted run. It pauses at step 3 while a second run into the same folder must fail fast."""
    output = workspace / "reference"
    release = workspace / "release"
    first = _train(output, env={"HF_FER_FAULT_POINT": "mid_step:3:pause", "HF_FER_FAULT_RELEASE": str(release)}, wait=False)
    deadline = time.time() + 300
    while not Path(f"{release}.waiting").exists():
        assert first.poll() is None, first.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.05)
    started = time.perf_counter()
    code, out = _train(output)
    second_seconds = time.perf_counter() - started
    release.write_text("go")
    first_out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, first_out
    return {"output": output, "second": (code, out, second_seconds), "first_out": first_out}


def _tensors(path):
    return load_file(str(path))


def assert_same_final_state(actual: Path, expected: Path):
    for name in ("model.safetensors", "last/model.safetensors"):
        want, got = _tensors(expected / name), _tensors(actual / name)
        assert want.keys() == got.keys(), name
        different = [key for key in want if not torch.equal(want[key], got[key])]
        assert not different, f"{actual / name}: {len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"
    want, got = (json.loads((folder / "training_results.json").read_text()) for folder in (expected, actual))
    assert got["status"] == "finished" and got["best_epoch"] == want["best_epoch"] and got["global_step"] == want["global_step"] == 8
    assert [h["accuracy"] for h in got["history"]] == [h["accuracy"] for h in want["history"]]
    assert [h["loss"] for h in got["history"]] == [h["loss"] for h in want["history"]]
    assert [h["epoch"] for h in got["history"]] == [1, 2]
    assert got["test"]["accuracy"] == want["test"]["accuracy"]
    # the result files describe the model that is actually in O/
    info = json.loads((actual / "training_info.json").read_text())
    assert info["validation"]["epoch"] == got["best_epoch"]
    assert json.loads((actual / "last" / "training_info.json").read_text())["last_epoch"] == 2
    leftovers = [p.name for p in actual.rglob(".*")] + [p.name for p in actual.glob("training.lock")]
    assert not leftovers, leftovers
    assert sorted(p.name for p in (actual / "checkpoints").iterdir()) == ["step_6", "step_8"]


def test_second_run_into_the_same_folder_fails_fast_and_the_first_finishes(reference):
    code, out, seconds = reference["second"]
    assert code != 0 and "is in use by another training run" in out and "PID" in out, out
    assert seconds < 60, seconds
    output = reference["output"]
    results = json.loads((output / "training_results.json").read_text())
    assert results["status"] == "finished" and results["global_step"] == 8
    assert json.loads((output / "training_info.json").read_text())["validation"]["epoch"] == results["best_epoch"]
    assert not (output / "training.lock").exists()


def _kill_and_resume(workspace, spec, start):
    output = workspace / ("killed_" + spec.replace(":", "_"))
    code, out = _train(output, env={"HF_FER_FAULT_POINT": spec})
    assert code == -9, f"{spec}: the run was not killed (exit {code}):\n{out[-3000:]}"
    marker = workspace / f"pwned_{spec.replace(':', '_')}"
    planted = output / "checkpoints" / start / "custom_checkpoint_0.pkl"
    planted.write_bytes(pickle.dumps(Exploit(marker)))  # a pickle that runs code if anything unpickles it
    if spec == "final_evaluation:1":  # a plain --resume is refused: the dead run's lock is still there
        code, out = _train(output, "--resume")
        assert code != 0 and "stale lock" in out and "--force" in out, out[-3000:]
    code, out = _train(output, "--resume", "--force")
    assert code == 0 and f"resumed from {output / 'checkpoints' / start}" in out, f"{spec}:\n{out[-3000:]}"
    assert not marker.exists(), "a planted pickle ran"
    return output


class Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_killed_anywhere_resumes_to_the_uninterrupted_result(workspace, reference):
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {spec: pool.submit(_kill_and_resume, workspace, spec, start) for spec, start in KILL_POINTS}
    for spec, future in futures.items():
        output = future.result()
        assert_same_final_state(output, reference["output"])


def test_disk_full_says_so_and_keeps_the_previous_state(workspace, reference):
    # ENOSPC while writing checkpoint step_6, then while publishing the first best model
    output = workspace / "full_checkpoint"
    code, out = _train(output, env={"HF_FER_FAULT_POINT": "checkpoint_write:3:enospc"})
    assert code == 1 and "no space left on device while writing" in out and str(output / "checkpoints") in out and "MiB needed" in out, out[-2000:]
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step_4"], "previous checkpoint lost or a partial one left"
    from transformers import AutoModelForImageClassification

    import hf_fer  # noqa: F401

    AutoModelForImageClassification.from_pretrained(output)  # the published epoch-1 model still loads
    code, out = _train(output, "--resume")  # no --force: the failed run released its lock
    assert code == 0, out[-3000:]
    assert_same_final_state(output, reference["output"])

    output = workspace / "full_publish"
    code, out = _train(output, env={"HF_FER_FAULT_POINT": "best_model_write:1:enospc"})
    assert code == 1 and f"no space left on device while writing {output}:" in out, out[-2000:]
    assert not (output / "model.safetensors").exists() and not (output / ".publish.tmp").exists()
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step_2"]


def test_old_pickled_checkpoints_are_refused_and_never_unpickled(tmp_path):
    from hf_fer.training.state import TrainingStateError, load_checkpoint

    folder = tmp_path / "checkpoints" / "step_4"
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
        (folder / name).write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(TrainingStateError, match=r"not an hf_fer checkpoint.*never loaded because unpickling can run code"):
        load_checkpoint(None, folder, model=None, optimizer=None, scheduler=None, trainer_state=None)
    assert not marker.exists()


def test_lock_fails_fast_and_force_breaks_only_stale_locks(tmp_path):
    import socket

    from hf_fer.training.state import OutputLockedError, acquire_lock, release_lock

    lock = acquire_lock(tmp_path)
    with pytest.raises(OutputLockedError, match=rf"in use by another training run \(PID {os.getpid()}"):
        acquire_lock(tmp_path, force=True)  # a live process's lock is never broken
    release_lock(lock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with pytest.raises(OutputLockedError, match=rf"stale lock .*PID {dead.pid}.*--force"):
        acquire_lock(tmp_path)
    assert json.loads(acquire_lock(tmp_path, force=True).read_text())["pid"] == os.getpid()

"""The Accelerate training loop: recipes, schedules, SAM, samplers, kill-and-resume, two processes."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hf_fer.training import RecipeError, SAM, load_recipe, recipe_from_dict
from hf_fer.training.data import EpochSampler, FlipOrGaussianNoise, RandomFiveCrop
from hf_fer.training.optim import build_lr_lambdas, build_optimizer, build_param_groups, epoch_factor
from hf_fer.training.recipe import OptimizerSection, ParamGroupSection, SchedulerSection

REPO = Path(__file__).resolve().parents[1]

TINY_ARM = {
    "model": {"arch": "arm", "label_space": "raf-db",
              "config": {"image_size": 64, "backbone_depths": [1, 1, 1, 1], "affinity_mode": "running"},
              "image_processor": {"size": {"height": 64, "width": 64}}},
    "data": {"synthetic": {"num_train": 96, "num_validation": 37, "num_test": 0, "image_size": 64, "seed": 1, "label_space": "raf-db"},
             "augmentation": [{"name": "RandomHorizontalFlip", "p": 0.5}, {"name": "RandomErasing", "p": 0.5, "scale": [0.02, 0.1]}]},
    "training": {"seed": 3, "epochs": 2, "batch_size": 16, "eval_batch_size": 16,
                 "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
                 "scheduler": {"name": "step", "step_size": 1, "gamma": 0.5}, "checkpoint_every_steps": 2, "keep_checkpoints": 2},
}


def write_recipe(tmp_path, values, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


# ---------------------------------------------------------------------------------------------- recipes


def test_recipe_rejects_unknown_keys_and_bad_choices(tmp_path):
    with pytest.raises(RecipeError, match=r"training\.optimizer: unknown key\(s\) \['lrate'\]"):
        recipe_from_dict({"model": {"arch": "arm"}, "training": {"optimizer": {"lrate": 1}}})
    with pytest.raises(RecipeError, match="sampler is 'balanced'"):
        recipe_from_dict({"model": {"arch": "arm"}, "data": {"sampler": "balanced"}})
    with pytest.raises(RecipeError, match="gradient_accumulation_steps must be 1"):
        recipe_from_dict({"model": {"arch": "arm"}, "training": {"sam": {"rho": 0.05}, "gradient_accumulation_steps": 2}})
    path = write_recipe(tmp_path, {"model": {"arch": "arm"}, "training": {"optimizer": {"lr": "3.5e-5"}}})
    recipe = load_recipe(path, ["training.epochs=7", "data.sampler=mrr"])
    assert recipe.training.optimizer.lr == pytest.approx(3.5e-5) and recipe.training.epochs == 7 and recipe.data.sampler == "mrr"


def test_every_shipped_recipe_is_valid():
    recipes = sorted((REPO / "modeling_configs").glob("*/*.yaml"))
    assert recipes, "no recipes shipped"
    from transformers import AutoConfig

    from hf_fer.models import ARCHITECTURES

    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.model.arch == path.parent.name, path
        if recipe.model.config_file:
            config = AutoConfig.from_pretrained(REPO / recipe.model.config_file, **recipe.model.config)
        else:
            config = ARCHITECTURES[recipe.model.arch].config_class(**recipe.model.config)
        assert config.model_type == recipe.model.arch, path
        ARCHITECTURES[recipe.model.arch].image_processor_class(**recipe.model.image_processor)


# ---------------------------------------------------------------------------------------------- schedules


def test_paper_schedules_by_hand():
    exponential = SchedulerSection(name="exponential", gamma=0.9)  # ARM: ExponentialLR(0.9) per epoch
    assert [round(epoch_factor(exponential, e, 70), 6) for e in (0, 1, 2.5)] == [1.0, 0.9, 0.81]
    step = SchedulerSection(name="step", step_size=20, gamma=0.1)  # DACL: StepLR(20, 0.1)
    assert [epoch_factor(step, e, 60) for e in (0, 19, 20, 45)] == pytest.approx([1, 1, 0.1, 0.01])
    # VT-NR steps StepLR(15, 0.25) at the *start* of each epoch: 0-based epoch 14 already has the decayed lr
    vt = SchedulerSection(name="step", step_size=15, gamma=0.25, epoch_offset=1)
    assert epoch_factor(vt, 13, 100) == 1 and epoch_factor(vt, 14, 100) == 0.25
    # DMUE backbone table (lr / 1e-4): <6: 1, <12: .5, <20: .1, <22: .1, <25: .5, else .1
    dmue = SchedulerSection(name="piecewise", milestones=[6, 12, 20, 22, 25], values=[1, 0.5, 0.1, 0.1, 0.5, 0.1])
    assert [epoch_factor(dmue, e, 36) for e in (0, 5, 6, 11, 12, 21, 22, 24, 25, 35)] == pytest.approx([1, 1, .5, .5, .1, .1, .5, .5, .1, .1])


def test_warmup_groups_and_unscheduled_groups():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    groups, sources = build_param_groups(model, OptimizerSection(), [ParamGroupSection(pattern=r"^1\.", lr=0.5, momentum=0.0, scheduled=False)])
    assert [len(g["params"]) for g in groups] == [2, 2] and groups[1]["lr"] == 0.5
    lambdas = build_lr_lambdas(SchedulerSection(name="exponential", gamma=0.5, warmup_steps=4), sources, steps_per_epoch=10, total_steps=30)
    assert [lambdas[0](s) for s in (0, 3, 10, 25)] == pytest.approx([0.25, 1.0, 0.5, 0.25])
    assert {lambdas[1](s) for s in (0, 3, 10, 25)} == {1.0}
    with pytest.raises(RecipeError, match="matches no parameter"):
        build_param_groups(model, OptimizerSection(), [ParamGroupSection(pattern="centers")])
    optimizer = build_optimizer(groups, OptimizerSection(name="sgd", lr=0.1, momentum=0.9))
    assert optimizer.param_groups[0]["momentum"] == 0.9 and optimizer.param_groups[1]["momentum"] == 0.0


def test_sam_step_by_hand():
    """f(w) = ½‖w‖², SGD(lr 0.1) base: w ← w − 0.1·∇f(w + ρ·w/‖w‖)."""
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5)
    (0.5 * (w**2).sum()).backward()
    sam.first_step()
    assert torch.allclose(w.detach(), torch.tensor([3.3, 4.4]))  # 0.5 * [3, 4] / 5 added
    (0.5 * (w**2).sum()).backward()
    sam.second_step()
    assert torch.allclose(w.detach(), torch.tensor([3.0 - 0.33, 4.0 - 0.44]))


# ---------------------------------------------------------------------------------------------- data


def test_samplers():
    labels = [0] * 10 + [1] * 3 + [2] * 5
    mrr = EpochSampler(labels, "mrr", seed=0)
    order = list(mrr)
    assert len(order) == len(mrr) == 9 and len(set(order)) == 9
    assert np.bincount(np.asarray(labels)[order]).tolist() == [3, 3, 3]
    assert list(EpochSampler(labels, "mrr", seed=0)) == order  # same (seed, epoch): same order
    mrr.set_training_epoch(1)
    assert list(mrr) != order
    balanced = EpochSampler([0] * 900 + [1] * 100, "class_balanced", seed=0)
    share = np.mean(np.asarray([0] * 900 + [1] * 100)[list(balanced)])
    assert 0.42 < share < 0.58
    plain = EpochSampler(labels, "random", seed=5)
    assert sorted(plain) == list(range(len(labels)))


def test_custom_augmentations():
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    torch.manual_seed(0)
    crops = {tuple(RandomFiveCrop(4)(image)[0, 0].tolist()) for _ in range(60)}
    assert len(crops) == 5  # four corners + centre
    flips = noise = same = 0
    for _ in range(400):
        out = FlipOrGaussianNoise()(image)
        if torch.equal(out, image):
            same += 1
        elif torch.equal(out, image.flip(-1)):
            flips += 1
        else:
            noise += 1
    assert 150 < same < 250 and 60 < flips < 140 and 60 < noise < 140


# ---------------------------------------------------------------------------------------------- end to end


def _run(args, env=None, **kwargs):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "hf_fer.cli", "train", *map(str, args), "--quiet", "--no-sample-predictions"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_kill_and_resume_gives_the_uninterrupted_weights(tmp_path):
    recipe = write_recipe(tmp_path, TINY_ARM)
    killed = _run(["--recipe", recipe, "--dataset", "synthetic", "--output", tmp_path / "killed"])
    # kill the run with SIGKILL once it has written a mid-epoch checkpoint (6 steps per epoch, checkpoint every 2)
    deadline = time.time() + 600
    while not (tmp_path / "killed" / "checkpoints" / "step_4").exists():
        assert killed.poll() is None, killed.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "last").exists(), "the run finished before it was killed"
    reference = _run(["--recipe", recipe, "--dataset", "synthetic", "--output", tmp_path / "reference"])
    resumed = _run(["--recipe", recipe, "--dataset", "synthetic", "--output", tmp_path / "killed", "--resume", "--force"])  # --force: the killed run left its lock
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resumed from" in out, out
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out
    expected = load_file(str(tmp_path / "reference" / "last" / "model.safetensors"))
    actual = load_file(str(tmp_path / "killed" / "last" / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-6, rtol=0, msg=name)
    kept = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert kept == ["step_10", "step_12"], kept  # keep_checkpoints: 2
    results = json.loads((tmp_path / "killed" / "training_results.json").read_text())
    assert results["history"][-1]["num_samples"] == 37


def test_two_processes_share_weights_and_count_every_eval_sample_once(tmp_path):
    values = json.loads(json.dumps(TINY_ARM))
    values["training"].update(epochs=1, checkpoint_every_steps=1)  # 96 faces / (2 x 16): 3 steps
    recipe = write_recipe(tmp_path, values)
    # The command: accelerate 1.x itself would run `--cpu` jobs as ONE process; hf_fer re-launches N gloo ranks.
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_FER_RANK_CHECKSUMS=str(tmp_path / "ranks"))
    env.pop("ACCELERATE_USE_CPU", None)

    def launch(*extra, **more_env):
        return subprocess.run(
            [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
             "--dynamo_backend", "no", str(REPO / "scripts" / "train.py"), "--recipe", str(recipe), "--dataset", "synthetic",
             "--output", str(tmp_path / "ddp"), "--quiet", "--no-sample-predictions", *extra],
            cwd=REPO, env=dict(env, **more_env), capture_output=True, text=True, timeout=900,
        )

    # killed in step 3, then resumed from the mid-epoch step_2 (gloo ranks run on device cpu:<rank>, which loading once refused)
    result = launch(HF_FER_FAULT_POINT="mid_step:3")
    assert result.returncode != 0 and (tmp_path / "ddp" / "checkpoints" / "step_2").is_dir(), result.stdout[-3000:] + result.stderr[-5000:]
    result = launch("--resume", "--force")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "launching 2 CPU processes" in result.stderr
    assert "resumed from" in result.stdout and "(step 2, epoch 0, batch 2)" in result.stdout, result.stdout
    ranks = [json.loads(p.read_text()) for p in sorted((tmp_path / "ranks").glob("rank*.json"))]
    assert len(ranks) == 2 and ranks[0]["num_processes"] == 2
    assert ranks[0]["checksums"] == ranks[1]["checksums"]
    results = json.loads((tmp_path / "ddp" / "training_results.json").read_text())
    assert results["num_processes"] == 2 and results["status"] == "finished" and results["global_step"] == 3
    # 37 validation faces over 2 processes x batch 16: uneven last batch, each sample counted exactly once
    assert results["history"][-1]["num_samples"] == 37
    assert sum(results["history"][-1]["per_class"][name]["support"] for name in results["history"][-1]["label_names"]) == 37


def test_cpu_launch_command_lines_are_recognised():
    from hf_fer.training.launch import requested_cpu_processes

    accelerate = "/venv/bin/accelerate"
    assert requested_cpu_processes([sys.executable, accelerate, "launch", "--cpu", "--num_processes", "2", "train.py"]) == 2
    assert requested_cpu_processes([sys.executable, "-m", "accelerate.commands.launch", "--num_processes=4", "--cpu", "t.py"]) == 4
    assert requested_cpu_processes([sys.executable, accelerate, "launch", "--num_processes", "2", "train.py"]) is None  # GPUs
    assert requested_cpu_processes([sys.executable, accelerate, "launch", "--cpu", "train.py"]) is None
    assert requested_cpu_processes(["/bin/bash", "run.sh", "--cpu", "--num_processes", "2"]) is None  # not accelerate


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_uses_the_fused_kernel_and_matches_the_per_tensor_update(name, cls):
    """On CPU parameters the recipe's Adam/AdamW is torch's fused kernel (one kernel per step, not a Python loop over
    tensors), and after a few steps its weights equal those of torch's reference per-tensor implementation."""
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    model.load_state_dict(reference.state_dict())
    section = OptimizerSection(name=name, lr=1e-2, weight_decay=1e-2)
    optimizer = build_optimizer([{"params": list(model.parameters())}], section)
    assert isinstance(optimizer, cls) and optimizer.defaults["fused"] is True
    expected = cls(reference.parameters(), lr=1e-2, weight_decay=1e-2, foreach=False)
    inputs, targets = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for net, opt in ((model, optimizer), (reference, expected)):
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(inputs), targets).backward()
            opt.step()
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

"""POSTER V2: exact conversion of upstream checkpoints, checked against the upstream parity fixtures.

The fixtures (tests/fixtures/parity/poster_v2_{7,8}cls) hold the upstream state-dict layout (747
entries, regenerated from a seed) and the logits the *upstream* model produced for them, so these tests
compare our converted model with an independent source.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import harness
from hf_fer.models.poster_v2.modeling_poster_v2 import relative_position_index


class RecorderMeter:
    """Stand-in for upstream main.py's RecorderMeter: pickled as `__main__.RecorderMeter`, holds numpy arrays."""

    def __init__(self, total_epoch: int):
        self.total_epoch = total_epoch
        self.current_epoch = 3
        self.epoch_losses = np.zeros((total_epoch, 2), dtype=np.float32)
        self.epoch_accuracy = np.full((total_epoch, 2), 91.5, dtype=np.float32)


class RecorderMeter1:
    """Stand-in for upstream main.py's RecorderMeter1 (confusion-matrix bookkeeping)."""

    def __init__(self, total_epoch: int):
        self.total_epoch = total_epoch
        self.y_pred = np.arange(10, dtype=np.int64)
        self.y_true = np.arange(10, dtype=np.int64)


RecorderMeter.__module__ = "__main__"
RecorderMeter1.__module__ = "__main__"


def make_upstream_container(state_dict: dict[str, torch.Tensor]) -> dict:
    """What upstream main.py passes to torch.save at the end of an epoch.

    Upstream saves CUDA tensors (`DataParallel(model).cuda()`); they cannot be created on this CPU-only
    machine, so the tensors here are on CPU. Everything else matches: `module.` prefixes, epoch, a 0-d
    `best_acc` tensor, the SAM optimizer state (param groups + per-parameter `old_p` copies) and the two
    pickled `__main__` recorder objects holding numpy arrays.
    """
    params = [k for k, v in state_dict.items() if v.is_floating_point() and "running_" not in k]
    return {
        "epoch": 4,
        "state_dict": {"module." + k: v for k, v in state_dict.items()},
        "best_acc": torch.tensor(92.21),
        "optimizer": {
            "state": {i: {"old_p": state_dict[k].clone()} for i, k in enumerate(params[:5])},
            "param_groups": [{"rho": 0.05, "adaptive": False, "lr": 3.5e-5, "betas": (0.9, 0.999), "eps": 1e-8,
                              "weight_decay": 0, "amsgrad": False, "params": list(range(len(params)))}],
        },
        "recorder1": RecorderMeter1(200),
        "recorder": RecorderMeter(200),
    }


@pytest.fixture
def recorders_in_main(monkeypatch):
    """Make `__main__.RecorderMeter*` importable while torch.save pickles them, as in upstream's training run."""
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "RecorderMeter", RecorderMeter, raising=False)
    monkeypatch.setattr(main, "RecorderMeter1", RecorderMeter1, raising=False)


def check_upstream_parity(fixture: str, num_labels: int, cli_args, tmp_path, capsys) -> None:
    """Upstream container -> converter CLI -> logits equal upstream's (after import hf_fer and via remote code)."""
    model, outputs, _ = harness.run_parity(fixture, "poster_v2", make_upstream_container, tmp_path, cli_args=cli_args)
    assert outputs.logits.shape == (2, num_labels)
    printed = capsys.readouterr().out
    # 747 upstream entries: 36 dead-module entries (spec §4) + the 3 recomputed relative-position indices dropped
    assert "loaded 708 tensors, dropped 39 unused upstream keys, 0 unexpected, 0 missing" in printed, printed
    assert "14,562,653 parameters" in printed, printed  # the dead parameters of spec §10 (58,316,594 - 43,753,941)
    assert "__main__.RecorderMeter" in printed  # the pickled recorders were read as inert stubs, never executed
    assert sum(p.numel() for p in model.parameters()) == 43_753_941 + (768 + 1) * (num_labels - 7)
    return model


def test_parity_7_classes_rafdb(tmp_path, recorders_in_main, capsys):
    model = check_upstream_parity("poster_v2_7cls", 7, ("--dataset", "raf-db"), tmp_path, capsys)
    assert [model.config.id2label[i] for i in range(7)] == ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    landmark = model.poster_v2.landmark_backbone
    assert not any(p.requires_grad for p in landmark.parameters()), "landmark network must stay frozen after from_pretrained"
    model.train()
    assert not any(p.requires_grad for p in landmark.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if "landmark_backbone" not in n)


def test_relative_position_index_matches_upstream_buffers():
    """Our recomputed index equals the upstream buffers shipped with the fixture."""
    from safetensors.torch import load_file

    fixed = load_file(str(harness.FIXTURES / "poster_v2_7cls" / "fixed_buffers.safetensors"))
    for scale, window in zip((1, 2, 3), (28, 14, 7)):
        assert torch.equal(relative_position_index(window), fixed[f"attn{scale}.relative_position_index"])

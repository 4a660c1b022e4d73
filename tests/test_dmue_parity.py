"""DMUE inference parity: both upstream checkpoint formats -> the converter CLI -> upstream's logits.

References are upstream outputs stored in ``tests/fixtures/parity/dmue`` (the deployed single-branch model of
``make_target_model.py``) and ``tests/fixtures/parity/dmue/multibranch`` (``logits_normal``: the multi-branch
model's "normal" phase, which equals the converted model). Both through ``import hf_fer`` and through remote
code in a Python where ``hf_fer`` cannot be imported (``harness.run_parity``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch

import harness
import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.labels import id2label

ATOL = 1e-4  # spec §15; measured max difference ~2e-6


def converted_weights_file(state_dict):
    """What upstream ``convert_weights.py`` writes: a bare OrderedDict, no prefix."""
    return OrderedDict(state_dict)


def training_snapshot(state_dict):
    """What upstream ``train.py`` writes: the DataParallel model's bare state dict, every key prefixed ``module.``."""
    return OrderedDict(("module." + key, value) for key, value in state_dict.items())


def test_parity_converted_inference_weights(tmp_path):
    model, outputs, fixture_io = harness.run_parity("dmue", "dmue", converted_weights_file, tmp_path, atol=ATOL, rtol=0,
                                                         cli_args=("--dataset", "affectnet-8"))
    assert model.config.use_aux_branches is False
    assert model.num_parameters() == 11_181_632  # spec §2 / §14
    assert model.config.id2label == id2label("affectnet-8")  # upstream's released model: AffectNet, native order
    with torch.no_grad():
        hidden_states = model(pixel_values=fixture_io["pixel_values"], output_hidden_states=True).hidden_states
    harness.assert_close(hidden_states[-1], fixture_io["base_feature_map"], atol=ATOL, what="stage-4 feature map")
    assert [tuple(h.shape[1:]) for h in hidden_states] == [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_parity_training_snapshot_to_deployed_model(tmp_path):
    """A ``module.``-prefixed 9-branch snapshot becomes the target-branch model, as ``convert_weights.py`` does."""
    model, outputs, fixture_io = harness.run_parity(
        "dmue/multibranch", "dmue", training_snapshot, tmp_path, atol=ATOL, rtol=0, logits_key="logits_normal",
        cli_args=("--dataset", "affectnet-8"),
    )
    assert model.config.use_aux_branches is False
    assert model.num_parameters() == 11_181_632
    assert not any(k.startswith(("aux_", "uncertainty_head")) for k in model.state_dict())

"""The shared plumbing, proven on a throwaway architecture (tests/toy_arch) with a hand-made fixture.

The "upstream" model here is an independent implementation (an nn.Sequential with upstream-style key
names and a dead auxiliary head); the fixture is produced exactly like the shared parity fixtures
(``fixture_weights.generate`` + logits of the upstream model), so the harness is exercised end to end.
"""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import fixture_weights
import harness
from hf_fer.models import ARCHITECTURES, Architecture, register_architecture


class UpstreamToy(nn.Module):
    def __init__(self, hidden: int = 8, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, classes)
        self.aux_head = nn.Linear(hidden, 5)  # trained upstream, never used at inference

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


@pytest.fixture(scope="module")
def toy_arch():
    ARCHITECTURES["toy"] = Architecture("toy", "Toy", "a throwaway test architecture", package="toy_arch")
    register_architecture(ARCHITECTURES["toy"])
    yield ARCHITECTURES["toy"]
    del ARCHITECTURES["toy"]


@pytest.fixture(scope="module")
def toy_fixture(tmp_path_factory):
    """A parity fixture in the shared format: entries + seed, pixel_values + upstream logits."""
    folder = tmp_path_factory.mktemp("toy_fixture")
    upstream = UpstreamToy().eval()
    entries = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in upstream.state_dict().items()]
    (folder / "fixture.json").write_text(json.dumps({"arch": "toy", "num_labels": 3, "seed": 0, "entries": entries, "fixed": []}))
    weights = {k: torch.from_numpy(v) for k, v in fixture_weights.generate(entries, seed=0).items()}
    upstream.load_state_dict(weights, strict=True)
    pixel_values = torch.from_numpy(np.random.default_rng(1234).standard_normal((2, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        logits = upstream(pixel_values)
    save_file({"pixel_values": pixel_values, "logits": logits}, str(folder / "io.safetensors"))
    return folder


def dataparallel_container(state_dict):
    return {"epoch": 7, "model_state_dict": {"module." + k: v for k, v in state_dict.items()}, "best_acc": torch.tensor(91.5)}


def test_parity_through_cli_and_remote_code(toy_arch, toy_fixture, tmp_path):
    model, outputs, fixture_io = harness.run_parity(
        toy_fixture, "toy", dataparallel_container, tmp_path, cli_args=["--id2label", "anger,happiness,neutral"]
    )
    assert model.config.id2label == {0: "anger", 1: "happiness", 2: "neutral"}
    assert outputs.logits.shape == (2, 3)


def test_parity_detects_a_wrong_conversion(toy_arch, toy_fixture, tmp_path, monkeypatch):
    """The harness must be able to fail: swapping two output rows of the head breaks parity."""
    from toy_arch import convert_toy_original

    original = convert_toy_original.convert

    def broken(state_dict, **kwargs):
        state_dict = dict(state_dict)
        state_dict["fc.weight"] = state_dict["fc.weight"][[1, 0, 2]]
        return original(state_dict, **kwargs)

    monkeypatch.setattr(convert_toy_original, "convert", broken)
    with pytest.raises(AssertionError, match="logits"):
        harness.run_parity(toy_fixture, "toy", dataparallel_container, tmp_path, remote_code=False)


def test_converter_reports_dropped_keys(toy_arch, toy_fixture, tmp_path, capsys):
    harness.run_parity(toy_fixture, "toy", dataparallel_container, tmp_path, remote_code=False)
    printed = capsys.readouterr().out
    assert "dropped 2 unused upstream keys" in printed and "aux_head" in printed
    assert "'module.' prefix stripped" in printed


def test_num_labels_must_agree_with_names(toy_arch, toy_fixture, tmp_path):
    with pytest.raises(ValueError, match="disagrees"):
        harness.run_parity(toy_fixture, "toy", dataparallel_container, tmp_path, cli_args=["--num-labels", "3", "--dataset", "raf-db"])


def _tiny_toy():
    from toy_arch import ToyConfig, ToyForImageClassification

    torch.manual_seed(0)
    config = ToyConfig(num_labels=3, id2label={0: "anger", 1: "happiness", 2: "neutral"}, label2id={"anger": 0, "happiness": 1, "neutral": 2})
    return ToyForImageClassification(config).eval()


def test_save_load_roundtrip(toy_arch, tmp_path):
    harness.check_save_load_roundtrip(_tiny_toy(), torch.randn(2, 3, 32, 32), tmp_path)


def test_remote_code_without_hf_fer(toy_arch, tmp_path):
    from toy_arch import ToyImageProcessor

    folder = harness.check_remote_code(_tiny_toy(), ToyImageProcessor(), torch.randn(2, 3, 32, 32), tmp_path)
    assert {"configuration_toy.py", "modeling_toy.py", "layers_toy.py", "image_processing_toy.py"} <= {p.name for p in folder.glob("*.py")}


def test_pipeline_returns_label_names(toy_arch, tmp_path):
    from toy_arch import ToyImageProcessor

    predictions = harness.check_pipeline(_tiny_toy(), ToyImageProcessor(), tmp_path)
    assert predictions[0]["score"] >= predictions[-1]["score"]

"""Shared test harness every architecture reuses (see docs/adding_an_architecture.md).

- :func:`run_parity`: upstream-layout weights (regenerated from a parity fixture) → the container the
  upstream training script wrote → the converter CLI → ``AutoModelForImageClassification`` → logits
  compared with the upstream logits stored in the fixture (and, by default, the same through remote
  code in a Python where ``hf_fer`` cannot be imported).
- :func:`check_save_load_roundtrip`, :func:`check_remote_code`, :func:`check_pipeline`: the
  transformers-integration checks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import fixture_weights

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures" / "parity"
REPO = TESTS.parent


def _fixture_dir(fixture: str | os.PathLike) -> Path:
    path = Path(fixture)
    return path if path.is_absolute() else FIXTURES / path


def load_fixture_meta(fixture: str | os.PathLike) -> dict:
    return json.loads((_fixture_dir(fixture) / "fixture.json").read_text())


def load_fixture_state_dict(fixture: str | os.PathLike, seed: int | None = None) -> dict[str, torch.Tensor]:
    """The upstream-layout state dict of a fixture (entries regenerated with the vendored generator)."""
    return fixture_weights.load_fixture_state_dict(_fixture_dir(fixture), seed=seed)


def load_fixture_io(fixture: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The fixture's inputs and upstream outputs (``pixel_values``, ``logits``, intermediates...)."""
    return load_file(str(_fixture_dir(fixture) / "io.safetensors"))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0, what: str = "logits") -> None:
    actual = actual.detach().float().cpu()
    expected = expected.detach().float().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: max |diff| {diff:.3g} > atol {atol}\n{m}")


def convert_with_cli(arch: str, checkpoint: str | os.PathLike | None, output: str | os.PathLike, cli_args=()) -> Path:
    """Run ``scripts/convert_original_checkpoint.py`` (in-process, through ``hf_fer.conversion.main``)."""
    from hf_fer.conversion import main

    argv = ["--arch", arch, "--output", str(output), *map(str, cli_args)]
    if checkpoint is not None:
        argv[2:2] = ["--checkpoint", str(checkpoint)]
    assert main(argv) == 0
    return Path(output)


def run_parity(
    fixture: str | os.PathLike,
    arch: str,
    make_container: Callable[[dict[str, torch.Tensor]], Any],
    tmp_path: Path,
    cli_args=(),
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int | None = None,
    remote_code: bool = True,
    logits_key: str = "logits",
):
    """Convert a fixture's upstream checkpoint with the CLI and compare logits with upstream's.

    ``make_container(state_dict)`` must return the object the upstream script passed to
    ``torch.save`` (container dict, ``module.`` prefixes...). With ``seed`` other than the fixture's,
    the weights differ from those the logits were computed with, so only conversion is exercised (no
    logits comparison). Returns ``(model, outputs, fixture_io)``.
    """
    from transformers import AutoModelForImageClassification

    state_dict = load_fixture_state_dict(fixture, seed=seed)
    checkpoint = tmp_path / "upstream_checkpoint.pth"
    torch.save(make_container(state_dict), checkpoint)
    output = convert_with_cli(arch, checkpoint, tmp_path / "converted", cli_args)

    saved = sorted(p.name for p in output.iterdir())
    assert "model.safetensors" in saved or any(n.endswith(".safetensors") for n in saved), saved
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in saved), f"non-safetensors weights written: {saved}"
    assert "config.json" in saved and "preprocessor_config.json" in saved, saved
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == arch
    assert "auto_map" in config and "AutoModelForImageClassification" in config["auto_map"], config.get("auto_map")
    assert all(not str(v).startswith("LABEL_") for v in config["id2label"].values()), config["id2label"]

    model = AutoModelForImageClassification.from_pretrained(output).eval()
    fixture_io = load_fixture_io(fixture)
    with torch.no_grad():
        outputs = model(pixel_values=fixture_io["pixel_values"])
    compare = seed is None or seed == load_fixture_meta(fixture)["seed"]
    if compare:
        assert_close(outputs.logits, fixture_io[logits_key], atol=atol, rtol=rtol)
        if remote_code:
            remote_logits = logits_in_fresh_python(output, fixture_io["pixel_values"], tmp_path)
            assert_close(remote_logits, fixture_io[logits_key], atol=atol, rtol=rtol, what="remote-code logits")
    return model, outputs, fixture_io


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_fer"] = None  # any `import hf_fer` now raises ImportError
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoImageProcessor, AutoModelForImageClassification
    folder, inputs, outputs = sys.argv[1:4]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert "hf_fer" not in type(model).__module__.split(".")[0]
    with torch.no_grad():
        logits = model(pixel_values=load_file(inputs)["pixel_values"]).logits
    save_file({"logits": logits.contiguous()}, outputs)
    print("REMOTE_OK", type(model).__name__, type(processor).__name__)
    """
)


def logits_in_fresh_python(folder: str | os.PathLike, pixel_values: torch.Tensor, tmp_path: Path) -> torch.Tensor:
    """Load ``folder`` with ``trust_remote_code=True`` in a subprocess where ``import hf_fer`` fails."""
    inputs, outputs = tmp_path / "remote_inputs.safetensors", tmp_path / "remote_logits.safetensors"
    save_file({"pixel_values": pixel_values.contiguous()}, str(inputs))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", _REMOTE_SCRIPT, str(folder), str(inputs), str(outputs)],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600,
    )
    assert result.returncode == 0 and "REMOTE_OK" in result.stdout, (
        f"remote-code load failed (rc={result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}"
    )
    return load_file(str(outputs))["logits"]


def check_save_load_roundtrip(model, pixel_values: torch.Tensor, tmp_path: Path) -> None:
    """``save_pretrained`` writes safetensors only; the reloaded model gives identical logits."""
    from transformers import AutoModelForImageClassification

    model = model.eval()
    folder = tmp_path / "roundtrip"
    model.save_pretrained(folder)
    files = sorted(p.name for p in folder.iterdir())
    assert any(n.endswith(".safetensors") for n in files), files
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for n in files), f"non-safetensors files: {files}"
    reloaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        before = model(pixel_values=pixel_values).logits
        after = reloaded(pixel_values=pixel_values).logits
    assert torch.equal(before, after), f"reloaded logits differ by {(before - after).abs().max().item():.3g}"
    assert reloaded.config.id2label == model.config.id2label


def check_remote_code(model, image_processor, pixel_values: torch.Tensor, tmp_path: Path) -> Path:
    """``register_for_auto_class`` + save, then load in a Python without hf_fer: identical logits."""
    from hf_fer.conversion import save_with_remote_code

    model = model.eval()
    folder = tmp_path / "remote_code"
    save_with_remote_code(model, image_processor, folder)
    config = json.loads((folder / "config.json").read_text())
    assert {"AutoConfig", "AutoModelForImageClassification"} <= set(config["auto_map"]), config.get("auto_map")
    processor_config = json.loads((folder / "preprocessor_config.json").read_text())
    assert "AutoImageProcessor" in processor_config.get("auto_map", {}), processor_config
    py_files = [p.name for p in folder.glob("*.py")]
    assert py_files, "no remote-code files were copied next to the weights"
    for source in folder.glob("*.py"):
        # "# Copied from hf_fer.models..." markers (utils/check_copies.py) are comments, not imports
        text = "\n".join(line for line in source.read_text().splitlines() if not line.lstrip().startswith("# Copied from hf_fer."))
        assert "import hf_fer" not in text and "from hf_fer" not in text, f"{source.name} imports hf_fer: not self-contained"
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
    remote = logits_in_fresh_python(folder, pixel_values, tmp_path)
    assert torch.allclose(remote, expected, atol=1e-6, rtol=1e-6), f"remote-code logits differ by {(remote - expected).abs().max().item():.3g}"
    return folder


def synthetic_face(image_size: int = 112, seed: int = 0, expression: str = "happiness"):
    """One PIL face from the embedded renderer (real-looking input for processors and pipelines)."""
    from hf_fer.data.synthetic import render_face

    return render_face(expression, np.random.default_rng(seed), image_size)


def check_pipeline(model, image_processor, tmp_path: Path, image=None) -> list[dict]:
    """``pipeline("image-classification")`` on a PIL image returns the config's class names with probabilities."""
    from transformers import pipeline

    folder = tmp_path / "pipeline_model"
    model.eval().save_pretrained(folder)
    image_processor.save_pretrained(folder)
    classifier = pipeline("image-classification", model=str(folder), trust_remote_code=False)
    image = image if image is not None else synthetic_face(224)
    predictions = classifier(image, top_k=model.config.num_labels)
    names = set(model.config.id2label.values())
    assert len(predictions) == model.config.num_labels
    assert {p["label"] for p in predictions} == names, (predictions, names)
    assert not any(p["label"].startswith("LABEL_") for p in predictions)
    assert abs(sum(p["score"] for p in predictions) - 1.0) < 1e-4
    return predictions

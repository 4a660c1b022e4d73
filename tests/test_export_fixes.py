"""`hf-fer export` regressions: a batch-dependent ARM (what `hf-fer convert --arch arm` writes) exports and its
parity is checked on the same batches; the export folder carries the code its ``auto_map`` names, so it loads as
remote code without hf_fer; an opset the dynamo exporter cannot write is a one-line error; ``OnnxClassifier``
preprocesses ConvNext-style folders (``crop_pct``) like transformers' own ConvNext image processor."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import hf_fer
from hf_fer.conversion import save_with_remote_code
from hf_fer.export import ONNX_FILE, REPORT_FILE, export_model, onnx_session
from hf_fer.models.arm import ArmForImageClassification
from hf_fer.onnx import ImagePreprocessor, OnnxClassifier
from tiny_models import tiny_config


@pytest.fixture(scope="module")
def batch_arm_export(tmp_path_factory):
    """A tiny ARM in ``affinity_mode="batch"``, saved with its remote code like a converted checkpoint, exported
    from its folder without ``calibrate_affinity``."""
    root = tmp_path_factory.mktemp("arm_batch")
    torch.manual_seed(0)
    model = ArmForImageClassification(tiny_config("arm", affinity_mode="batch")).eval()
    processor = hf_fer.image_processor_for(model.config)
    save_with_remote_code(model, processor, root / "model")
    with pytest.warns(UserWarning, match=r"depend on the other images in its batch.*calibrate_affinity"):
        result = export_model(root / "model", root / "onnx", num_parity_images=8)
    return model, processor, result


def test_batch_dependent_arm_exports_and_matches_pytorch_on_the_same_batches(batch_arm_export):
    model, _, result = batch_arm_export
    report = json.loads((result.output_dir / REPORT_FILE).read_text())
    assert report["passed"] and report["parity"]["fp32"]["max_abs_logit_diff"] <= 1e-4
    dependence = report["batch_dependence"]
    assert dependence["batch_dependent"] and dependence["max_abs_logit_diff_alone_vs_in_batch"] > 1e-3
    assert "calibrate_affinity" in dependence["note"]
    # independently of the report: ONNX Runtime and PyTorch on the same batch agree, and the batch matters to both
    session = onnx_session(result.output_dir / ONNX_FILE)
    pixel_values = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(pixel_values=pixel_values).logits.numpy()
        alone = model(pixel_values=pixel_values[:1]).logits.numpy()
    exported = session.run(None, {"pixel_values": pixel_values.numpy()})[0]
    assert np.abs(exported - reference).max() <= 1e-4
    assert np.abs(session.run(None, {"pixel_values": pixel_values[:1].numpy()})[0] - alone).max() <= 1e-4
    assert np.abs(alone - reference[:1]).max() > 1e-3


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_fer"] = None  # any `import hf_fer` now raises ImportError
    import numpy as np
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor
    config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(config).__module__.startswith("transformers_modules"), type(config).__module__
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    image = Image.fromarray(np.arange(80 * 90 * 3, dtype=np.uint8).reshape(80, 90, 3))
    np.save(sys.argv[2], processor(image, return_tensors="np")["pixel_values"])
    print("REMOTE_OK", type(config).__name__, config.affinity_mode, type(processor).__name__)
    """
)


def test_export_folder_loads_as_remote_code_without_hf_fer(batch_arm_export, tmp_path):
    _, processor, result = batch_arm_export
    config = json.loads((result.output_dir / "config.json").read_text())
    assert {f"{name.split('.')[0]}.py" for name in config["auto_map"].values()} <= {p.name for p in result.output_dir.iterdir()}
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), PYTHONPATH="")
    run = subprocess.run([sys.executable, "-c", _REMOTE_SCRIPT, str(result.output_dir), str(tmp_path / "pixels.npy")],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "REMOTE_OK ArmConfig batch ArmImageProcessor" in run.stdout
    image = Image.fromarray(np.arange(80 * 90 * 3, dtype=np.uint8).reshape(80, 90, 3))
    expected = processor(image, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(np.load(tmp_path / "pixels.npy"), expected, atol=1e-6)


def test_opset_below_the_exporters_minimum_is_a_one_line_error(tmp_path):
    model = ArmForImageClassification(tiny_config("arm", affinity_mode="batch")).eval()
    with pytest.raises(ValueError, match=r"--opset 17: torch.onnx's dynamo exporter writes opset 18 or later"):
        export_model(model, tmp_path / "out", image_processor=hf_fer.image_processor_for(model.config), opset=17)
    assert not (tmp_path / "out").exists()
    run = subprocess.run([sys.executable, "-m", "hf_fer.cli", "export", "--model", "unused", "--format", "onnx",
                          "--opset", "17", "--output", str(tmp_path / "cli")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "error: --opset 17: torch.onnx's dynamo exporter writes opset 18 or later" in run.stderr
    assert not (tmp_path / "cli").exists()


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random image (resampling filters differ most on pixel noise, which faces do not have)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


@pytest.mark.parametrize("shortest_edge", [64, 384])
def test_onnx_preprocessing_follows_convnext_crop_pct(shortest_edge, tmp_path):
    """Against transformers' PIL ConvNext processor: short side to shortest_edge / crop_pct then a centre square
    below 384 px, a warp to a square from 384 px."""
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    reference = ConvNextImageProcessorPil(size={"shortest_edge": shortest_edge}, crop_pct=0.8)
    reference.save_pretrained(tmp_path)
    ours = ImagePreprocessor(json.loads((tmp_path / "preprocessor_config.json").read_text()))
    images = [_photo(97, 131, 0), _photo(150, 75, 1), _photo(64, 64, 2)]
    expected = reference(images, return_tensors="np")["pixel_values"]
    got = ours(images)
    assert got.shape == expected.shape == (3, 3, shortest_edge, shortest_edge)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_onnx_classifier_runs_a_convnext_export_like_the_pipeline(tmp_path):
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor, pipeline

    torch.manual_seed(0)
    labels = {i: name for i, name in enumerate(["anger", "happiness", "neutral"])}
    model = ConvNextForImageClassification(ConvNextConfig(
        num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, id2label=labels,
        label2id={v: k for k, v in labels.items()})).eval()
    processor = ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875)
    out = export_model(model, tmp_path / "onnx", image_processor=processor, num_parity_images=8).output_dir
    images = [_photo(97, 131, 3), _photo(150, 75, 4)]
    expected = pipeline("image-classification", model=model, image_processor=processor, device="cpu")(images, top_k=3)
    got = OnnxClassifier(out)(images, top_k=3)
    for row, want in zip(got, expected):
        assert [r["label"] for r in row] == [w["label"] for w in want]
        np.testing.assert_allclose([r["score"] for r in row], [w["score"] for w in want], atol=2e-3)


def test_crop_pct_of_an_unknown_processor_is_refused():
    with pytest.raises(ValueError, match=r"crop_pct is implemented for ConvNext image processors only, got image_processor_type 'PoolFormerImageProcessor'"):
        ImagePreprocessor({"size": {"shortest_edge": 64}, "crop_pct": 0.9, "image_processor_type": "PoolFormerImageProcessor"})


def test_the_cli_says_a_model_is_batch_dependent_once(batch_arm_export, tmp_path, capsys, recwarn):
    """`hf-fer export` prints the batch-dependence note as one `note:` line (it also came as a warning on stderr)."""
    from hf_fer.cli import main

    _, _, result = batch_arm_export
    model_folder = result.output_dir.parent / "model"
    assert main(["export", "--model", str(model_folder), "--output", str(tmp_path / "onnx"), "--num-parity-images", "4"]) == 0
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("depend on the other images in its batch") == 1
    assert not [w for w in recwarn if "depend on the other images" in str(w.message)]

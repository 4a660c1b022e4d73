"""GPU checks: every architecture, the fast paths, the face pipeline, ``hf-fer predict``, sharded prediction and
training on a CUDA device, each held to the CPU's results.

Skipped where no CUDA device is present (CI's machines have none): run ``pytest -p no:xdist tests/test_gpu.py`` on a
GPU machine (``scripts/gpu_checks.sh`` runs them with the GPU benchmarks). ``HF_FER_TEST_DEVICE=cpu`` runs the same
checks against the CPU, to debug the tests themselves without a GPU.

The references are independent of the device under test: the CPU's float32 results (other kernels, other
reduction orders) and, for the faces, ``expected_faces.json`` (the original RetinaFace ONNX model under onnxruntime).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hf_fer  # noqa: F401  (registers the Auto classes and the face pipeline)
from hf_fer.models import ARCHITECTURES
from tiny_models import TINY, input_shape, tiny_config

DEVICE = os.environ.get("HF_FER_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")

REPO = Path(__file__).resolve().parents[1]
FACES = Path(__file__).parent / "fixtures" / "faces"
PHOTOS = [FACES / f"sample{i}.jpg" for i in range(1, 7)]
EXPECTED = json.loads((FACES / "expected_faces.json").read_text())["images"]


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 off for the float32 comparisons (cuDNN convolutions use it by default: ~1e-3 relative error)."""
    if DEVICE != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _tiny_model(arch: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    overrides = {"affinity_mode": "running"} if arch == "arm" else {}  # batch-independent: one logit per image
    model = ARCHITECTURES[arch].model_class(tiny_config(arch, **overrides)).eval()
    return model, torch.randn(*input_shape(arch, batch_size=4))


def _logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=pixel_values).logits.float().cpu()


@pytest.mark.parametrize("arch", sorted(TINY))
def test_float32_on_the_gpu_matches_the_cpu(arch):
    model, pixel_values = _tiny_model(arch)
    expected = _logits(model, pixel_values)
    model.to(DEVICE)
    torch.testing.assert_close(_logits(model, pixel_values.to(DEVICE)), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("arch", sorted(TINY))
def test_low_precision_runtime_on_the_gpu(arch, dtype):
    """``--dtype bf16|fp16`` (autocast, float32 logits out) stays near the float32 logits."""
    from hf_fer.runtime import apply_runtime

    if DEVICE == "cpu" and dtype == "fp16":
        pytest.skip("fp16 autocast is a GPU path")
    model, pixel_values = _tiny_model(arch)
    expected = _logits(model, pixel_values)
    model.to(DEVICE)
    choice = apply_runtime(model, "eager", dtype)
    assert (choice.runtime, choice.dtype) == ("eager", dtype)
    with torch.no_grad():
        logits = model(pixel_values=pixel_values.to(DEVICE)).logits
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    error = (logits.cpu() - expected).abs().max().item()
    scale = expected.abs().max().item()
    print(f"{arch} {dtype}: max |logit - fp32| = {error:.2e} (logits up to {scale:.2f})")
    # relative to the logits' own size (random tiny models: DMUE's and POSTER V2's are ~0.01-0.04), so that a path
    # returning zeros or garbage fails; measured on an H200: at most 0.023x (VT-NR bf16)
    assert error <= 0.05 * scale + 1e-3, f"{arch} {dtype}: {error} against logits up to {scale}"


@pytest.mark.parametrize("arch", sorted(TINY))
def test_compiled_fullgraph_on_the_gpu_matches_eager(arch):
    """Inductor's generated kernels (Triton on a GPU) as one graph: same logits as eager on the same device."""
    model, pixel_values = _tiny_model(arch)
    model.to(DEVICE)
    pixel_values = pixel_values.to(DEVICE)
    eager = _logits(model, pixel_values)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    torch.testing.assert_close(_logits(compiled, pixel_values), eager, atol=1e-4, rtol=1e-4)


def test_auto_runtime_on_the_gpu_picks_and_runs_the_fast_path():
    """``auto`` on a GPU with native bf16, for a long run at batch 32: torch.compile + bf16 (the shipped model
    compiles as one graph). It must then give the float32 CPU predictions."""
    from transformers import AutoModelForImageClassification

    from hf_fer.runtime import COMPILE_MIN_IMAGES, apply_runtime

    model = AutoModelForImageClassification.from_pretrained(hf_fer.pretrained_path()).eval()
    pixel_values = torch.rand(32, 1, 64, 64)
    expected = _logits(model, pixel_values)
    model.to(DEVICE)
    torch._dynamo.reset()
    choice = apply_runtime(model, "auto", "auto", batch_size=32, expected_images=COMPILE_MIN_IMAGES)
    print(choice.describe())
    if DEVICE == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        assert (choice.runtime, choice.dtype) == ("compile", "bf16"), choice.describe()
    for _ in range(2):  # the second call runs the compiled graph (and CUDA graphs, where used) again
        logits = _logits(model, pixel_values.to(DEVICE))
    probabilities, reference = logits.softmax(-1), expected.softmax(-1)
    assert (probabilities - reference).abs().max() < 0.05
    margin = reference.topk(2).values.diff(dim=-1).abs().squeeze(-1)
    clear = margin > 0.05  # images whose best class is not a near tie
    assert (logits.argmax(-1)[clear] == expected.argmax(-1)[clear]).all()


@pytest.fixture(scope="module")
def cpu_faces():
    from transformers import pipeline

    return pipeline("facial-expression-recognition", device="cpu")([str(p) for p in PHOTOS], batch_size=6)


def _box(face) -> list[float]:
    return [face["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")]


def _assert_same_faces(got: list, expected: list, *, box_px: float, score_tolerance: float) -> tuple[float, float]:
    """Same faces (the reference ones), boxes within ``box_px``, scores within ``score_tolerance``, the same best label
    wherever it is not a near tie. Returns the largest box and score differences."""
    from torchvision.ops import box_iou

    assert [len(faces) for faces in got] == [len(faces) for faces in expected] == [EXPECTED[p.name]["num_faces"] for p in PHOTOS]
    worst_box = worst_score = 0.0
    for photo, faces, reference in zip(PHOTOS, got, expected):
        iou = box_iou(torch.tensor([_box(f) for f in faces]), torch.tensor([f["box"] for f in EXPECTED[photo.name]["faces"]]))
        assert (iou.max(dim=1).values >= 0.5).all(), (photo.name, iou)
        for face, ref in zip(faces, reference):
            box_difference = max(abs(a - b) for a, b in zip(_box(face), _box(ref)))
            assert box_difference <= box_px, (photo.name, face["box"], ref["box"])
            scores = {entry["label"]: entry["score"] for entry in face["labels"]}
            ref_scores = {entry["label"]: entry["score"] for entry in ref["labels"]}
            score_difference = max(abs(scores[k] - ref_scores[k]) for k in ref_scores)
            assert score_difference <= score_tolerance, (photo.name, scores, ref_scores)
            ranked = [entry["score"] for entry in ref["labels"]]
            if ranked[0] - ranked[1] > 2 * score_tolerance:
                assert face["labels"][0]["label"] == ref["labels"][0]["label"], (photo.name, face["labels"][:2], ref["labels"][:2])
            worst_box, worst_score = max(worst_box, box_difference), max(worst_score, score_difference)
    return worst_box, worst_score


# Crops are warped from uint8 pixels and rounded back to uint8, so a box or landmark moved by a few hundredths of a
# pixel (the detector's float32 kernels differ between devices) changes some crop pixels by one level; the shipped
# mini-Xception's scores move by up to ~0.011 when the CPU's own boxes and landmarks are jittered by +-0.02 px.
DEVICE_SCORE_TOLERANCE = 0.03


def test_face_pipeline_on_the_gpu_gives_the_cpu_faces(cpu_faces):
    """Detection, alignment and classification on the GPU: the 22 reference faces, the CPU's boxes and scores."""
    from transformers import pipeline

    fer = pipeline("facial-expression-recognition", device=DEVICE)
    assert fer.device.type == DEVICE and next(fer.model.parameters()).device.type == DEVICE
    gpu_faces = fer([str(p) for p in PHOTOS], batch_size=6)
    print("GPU vs CPU: max box / score difference %.4f px / %.4f" % _assert_same_faces(
        gpu_faces, cpu_faces, box_px=0.5, score_tolerance=DEVICE_SCORE_TOLERANCE))
    # other batch sizes on the GPU: cuDNN may pick other kernels for other batch shapes, so equal up to float noise
    print("GPU default batch vs 6: %.4f px / %.4f" % _assert_same_faces(
        fer([str(p) for p in PHOTOS]), gpu_faces, box_px=0.5, score_tolerance=DEVICE_SCORE_TOLERANCE))
    print("GPU one by one vs batch of 6: %.4f px / %.4f" % _assert_same_faces(
        [fer(str(p)) for p in PHOTOS], gpu_faces, box_px=0.5, score_tolerance=DEVICE_SCORE_TOLERANCE))


def test_face_pipeline_in_bf16_on_the_gpu(cpu_faces):
    """The half-precision classifier (``runtime_dtype``) and a half-precision model (``dtype``) find the same faces;
    scores move by bf16's rounding only."""
    from transformers import pipeline

    autocast = pipeline("facial-expression-recognition", device=DEVICE, runtime="eager", runtime_dtype="bf16")
    print("bf16 autocast vs CPU fp32: %.4f px / %.4f" % _assert_same_faces(
        autocast([str(p) for p in PHOTOS], batch_size=6), cpu_faces, box_px=0.5, score_tolerance=0.06))
    if DEVICE == "cuda":
        cast = pipeline("facial-expression-recognition", device=DEVICE, dtype=torch.bfloat16)
        assert cast.model.dtype == torch.bfloat16
        print("bf16 weights vs CPU fp32: %.4f px / %.4f" % _assert_same_faces(
            cast([str(p) for p in PHOTOS], batch_size=6), cpu_faces, box_px=0.5, score_tolerance=0.06))


def _cli(*args, cwd=REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "hf_fer.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_predict_command_on_the_gpu(tmp_path, cpu_faces):
    """``hf-fer predict FOLDER --device cuda`` with the auto runtime: every face of the six photos, annotated."""
    output, annotated = tmp_path / "faces.jsonl", tmp_path / "annotated"
    run = _cli("predict", str(FACES), "--device", DEVICE, "--output", str(output), "--annotate", str(annotated), "--quiet")
    assert run.returncode == 0, run.stderr
    rows = {Path(row["file"]).name: row["faces"] for row in map(json.loads, output.read_text().splitlines())}
    assert sorted(rows) == sorted(p.name for p in PHOTOS) and sum(map(len, rows.values())) == 22
    assert sorted(p.name for p in annotated.iterdir()) == sorted(p.name for p in PHOTOS)
    agreeing = sum(face["labels"][0]["label"] == reference["labels"][0]["label"]
                   for photo, faces in zip(PHOTOS, cpu_faces) for face, reference in zip(rows[photo.name], faces))
    print(f"predict --device {DEVICE}: {agreeing}/22 top-1 labels equal to the CPU pipeline's; stderr: {run.stderr.strip()[-300:]}")
    assert agreeing >= 20


def test_sharded_prediction_on_the_gpu_matches_the_cpu(tmp_path):
    """``hf-fer predict --dataset`` (one process, the GPU) gives the CPU's labels and probabilities."""
    pytest.importorskip("datasets")
    from hf_fer.batch_predict import predict_dataset, read_predictions
    from hf_fer.data.synthetic import make_synthetic_fer

    folder = tmp_path / "faces"
    make_synthetic_fer(48, image_size=48, seed=3).save_to_disk(str(folder))
    options = {"chunk_size": 16, "batch_size": 8, "quiet": True}
    predict_dataset(folder, tmp_path / "cpu", device="cpu", **options)
    predict_dataset(folder, tmp_path / "gpu", device=DEVICE, **options)
    cpu, gpu = read_predictions(tmp_path / "cpu").to_pydict(), read_predictions(tmp_path / "gpu").to_pydict()
    assert gpu["row"] == cpu["row"] == list(range(48))
    assert gpu["label_1"] == cpu["label_1"]
    worst = max(abs(a - b) for got, want in zip(gpu["probabilities"], cpu["probabilities"]) for a, b in zip(got, want))
    assert worst <= 1e-3, worst


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_training_on_the_gpu(tmp_path, mixed_precision):
    """``hf-fer train`` on the GPU (plain and bf16 mixed precision): the run finishes on the GPU, its loss falls, and
    the saved model loads on a CPU."""
    pytest.importorskip("datasets")
    import yaml

    if DEVICE == "cpu" and mixed_precision != "no":
        pytest.skip("CPU run of the test: one precision is enough")
    recipe = {
        "model": {"arch": "arm", "label_space": "raf-db",
                  "config": {"image_size": 32, "backbone_depths": [1, 1, 1, 1], "affinity_mode": "running",
                             "de_albino_kernel_size": 8, "de_albino_stride": 4},
                  "image_processor": {"size": {"height": 32, "width": 32}}},
        "data": {"synthetic": {"num_train": 256, "num_validation": 64, "num_test": 64, "image_size": 32, "seed": 1,
                               "label_space": "raf-db", "difficulty": "easy"}},
        "training": {"seed": 3, "epochs": 3, "batch_size": 32, "eval_batch_size": 32, "mixed_precision": mixed_precision,
                     "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = _cli("train", "--recipe", str(tmp_path / "recipe.yaml"), "--dataset", "synthetic", "--output", str(tmp_path / "out"),
               "--quiet", "--no-sample-predictions")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(run.stdout[-1500:], run.stderr[-1500:])
    info = json.loads((tmp_path / "out" / "training_info.json").read_text())
    assert info["device"].startswith(DEVICE) and info["mixed_precision"] == mixed_precision, (info["device"], info["mixed_precision"])
    history = json.loads((tmp_path / "out" / "training_results.json").read_text())["history"]
    losses = [epoch["train_loss"] for epoch in history]
    assert len(losses) == 3 and all(map(math.isfinite, losses)) and losses[-1] < losses[0], losses
    # the weights saved from the GPU load on a CPU-only machine
    from hf_fer.evaluation.inference import load_model_for_inference

    loaded = load_model_for_inference(tmp_path / "out", device="cpu").model
    assert next(loaded.parameters()).device.type == "cpu" and torch.isfinite(_logits(loaded, torch.randn(2, 3, 32, 32))).all()

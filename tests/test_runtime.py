"""`--runtime` / `--dtype` (hf_fer.runtime): what `auto` picks on this machine and why, that every path it can
pick gives the eager predictions, and that explicit choices without what they need fail with a clear message.

The shipped mini-Xception (trained, small) is exported once for the module: fp32 and int8 ONNX files in the model's
`onnx/` sub-folder, as `hf-fer export --output MODEL/onnx` writes them.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.data.synthetic import synthetic_arrays
from hf_fer.export import export_model
from hf_fer.pretrained import pretrained_path
from hf_fer.runtime import COMPILE_MIN_IMAGES, apply_runtime, choose_runtime, find_onnx_export
from transformers import AutoImageProcessor, AutoModelForImageClassification


def _cpu_flags_from_proc() -> set[str]:
    for line in open("/proc/cpuinfo"):
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "mini"
    shutil.copytree(pretrained_path(), folder)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    # gate at 0: this module tests the runtime, not the quantization (tests/test_export.py measures that)
    export_model(model, folder / "onnx", image_processor=AutoImageProcessor.from_pretrained(folder), quantize="int8",
                 num_parity_images=32, num_calibration_images=32, min_agreement=0.0)
    return folder


def _faces(folder, count=16):
    processor = AutoImageProcessor.from_pretrained(folder)
    images, _, _ = synthetic_arrays(count, image_size=64, seed=11, label_space="fer2013")
    return processor(images=list(images), return_tensors="pt")["pixel_values"]


def test_auto_without_export_is_eager_and_says_why():
    model = AutoModelForImageClassification.from_pretrained(pretrained_path()).eval()
    choice = choose_runtime(model, device="cpu", model_path=pretrained_path(), batch_size=1, expected_images=1)
    assert choice.runtime == "eager" and "not faster than eager on CPU" in choice.reason
    # bf16 by default only on CPUs with AMX bf16 (read here from /proc/cpuinfo, independently of the library)
    assert choice.dtype == ("bf16" if "amx_bf16" in _cpu_flags_from_proc() else "fp32")
    assert choice.describe().startswith(f"runtime eager, dtype {choice.dtype}: ")
    # torch.compile: never picked on CPU (measured: no gain once warm-up is counted); on a GPU for long runs of
    # models known to compile as one graph (choose_runtime does not touch the device, so "cuda" can be asked here)
    assert choose_runtime(model, device="cpu", batch_size=32, expected_images=10 * COMPILE_MIN_IMAGES).runtime == "eager"
    assert choose_runtime(model, "auto", "fp32", device="cuda", batch_size=32, expected_images=COMPILE_MIN_IMAGES).runtime == "compile"
    assert choose_runtime(model, "auto", "fp32", device="cuda", batch_size=1, expected_images=COMPILE_MIN_IMAGES).runtime == "eager"
    plain = torch.nn.Conv2d(1, 1, 1)  # not known to compile without graph breaks
    assert choose_runtime(plain, "auto", "fp32", device="cuda", batch_size=32, expected_images=COMPILE_MIN_IMAGES).runtime == "eager"


def test_auto_dtype_on_a_gpu_with_native_bf16_follows_the_batch(monkeypatch):
    """On a GPU (its bf16 capability stubbed here: choose_runtime only reads it), eager bf16 autocast is picked only
    from GPU_BF16_MIN_BATCH on, or with torch.compile: measured on an H200, eager bf16 ran at 0.50-0.77x fp32 at
    batch 1, so batch-1 latency never gets worse than fp32 eager under `auto`."""
    import hf_fer.benchmark
    from hf_fer.runtime import GPU_BF16_MIN_BATCH

    monkeypatch.setattr(hf_fer.benchmark, "bf16_support", lambda device: hf_fer.benchmark.Bf16Support("native", "stub GPU"))
    model = AutoModelForImageClassification.from_pretrained(pretrained_path()).eval()
    one = choose_runtime(model, device="cuda", batch_size=1, expected_images=1)
    assert (one.runtime, one.dtype) == ("eager", "fp32") and "slower than fp32" in one.reason
    assert choose_runtime(model, device="cuda", batch_size=GPU_BF16_MIN_BATCH - 1).dtype == "fp32"
    assert choose_runtime(model, device="cuda", batch_size=GPU_BF16_MIN_BATCH).dtype == "bf16"
    long_run = choose_runtime(model, device="cuda", batch_size=32, expected_images=COMPILE_MIN_IMAGES)
    assert (long_run.runtime, long_run.dtype) == ("compile", "bf16")
    assert choose_runtime(model, "compile", device="cuda", batch_size=1).dtype == "bf16"
    assert choose_runtime(model, "eager", "bf16", device="cuda", batch_size=1).dtype == "bf16"  # asked for: kept


def test_auto_picks_a_passed_int8_export_and_matches_onnx_runtime(exported):
    import onnxruntime

    model = AutoModelForImageClassification.from_pretrained(exported).eval()
    pixel_values = _faces(exported)
    with torch.no_grad():
        eager = model(pixel_values=pixel_values).logits
    choice = apply_runtime(model, "auto", "fp32")
    assert choice.runtime == "int8" and choice.onnx_file == exported / "onnx" / "model_int8.onnx", choice
    got = model(pixel_values=pixel_values).logits
    session = onnxruntime.InferenceSession(str(exported / "onnx" / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got.numpy(), session.run(None, {"pixel_values": pixel_values.numpy()})[0], rtol=0, atol=1e-6)
    agreement = float((got.argmax(-1) == eager.argmax(-1)).float().mean())
    print(f"\nmini-Xception int8 via runtime auto: top-1 agreement {agreement:.1%} on {len(got)} synthetic faces")
    assert agreement >= 0.75

    choice = apply_runtime(model, "onnx")  # fp32 export: the eager logits
    assert choice.runtime == "onnx"
    torch.testing.assert_close(model(pixel_values=pixel_values).logits, eager, atol=1e-4, rtol=0)
    assert apply_runtime(model, "eager", "fp32").runtime == "eager"  # back to PyTorch
    torch.testing.assert_close(model(pixel_values=pixel_values).logits, eager, atol=0, rtol=0)


def test_int8_file_without_a_passed_report_is_not_used(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    report = json.loads((copy / "onnx" / "parity_report.json").read_text())
    report["parity"]["int8"]["passed"] = False
    (copy / "onnx" / "parity_report.json").write_text(json.dumps(report))
    assert find_onnx_export(copy, precision="int8") is None and find_onnx_export(copy, precision="fp32") is not None
    model = AutoModelForImageClassification.from_pretrained(copy).eval()
    choice = choose_runtime(model, "auto", "fp32", model_path=copy)  # falls back to the fp32 export
    assert choice.runtime == "onnx" and choice.onnx_file == copy / "onnx" / "model.onnx"
    (copy / "onnx" / "model.onnx").unlink()
    assert choose_runtime(model, "auto", "fp32", model_path=copy).runtime == "eager"
    with pytest.raises(ValueError, match=r"runtime int8: no model_int8.onnx that passed its parity check in .*hf-fer export"):
        choose_runtime(model, "int8", model_path=copy)
    with pytest.raises(ValueError, match="dtype must be auto or fp32, got bf16"):
        choose_runtime(model, "onnx", "bf16", model_path=copy)
    with pytest.raises(ValueError, match="runtime must be one of"):
        choose_runtime(model, "tensorrt")


def test_bf16_autocast_keeps_fp32_logits_and_predictions():
    model = AutoModelForImageClassification.from_pretrained(pretrained_path()).eval()
    pixel_values = _faces(pretrained_path(), 32)
    with torch.no_grad():
        eager = model(pixel_values=pixel_values).logits
        choice = apply_runtime(model, "eager", "bf16")
        got = model(pixel_values=pixel_values).logits
    assert choice.dtype == "bf16" and got.dtype == torch.float32
    assert float((got - eager).abs().max()) < 0.5 and float((got.argmax(-1) == eager.argmax(-1)).float().mean()) >= 0.8


def test_face_pipeline_and_predict_cli_accept_runtime(exported, capsys):
    from hf_fer.faces.pipeline import TASK
    from transformers import pipeline

    images = [img for img in synthetic_arrays(4, image_size=64, seed=3, label_space="fer2013")[0]]
    reference = pipeline(TASK, model=str(exported))(list(images), detect=False, top_k=1)
    fast = pipeline(TASK, model=str(exported), runtime="onnx")
    assert fast.runtime_choice.runtime == "onnx"
    got = fast(list(images), detect=False, top_k=1)
    assert [r[0]["labels"][0]["label"] for r in got] == [r[0]["labels"][0]["label"] for r in reference]

    from PIL import Image

    Image.fromarray(images[0]).save(exported.parent / "face.png")
    from hf_fer.cli import main

    face = str(exported.parent / "face.png")
    assert main(["predict", face, "--no-detect", "--model", str(exported), "--runtime", "int8", "--json"]) == 0
    err = capsys.readouterr().err
    assert "\nruntime int8 (" in "\n" + err and "model_int8.onnx" in err
    assert main(["predict", face, "--no-detect", "--runtime", "int8"]) == 1  # the shipped model has no export beside it
    assert "error: runtime int8: no model_int8.onnx" in capsys.readouterr().err



def test_compile_runtime_matches_eager_under_inference_mode():
    """`--runtime compile`: ``torch.compile`` with Inductor's freezing on CPU (weights folded into the graph as
    constants and packed once for oneDNN; it applies only where gradients are off, as in the pipelines). Same
    logits as eager, in fp32 and under bf16 autocast (the best POSTER V2 path on AVX512-BF16 CPUs)."""
    model = AutoModelForImageClassification.from_pretrained(pretrained_path()).eval()
    pixel_values = _faces(pretrained_path(), 8)
    with torch.inference_mode():
        eager = model(pixel_values=pixel_values).logits
        choice = apply_runtime(model, "compile", "fp32")
        compiled = model(pixel_values=pixel_values).logits
        assert choice.runtime == "compile" and choice.dtype == "fp32"
        torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
        choice = apply_runtime(model, "compile", "bf16")
        low = model(pixel_values=pixel_values).logits
    assert choice.dtype == "bf16" and low.dtype == torch.float32
    assert float((low - eager).abs().max()) < 0.5 and float((low.argmax(-1) == eager.argmax(-1)).float().mean()) >= 0.75


_FAULTS_CHILD = """
import json, resource, sys
import torch
import hf_fer
from hf_fer.evaluation.inference import load_model_for_inference
from hf_fer.faces.pipeline import TASK, FacialExpressionRecognitionPipeline
from hf_fer.runtime import tune_cpu_allocator

torch.set_num_threads(1)
loaded = load_model_for_inference(hf_fer.pretrained_path(), device="cpu")
pipe = FacialExpressionRecognitionPipeline(model=loaded.model, image_processor=loaded.image_processor, device="cpu", task=TASK)
photos = sys.argv[1:]
for _ in range(2):  # warm: the first chunks fault their memory in whatever the settings
    pipe(photos, batch_size=len(photos))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    pipe(photos, batch_size=len(photos))
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (2 * len(photos))
print(json.dumps({"tuned": tune_cpu_allocator(), "faults_per_photo": faults}))
"""


def _pipeline_faults(env_overrides: dict[str, str]) -> dict:
    import os
    import subprocess
    import sys
    from pathlib import Path

    photos = [str(Path(__file__).parent / "fixtures" / "faces" / f"sample{i}.jpg") for i in (1, 5, 2, 6)]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_FER_TUNE_MALLOC", "GLIBC_TUNABLES", "LD_PRELOAD")
           and not (k.startswith("MALLOC_") and k.endswith("_"))}
    env.update(env_overrides)
    run = subprocess.run([sys.executable, "-c", _FAULTS_CHILD, *photos], env=env, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_face_pipeline_keeps_its_buffers_instead_of_faulting_them_in_every_chunk():
    """The face pipeline on CPU tunes glibc malloc (tune_cpu_allocator): once warm, a chunk of photos re-uses heap
    memory instead of mapping and page-faulting its 1-15 MB buffers in again (the cost behind a ~20 % slower batch).
    Counted in page faults (what the tuning changes), not in time; the opt-outs leave malloc alone."""
    tuned = _pipeline_faults({})
    untouched = _pipeline_faults({"HF_FER_TUNE_MALLOC": "0"})
    assert tuned["tuned"] is True and untouched["tuned"] is False
    assert tuned["faults_per_photo"] * 10 < untouched["faults_per_photo"], (tuned, untouched)
    # the user's own malloc settings win (checked without running the pipeline)
    import os
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20)}
    env.pop("HF_FER_TUNE_MALLOC", None)
    check = subprocess.run([sys.executable, "-c", "from hf_fer.runtime import tune_cpu_allocator; print(tune_cpu_allocator())"],
                           env=env, capture_output=True, text=True, check=True)
    assert check.stdout.strip().splitlines()[-1] == "False"

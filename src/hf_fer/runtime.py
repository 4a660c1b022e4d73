"""Choose and apply the fastest safe way to run a classifier on this machine: ``--runtime`` / ``--dtype``.

``runtime``: ``eager`` (PyTorch as is), ``compile`` (``torch.compile(fullgraph=True)``), ``onnx`` (ONNX Runtime on
the fp32 ``model.onnx`` of an ``hf-fer export`` folder), ``int8`` (its ``model_int8.onnx``), or ``auto``:

* ``int8`` when an int8 export that passed its parity gate is found (next to the model, in its ``onnx/``
  sub-folder, or given with ``onnx_path``) and ONNX Runtime is installed (CPU);
* ``onnx`` when an fp32 export is found (CPU): same logits within 1e-4, and faster than PyTorch eager at batch 1
  and 32 for every architecture measured (README table);
* ``compile`` on a GPU for long runs (``expected_images >= COMPILE_MIN_IMAGES`` at ``batch_size >= 8``) of a
  model known to compile as one graph (hf_fer's architectures, tested with ``fullgraph=True``). Not on CPU:
  measured there (2 cores, idle), fp32 ``torch.compile`` with freezing gives 1.3-1.45x eager at batch 32 for
  the ResNet-18 models and POSTER V2 but 0.94-1.16x at batch 1, after a 5-25 s warm-up (VT-NR: 60-70 s), so it is
  only used when asked for (``compile`` + ``bf16`` is the fastest PyTorch path on AVX512-BF16 CPUs: README table);
* ``eager`` otherwise.

``dtype``: ``fp32``, ``bf16`` / ``fp16`` (autocast: weights stay fp32, matmuls/convolutions run in the low
precision), or ``auto``: bf16 on a GPU with native bf16 when compiled or at batches of ``GPU_BF16_MIN_BATCH``
and more, and on CPUs with AMX (``amx_bf16``); fp32 elsewhere. On a GPU, eager bf16 autocast is slower than fp32
at small batches (its per-operation casts are launch-bound): measured on an H200, 0.50-0.77x fp32 eager at batch 1
and 0.83-1.04x at batch 32 for the convolutional models (VT-NR 1.74x), 1.05-1.67x at batch 256, and bf16 +
``torch.compile`` (CUDA graphs) 1.83-3.23x at batch 256.
AVX512-BF16 without AMX is not enough to pick it unasked: measured on such a CPU (idle, 2 cores), bf16 autocast
is 1.7-2.0x fp32 eager at batch 32 but 0.83x for mini-Xception at batch 1, and it changes predictions near ties
(99.5-99.9 % top-1 agreement on a trained POSTER V2); an emulated bf16 (AVX2 only) is ~25x slower. Ask for it
with ``dtype="bf16"`` where it pays.

:func:`apply_runtime` swaps the model's ``forward`` for the chosen path in place (``model(pixel_values=...)``
keeps returning an output with ``.logits``), so the transformers pipelines and hf_fer's face pipeline use it
without other changes; :meth:`RuntimeChoice.describe` is the one line saying what was picked and why.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["RUNTIMES", "DTYPES", "COMPILE_MIN_IMAGES", "GPU_BF16_MIN_BATCH", "RuntimeChoice", "find_onnx_export", "choose_runtime", "apply_runtime",
           "compile_for_inference", "tune_cpu_allocator", "TUNE_MALLOC_ENV"]

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "eager", "compile", "onnx", "int8")
DTYPES = ("auto", "fp32", "bf16", "fp16")
COMPILE_MIN_IMAGES = 2048  # images a run must expect before `auto` pays torch.compile's warm-up
GPU_BF16_MIN_BATCH = 64  # smallest batch at which `auto` runs eager bf16 autocast on a GPU (see the module docstring)
ONNX_FILE, INT8_FILE, REPORT_FILE = "model.onnx", "model_int8.onnx", "parity_report.json"
_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RuntimeChoice:
    runtime: str  # eager | compile | onnx | int8
    dtype: str  # fp32 | bf16 | fp16
    reason: str
    onnx_file: Path | None = None

    def describe(self) -> str:
        where = f" ({self.onnx_file})" if self.onnx_file else ""
        return f"runtime {self.runtime}{where}, dtype {self.dtype}: {self.reason}"


def _cpu_has(flag: str) -> bool:
    """Whether /proc/cpuinfo lists ``flag`` (False where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return any(flag in line.split(":", 1)[1].split() for line in handle if line.lower().startswith("flags"))
    except OSError:
        return False


def find_onnx_export(model_path: str | os.PathLike | None, onnx_path: str | os.PathLike | None = None,
                     precision: str = "int8") -> Path | None:
    """The exported file for ``precision`` (``int8`` / ``fp32``): ``onnx_path`` (a file or an export folder),
    else the model folder or its ``onnx/`` sub-folder. An int8 file counts only when its folder's parity report
    says it passed (``hf-fer export`` writes no int8 file otherwise; a copied or edited one is not trusted)."""
    name = INT8_FILE if precision == "int8" else ONNX_FILE
    candidates: list[Path] = []
    if onnx_path is not None:
        path = Path(onnx_path).expanduser()
        candidates.append(path if path.suffix == ".onnx" else path / name)
    elif model_path is not None and Path(model_path).is_dir():
        candidates += [Path(model_path) / name, Path(model_path) / "onnx" / name]
    for candidate in candidates:
        if candidate.is_file():
            if precision != "int8":
                return candidate
            report = candidate.parent / REPORT_FILE
            try:
                entry = json.loads(report.read_text(encoding="utf-8"))["parity"]["int8"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if entry.get("passed"):
                return candidate
    return None


def _compiles_fullgraph(model: torch.nn.Module) -> bool:
    """hf_fer's own architectures compile as one graph (tests/test_compile_fullgraph.py); others are not assumed to."""
    from .models import ARCHITECTURES

    return getattr(getattr(model, "config", None), "model_type", None) in ARCHITECTURES


def compile_for_inference(function, device: torch.device | str = "cpu", *, fullgraph: bool = False, dynamic: bool | None = None,
                          mode: str | None = None):
    """``torch.compile`` for inference. On CPU with Inductor's *freezing*: parameters become constants of the graph,
    so convolution/linear weights are packed once for oneDNN and constant casts (bf16 autocast) are folded away.
    Measured on POSTER V2 (2 AVX-512-BF16 cores, batch 32): fp32 compile 1.08x eager without freezing, 1.29x with;
    bf16 autocast + compile 2.02x without, 2.46x with. Freezing applies where gradients are off (``no_grad`` /
    ``inference_mode``: the pipelines), and the graph may hold packed copies of the weights it was compiled with:
    compile again after changing them. ``mode`` (e.g. CUDA graphs' ``"reduce-overhead"``) replaces the options
    elsewhere. Every hf_fer forward runs through transformers' ``can_return_tuple`` wrapper, one code object whose
    Dynamo cache all compiled models share: past ``torch._dynamo.config.recompile_limit`` graphs (8) in one process,
    Dynamo runs eager with a warning (the benchmark resets it per architecture)."""
    device = torch.device(device)
    if device.type == "cpu" and mode is None:
        return torch.compile(function, fullgraph=fullgraph, dynamic=dynamic, options={"freezing": True})
    return torch.compile(function, fullgraph=fullgraph, dynamic=dynamic, mode=mode)


def choose_runtime(model: torch.nn.Module, runtime: str = "auto", dtype: str = "auto", *, device: torch.device | str = "cpu",
                   model_path: str | os.PathLike | None = None, onnx_path: str | os.PathLike | None = None,
                   batch_size: int = 1, expected_images: int | None = None) -> RuntimeChoice:
    """Resolve ``auto`` (see the module docstring) and check explicit choices; raises ``ValueError`` naming what is
    missing (no export, no onnxruntime, a low precision that ONNX files do not have)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    device = torch.device(device)
    try:
        import onnxruntime  # noqa: F401

        have_ort = True
    except ImportError:
        have_ort = False

    if runtime in ("onnx", "int8"):
        if dtype not in ("auto", "fp32"):
            raise ValueError(f"runtime {runtime} runs the exported {'int8' if runtime == 'int8' else 'fp32'} graph: dtype must be auto or fp32, got {dtype}")
        if not have_ort:
            raise ValueError(f"runtime {runtime} needs onnxruntime (pip install 'hf_fer[onnx]')")
        found = find_onnx_export(model_path, onnx_path, "int8" if runtime == "int8" else "fp32")
        if found is None:
            where = onnx_path or model_path or "the model folder"
            raise ValueError(f"runtime {runtime}: no {INT8_FILE if runtime == 'int8' else ONNX_FILE}"
                             f"{' that passed its parity check' if runtime == 'int8' else ''} in {where} (or its onnx/ sub-folder); "
                             f"create one with: hf-fer export --model M --format onnx{' --quantize int8' if runtime == 'int8' else ''} --output DIR")
        return RuntimeChoice(runtime, "fp32", "asked for", found)

    # dtype for the PyTorch paths
    requested_dtype = dtype
    long_run = expected_images is not None and expected_images >= COMPILE_MIN_IMAGES and batch_size >= 8
    if dtype == "auto":
        from .benchmark import bf16_support

        support = bf16_support(device)
        compiled = runtime == "compile" or (runtime == "auto" and long_run and _compiles_fullgraph(model))
        if device.type == "cuda" and support.native and (compiled or batch_size >= GPU_BF16_MIN_BATCH):
            dtype, dtype_reason = "bf16", "native bf16 on this GPU" + (" (compiled: casts fused)" if compiled else f" at batch {batch_size}")
        elif device.type == "cuda" and support.native:
            dtype, dtype_reason = "fp32", (f"batch {batch_size}: eager bf16 autocast is slower than fp32 on a GPU below "
                                           f"batch {GPU_BF16_MIN_BATCH}")
        elif device.type == "cpu" and support.native and _cpu_has("amx_bf16"):
            dtype, dtype_reason = "bf16", "AMX bf16 on this CPU"
        else:
            dtype, dtype_reason = "fp32", (f"bf16 not faster here ({support.detail})" if device.type == "cpu"
                                           else f"no native bf16 on {device}")
    else:
        dtype_reason = "dtype asked for"

    if runtime == "auto":
        exported = have_ort and device.type == "cpu" and requested_dtype in ("auto", "fp32")  # an export is a deliberate choice
        int8 = find_onnx_export(model_path, onnx_path, "int8") if exported else None
        if int8 is not None:
            return RuntimeChoice("int8", "fp32", "an int8 export that passed its parity check was found", int8)
        fp32 = find_onnx_export(model_path, onnx_path, "fp32") if exported else None
        if fp32 is not None:
            return RuntimeChoice("onnx", "fp32", "an fp32 ONNX export was found (ONNX Runtime beats PyTorch eager on CPU)", fp32)
        if long_run and device.type == "cuda" and _compiles_fullgraph(model):
            return RuntimeChoice("compile", dtype, f"{expected_images} images at batch {batch_size}: compile warm-up pays off; {dtype_reason}")
        why = ("torch.compile is not faster than eager on CPU once its warm-up is counted" if device.type == "cpu"
               else "short run: torch.compile's warm-up would cost more than it saves" if _compiles_fullgraph(model)
               else "model not known to compile as one graph")
        return RuntimeChoice("eager", dtype, f"{why}; {dtype_reason}")
    return RuntimeChoice(runtime, dtype, f"asked for; {dtype_reason}")


class _OnnxForward:
    """``forward(pixel_values=...)`` running an exported file with ONNX Runtime."""

    def __init__(self, path: Path):
        from .export import INPUT_NAME, onnx_session

        self.session, self.input_name = onnx_session(path), INPUT_NAME

    def __call__(self, pixel_values: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import ImageClassifierOutput

        array = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = self.session.run(None, {self.input_name: array})[0]
        return ImageClassifierOutput(logits=torch.from_numpy(logits).to(pixel_values.device))


def apply_runtime(model: torch.nn.Module, runtime: str = "auto", dtype: str = "auto", *, model_path: str | os.PathLike | None = None,
                  onnx_path: str | os.PathLike | None = None, batch_size: int = 1, expected_images: int | None = None) -> RuntimeChoice:
    """Choose a path (:func:`choose_runtime`) and switch ``model`` to it in place (its ``forward``); returns the choice.
    Calling it again first restores the original ``forward``."""
    model.__dict__.pop("forward", None)  # undo an earlier apply_runtime
    original = model.forward
    model_path = model_path or getattr(model, "name_or_path", None) or None
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    choice = choose_runtime(model, runtime, dtype, device=device, model_path=model_path, onnx_path=onnx_path,
                            batch_size=batch_size, expected_images=expected_images)
    if choice.runtime in ("onnx", "int8"):
        model.forward = _OnnxForward(choice.onnx_file)
        return choice
    run = original
    if choice.runtime == "compile":
        run = compile_for_inference(original, device, fullgraph=_compiles_fullgraph(model))
    if choice.dtype != "fp32":
        low, inner = _TORCH_DTYPES[choice.dtype], run

        def run(*args, **kwargs):
            with torch.autocast(device.type, dtype=low):
                output = inner(*args, **kwargs)
            output.logits = output.logits.float()
            return output
    if run is not original:
        model.forward = run
    return choice


TUNE_MALLOC_ENV = "HF_FER_TUNE_MALLOC"
#: glibc's largest accepted M_MMAP_THRESHOLD on 64-bit systems: blocks up to this size come from the heap.
MALLOC_MMAP_THRESHOLD = 32 * 2**20
#: Free memory glibc may keep at the top of the heap before giving it back to the system.
MALLOC_TRIM_THRESHOLD = 256 * 2**20
_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Stop glibc's malloc from handing the pipeline's big buffers back to the system after every use (once per
    process; ``True`` when the settings are in force).

    Decoded photos, detector batches and the activations of CPU forwards are blocks of 1-15 MB, allocated and freed
    for every chunk. With glibc's default thresholds many of them are mapped fresh each time and returned at free,
    so the next chunk page-faults its memory in again: about 2,800 minor faults per photo in the face pipeline
    (measured, 8-photo chunks). Serving blocks up to 32 MB from the heap and keeping up to 256 MB of free heap
    brings that to tens, and 32 photos through the pipeline took 640-726 ms instead of 829-854 ms (2 cores, same
    run). Memory returns to the system later instead of at once; peak memory is unchanged.

    Left alone where the choice is the user's or not ours to make: ``HF_FER_TUNE_MALLOC=0``, glibc malloc settings
    already in the environment (``MALLOC_*_`` variables, ``GLIBC_TUNABLES`` with ``glibc.malloc``), another
    allocator preloaded (jemalloc, tcmalloc, mimalloc), or a C library other than glibc.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get(TUNE_MALLOC_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    preloaded = os.environ.get("LD_PRELOAD", "")
    if (any(key.startswith("MALLOC_") and key.endswith("_") for key in os.environ)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
            or any(name in preloaded for name in ("jemalloc", "tcmalloc", "mimalloc"))):
        return False
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    _allocator_tuned = mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) == 1 and mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD) == 1
    if _allocator_tuned:
        logger.info("glibc malloc: blocks up to %d MB from the heap, up to %d MB of free heap kept (%s=0 to leave it alone)",
                    MALLOC_MMAP_THRESHOLD >> 20, MALLOC_TRIM_THRESHOLD >> 20, TUNE_MALLOC_ENV)
    return _allocator_tuned

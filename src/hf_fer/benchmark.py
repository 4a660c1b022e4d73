"""``hf-fer benchmark`` / ``scripts/benchmark.py``: speed, memory, parameters and FLOPs of every architecture.

One run measures, for each available architecture built from its *default config with random weights*
(nothing is downloaded): parameter count, FLOPs per image (``torch.utils.flop_counter.FlopCounterMode``,
2 FLOPs per multiply-add, so papers' "FLOPs", which are usually multiply-adds, are half of it), peak memory of
one forward pass, and latency / images per second in several execution modes (eager, channels-last, bf16
autocast, ``torch.compile``, ONNX Runtime when installed). The machine's own matmul throughput is measured
first and used as the yardstick: "% of peak" says how well a model uses the hardware, independently of how
fast the hardware is.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .runtime import compile_for_inference

__all__ = ["MODES", "ModeResult", "ArchitectureResult", "Bf16Support", "bf16_support", "cpu_flags", "matmul_peak",
           "count_flops", "count_parameters", "peak_forward_memory", "benchmark_architecture", "run_benchmark", "build_parser", "main"]

MODES = ("eager", "channels_last", "bf16", "compile", "bf16_compile", "onnxruntime", "onnx_fused", "onnx_int8_matmul", "int8",
         "int8_mixed")
INT8_MODES = ("int8", "int8_mixed")  # calibrated static int8: CPU only
ONNX_MODES = ("onnxruntime", "onnx_fused", "onnx_int8_matmul")
QUICK_MODES = ("eager", "channels_last", "bf16")

@dataclass
class ModeResult:
    mode: str
    batch_size: int
    device: str
    status: str = "ok"  # ok | skipped | error
    reason: str | None = None
    latency_ms: float | None = None  # median time of one batch
    latency_p90_ms: float | None = None
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    timed_calls: int | None = None
    images_per_second: float | None = None
    percent_of_peak: float | None = None
    setup_seconds: float | None = None  # compile / export time
    cpu_ms_per_call: float | None = None  # process CPU time per timed call (survives contention from other work)
    peak_rss_mb: float | None = None  # process peak RSS after this mode (a high-water mark: it never goes down)
    top1_agreement: float | None = None  # vs fp32 eager on the same synthetic faces (meaningful at batch >= 8)
    ratio_to_eager: float | None = None  # images/s relative to fp32 eager measured in the same run


@dataclass
class ArchitectureResult:
    arch: str
    device: str
    image_size: tuple[int, int]
    params: int
    flops_per_image: int
    peak_memory_mb: float | None
    memory_method: str
    reference: dict | None = None
    config_overrides: dict = field(default_factory=dict)
    modes: list[ModeResult] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.flops_per_image / 2e9


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_flops(model: torch.nn.Module, pixel_values: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``pixel_values`` (matmul/conv-type ops, 2 per multiply-add).

    ``FlopCounterMode`` does not see inside fused SDPA kernels on every backend, so models whose
    attention implementation can be switched (transformers backbones) are counted in eager mode, and
    ``scaled_dot_product_attention`` runs on its math backend while counting.
    """
    from torch.utils.flop_counter import FlopCounterMode

    previous = getattr(getattr(model, "config", None), "_attn_implementation", None)
    switched = False
    if previous not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
            switched = True
        except Exception:  # noqa: BLE001 - counting still works, just without the attention matmuls
            switched = False
    from torch.nn.attention import SDPBackend, sdpa_kernel

    counter = FlopCounterMode(display=False)
    try:
        # FlopCounterMode has no formula for the fused CPU attention kernels: count through the math backend
        # (the same matmuls, made visible).
        with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
            model(pixel_values=pixel_values)
    finally:
        if switched:
            model.set_attn_implementation(previous)
    return int(counter.get_total_flops())


def training_throughput(name: str, *, device: torch.device | str = "cpu", batch_size: int = 8, warmup: int = 1,
                        iterations: int = 3, image_size: int | None = None, mixed_precision: str = "no") -> dict:
    """Training images/s of one architecture: forward with labels (the model's own loss), backward, AdamW step.

    One plain optimizer step; recipes with SAM (POSTER V2) do two forward/backward passes per step.
    ``mixed_precision="bf16"``: the forward under bf16 autocast, as a recipe's ``training.mixed_precision: bf16`` runs it.
    """
    from .models import ARCHITECTURES

    arch = ARCHITECTURES[name]
    device = torch.device(device)
    torch.manual_seed(0)
    model = arch.model_class(arch.config_class(**arch.training_config)).train().to(device)
    height, width = (image_size, image_size) if image_size else _image_size(arch)
    num_labels = model.config.num_labels
    pixel_values = torch.randn(batch_size, getattr(model.config, "num_channels", 3), height, width, device=device)
    labels = torch.arange(batch_size, device=device) % num_labels  # every class present (DMUE's branches all run)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16"):
            loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = _time_calls(step, device, warmup, iterations)
    median = statistics.median(times)
    return {"arch": name, "device": str(device), "mixed_precision": mixed_precision, "batch_size": batch_size, "image_size": [height, width],
            "step_seconds": round(median, 4), "train_images_per_second": round(batch_size / median, 2),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "config_overrides": dict(arch.training_config)}


def peak_forward_memory(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[float | None, str]:
    """Peak memory (MiB) of one forward pass, weights included: CUDA allocator stats, or a tensor tracker on CPU."""
    device = pixel_values.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            model(pixel_values=pixel_values)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    try:
        from ._compat import torch_memory_tracker

        MemTracker = torch_memory_tracker()

        # The tracker hooks every parameter's gradient: frozen ones (POSTER V2's landmark branch) must look
        # trainable for the duration; inference_mode still computes no gradient.
        frozen = [parameter for parameter in model.parameters() if not parameter.requires_grad]
        for parameter in frozen:
            parameter.requires_grad_(True)
        try:
            tracker = MemTracker()
            tracker.track_external(model, pixel_values)
            with torch.inference_mode(), tracker:
                model(pixel_values=pixel_values)
        finally:
            for parameter in frozen:
                parameter.requires_grad_(False)
        peak = tracker.get_tracker_snapshot("peak")
        total = sum(values.get("Total", 0) for values in peak.values() if isinstance(values, dict))
        return total / 2**20, "MemTracker (tensors: weights + activations)"
    except Exception as error:  # a private torch tool: fall back to saying so rather than guessing
        return None, f"unavailable ({type(error).__name__})"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(run: Callable[[], object], device: torch.device, warmup: int, iterations: int,
                min_seconds: float = 0.0, max_iterations: int = 1000) -> list[float]:
    """Times of ``iterations`` calls after ``warmup`` ones; keeps going (up to ``max_iterations``) until the timed
    calls add up to ``min_seconds``, so fast models get enough calls for a stable median."""
    for _ in range(warmup):
        run()
    _synchronize(device)
    times = []
    while len(times) < iterations or (sum(times) < min_seconds and len(times) < max_iterations):
        start = time.perf_counter()
        run()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                iterations: int = 5, allow_tf32: bool | None = None) -> float:
    """Measured dense matmul throughput (FLOP/s) of this machine: the yardstick for "% of peak".
    ``allow_tf32`` (GPU, float32): measure with TF32 tensor cores on or off (default: torch's matmul setting)."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    saved = torch.backends.cuda.matmul.allow_tf32
    if allow_tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        times = _time_calls(lambda: a @ b, device, warmup=2, iterations=iterations)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * size**3 / min(times)


@dataclass
class Bf16Support:
    """Whether bf16 autocast can run on a device and whether the hardware computes it natively.

    ``status``: ``"native"`` (bf16 arithmetic units: AVX512-BF16 / AMX on x86, BF16 on Arm, Ampere+ GPUs),
    ``"emulated"`` (runs, via conversions to fp32: often many times *slower* than fp32), or ``"unsupported"``.
    """

    status: str
    detail: str

    @property
    def usable(self) -> bool:
        return self.status != "unsupported"

    @property
    def native(self) -> bool:
        return self.status == "native"


def bf16_support(device: torch.device | str = "cpu") -> Bf16Support:
    """bf16 capability from the runtime's own checks (the ones oneDNN / CUDA use), never assumed."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Bf16Support("native", f"{torch.cuda.get_device_name(device)}: bf16 tensor cores")
        if torch.cuda.is_bf16_supported(including_emulation=True):
            return Bf16Support("emulated", f"{torch.cuda.get_device_name(device)}: no native bf16")
        return Bf16Support("unsupported", f"{torch.cuda.get_device_name(device)}: no bf16")
    if device.type != "cpu":
        return Bf16Support("unsupported", f"bf16 autocast not measured on {device.type}")
    from ._compat import cpu_bf16_capabilities

    capabilities = cpu_bf16_capabilities()  # torch has no public bf16 query: its private probes, in one place
    onednn = capabilities["onednn_bf16"]  # AVX-512 (BW/VL/DQ) on x86, BF16 on Arm; False in a build without oneDNN
    if platform.machine().lower() in ("aarch64", "arm64"):
        native = onednn  # oneDNN's Arm check is the BF16 instruction extension itself
        units = "Arm BF16" if native else "no Arm BF16 extension"
    else:
        avx512_bf16, amx = capabilities["avx512_bf16"], capabilities["amx_tile"]
        native = avx512_bf16 or amx
        units = ", ".join(name for name, present in (("avx512_bf16", avx512_bf16), ("amx", amx)) if present) or "no avx512_bf16/amx_bf16"
    if native:
        return Bf16Support("native", f"CPU: {units}")
    return Bf16Support("emulated", f"CPU: {units}; oneDNN bf16 path {'available (AVX-512 conversions)' if onednn else 'unavailable'}")


def cpu_flags() -> list[str]:
    """The SIMD/matrix flags of this CPU that decide fp32/bf16 speed (from /proc/cpuinfo; empty where unavailable)."""
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "bf16", "asimd", "sve")
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith(("flags", "features")):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in present]
    except OSError:
        pass
    return []


class _OnnxFiles:
    """The model exported once per architecture (the graph ``hf-fer export`` writes: dynamic batch, opset 18,
    eager attention) and its variants for the ONNX Runtime modes, each built on first use and deleted by
    :meth:`close` (sessions keep their graphs in memory):

    * ``onnxruntime``: the export as is (ONNX Runtime applies its own load-time optimisations);
    * ``onnx_fused``: after ONNX Runtime's transformer fusions (:func:`hf_fer.export.fuse_transformer_ops`);
    * ``onnx_int8_matmul``: the fused graph with dynamic int8 MatMuls (:func:`hf_fer.export.quantize_matmuls_dynamic`);
    * ``int8``: the export in static int8, as ``hf-fer export --quantize int8`` (:func:`hf_fer.export.quantize_onnx_int8`),
      calibrated on ``calibration``;
    * ``int8_mixed``: ``int8`` plus dynamic int8 MatMuls, as ``hf-fer export --quantize int8-mixed``.
    """

    FILES = {"onnxruntime": "model.onnx", "onnx_fused": "fused.onnx", "onnx_int8_matmul": "fused_int8_matmul.onnx",
             "int8": "int8.onnx", "int8_mixed": "int8_mixed.onnx"}

    def __init__(self, model: torch.nn.Module, example: torch.Tensor, calibration: torch.Tensor):
        self.model, self.example, self.calibration = model, example, calibration
        self.folder: tempfile.TemporaryDirectory | None = None
        self.notes: dict[str, str] = {}

    def path(self, mode: str) -> Path:
        from .export import (DEFAULT_OPSET, _export_onnx, exportable_attention, fuse_transformer_ops, quantize_matmuls_dynamic,
                             quantize_onnx_int8)

        if self.folder is None:
            self.folder = tempfile.TemporaryDirectory(prefix="hf_fer_onnx_")
        path = Path(self.folder.name) / self.FILES[mode]
        if path.exists():
            return path
        if mode == "onnxruntime":
            with exportable_attention(self.model), torch.no_grad():
                _export_onnx(self.model.to(memory_format=torch.contiguous_format), self.example, path, DEFAULT_OPSET)
        elif mode == "onnx_fused":
            fused = fuse_transformer_ops(self.path("onnxruntime"), path)["fused_operators"]
            self.notes[mode] = "fused: " + (", ".join(f"{op} x{count}" for op, count in fused.items()) or "nothing matched")
        elif mode == "onnx_int8_matmul":
            quantize_matmuls_dynamic(self.path("onnx_fused"), path)
            self.notes[mode] = "fused graph + dynamic int8 MatMuls (per-channel int8 weights, no calibration)"
        elif mode == "int8":
            kept = quantize_onnx_int8(self.path("onnxruntime"), path, self.calibration.cpu().numpy())["fallback"]["float_nodes"]
            self.notes[mode] = (f"ONNX Runtime static int8 (QDQ, per-channel int8 weights x uint8 activations, Conv; depthwise Conv "
                                f"in float), calibrated on {len(self.calibration)} synthetic faces; {len(kept)} Conv kept in float by the fallback")
        elif mode == "int8_mixed":
            quantize_matmuls_dynamic(self.path("int8"), path)
            self.notes[mode] = self.notes["int8"] + "; then dynamic int8 MatMuls (per-channel int8 weights)"
        return path

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


def _onnx_runner(files: _OnnxFiles, mode: str, pixel_values: torch.Tensor, device: torch.device):
    """A callable running one of :class:`_OnnxFiles`' graphs with ONNX Runtime on ``pixel_values``.

    On CPU the session gets PyTorch's thread count and no spin-waiting: idle worker threads that spin burn CPU
    time without doing work, which made ONNX Runtime look worse than it is in CPU time (the wall time at
    batch 32 is the same either way)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if device.type == "cuda":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(files.path(mode)), options, providers=providers)
    feed = {"pixel_values": pixel_values.detach().cpu().numpy()}
    return lambda: session.run(None, feed)


def _logits(output) -> torch.Tensor:
    if isinstance(output, (list, tuple)):  # ONNX Runtime
        return torch.as_tensor(output[0])
    return output.logits.float().cpu()


def synthetic_pixel_values(batch_size: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Synthetic faces as model inputs (scaled to [-1, 1]; grayscale for 1-channel models): real-looking inputs,
    so "top-1 agreement vs fp32 eager" compares decisions on faces rather than on noise."""
    from .data.synthetic import synthetic_arrays

    images, _, _ = synthetic_arrays(batch_size, image_size=max(height, width), seed=seed)
    tensor = torch.as_tensor(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if channels == 1:
        tensor = tensor.mean(1, keepdim=True)
    tensor = torch.nn.functional.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    # Contiguous NCHW, as image processors return it: the permuted (channels-last strided) tensor would make "eager"
    # run every convolution channels-last, which is the channels_last mode's business.
    return tensor.contiguous()


def _peak_rss_mb() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):
        return None


def _image_size(arch) -> tuple[int, int]:
    """The model's input size: what its default image processor produces (resize, then crop if any)."""
    from PIL import Image

    processor = arch.image_processor_class()
    pixel_values = processor(images=[Image.new("RGB", (320, 320))], return_tensors="pt")["pixel_values"]
    return int(pixel_values.shape[-2]), int(pixel_values.shape[-1])


def benchmark_architecture(
    name: str,
    *,
    device: torch.device | str = "cpu",
    batch_sizes: Sequence[int] = (1, 8),
    modes: Sequence[str] = MODES,
    warmup: int = 2,
    iterations: int = 10,
    image_size: int | None = None,
    peaks: dict[str, float] | None = None,
    log: Callable[[str], None] = lambda text: None,
    min_seconds: float = 0.0,
) -> ArchitectureResult:
    """Measure one architecture built from its default config (random weights; see ``Architecture.benchmark_config``).

    Each mode times ``iterations`` calls after ``warmup`` ones, and more until they add up to ``min_seconds``.
    """
    from .models import ARCHITECTURES

    arch = ARCHITECTURES[name]
    device = torch.device(device)
    torch.manual_seed(0)
    overrides = arch.benchmark_config  # the registry's (hf_fer.models): where the default config is not the model people run
    model = arch.model_class(arch.config_class(**overrides)).eval().to(device)
    height, width = (image_size, image_size) if image_size else _image_size(arch)
    channels = getattr(model.config, "num_channels", 3)  # mini_xception takes 1-channel grayscale
    probe = torch.randn(1, channels, height, width, device=device)
    result = ArchitectureResult(
        arch=name, device=str(device), image_size=(height, width), params=count_parameters(model),
        flops_per_image=count_flops(model, probe), peak_memory_mb=None, memory_method="", reference=asdict(arch.reference_cost) if arch.reference_cost else None,
        config_overrides=dict(overrides),
    )
    result.peak_memory_mb, result.memory_method = peak_forward_memory(model, probe)
    peak_fp32 = (peaks or {}).get("fp32")
    peak_bf16 = (peaks or {}).get("bf16")  # only measured where bf16 is native: no "% of peak" against an emulation
    bf16 = bf16_support(device)
    compiled = compiled_bf16 = None
    # Every model's forward runs through transformers' `can_return_tuple` wrapper (one code object), so architectures
    # share Dynamo's per-code cache: after 8 graphs (batch sizes x autocast) Dynamo silently runs eager. Each
    # architecture starts from an empty cache.
    torch._dynamo.reset()
    # CUDA graphs where they help: small fixed-shape batches on a GPU ("reduce-overhead")
    compile_mode = "reduce-overhead" if device.type == "cuda" else None
    calibration = synthetic_pixel_values(32, channels, height, width, seed=99)
    onnx_files = _OnnxFiles(model, calibration[:2].to(device), calibration)  # exported once, for every ONNX mode and batch size
    for batch_size in batch_sizes:
        pixel_values = synthetic_pixel_values(batch_size, channels, height, width).to(device)
        with torch.inference_mode():
            reference = _logits(model(pixel_values=pixel_values)).argmax(-1)
        for mode in modes:
            entry = ModeResult(mode=mode, batch_size=batch_size, device=str(device))
            result.modes.append(entry)
            log(f"  {name} {mode} batch {batch_size} on {device}")
            try:
                setup_start = time.perf_counter()
                if mode == "eager":
                    run = lambda: model(pixel_values=pixel_values)  # noqa: E731
                elif mode == "channels_last":
                    model_cl = model.to(memory_format=torch.channels_last)
                    inputs_cl = pixel_values.contiguous(memory_format=torch.channels_last)
                    run = lambda: model_cl(pixel_values=inputs_cl)  # noqa: E731
                elif mode == "bf16":
                    if not bf16.usable:
                        entry.status, entry.reason = "skipped", bf16.detail
                        continue
                    if not bf16.native:
                        entry.reason = f"emulated ({bf16.detail})"

                    def run():
                        with torch.autocast(device.type, dtype=torch.bfloat16):
                            return model(pixel_values=pixel_values)
                elif mode == "compile":
                    if compiled is None:  # one compiled module for every batch size (`or` would call Module.__len__)
                        compiled = compile_for_inference(model, device, dynamic=False)  # one shape-specialised graph per batch size
                    with torch.inference_mode():
                        compiled(pixel_values=pixel_values)  # compile (and recompile per batch size) outside the timing
                    run = lambda: compiled(pixel_values=pixel_values)  # noqa: E731
                elif mode == "bf16_compile":  # the GPU recipe: autocast bf16 inside one compiled graph
                    if not bf16.usable:
                        entry.status, entry.reason = "skipped", bf16.detail
                        continue
                    if not bf16.native:
                        entry.reason = f"emulated ({bf16.detail})"
                    if compiled_bf16 is None:
                        compiled_bf16 = compile_for_inference(model, device, dynamic=False, mode=compile_mode)

                    def run():
                        with torch.autocast(device.type, dtype=torch.bfloat16):
                            return compiled_bf16(pixel_values=pixel_values)
                    with torch.inference_mode():
                        run()
                elif mode in INT8_MODES:
                    if device.type != "cpu":
                        entry.status, entry.reason = "skipped", "ONNX Runtime int8 is measured on CPU"
                        continue
                    try:
                        import onnxruntime  # noqa: F401
                    except ImportError:
                        entry.status, entry.reason = "skipped", "onnxruntime not installed (pip install hf_fer[onnx])"
                        continue
                    run = _onnx_runner(onnx_files, mode, pixel_values, device)
                    entry.reason = f"{onnx_files.notes[mode]}; {torch.get_num_threads()} threads, no spinning"
                elif mode in ONNX_MODES:
                    try:
                        import onnxruntime  # noqa: F401
                    except ImportError:
                        entry.status, entry.reason = "skipped", "onnxruntime not installed (pip install hf_fer[onnx])"
                        continue
                    if mode == "onnx_int8_matmul" and device.type != "cpu":
                        entry.status, entry.reason = "skipped", "dynamic int8 is measured on CPU"
                        continue
                    run = _onnx_runner(onnx_files, mode, pixel_values, device)
                    entry.reason = "; ".join(filter(None, [onnx_files.notes.get(mode), f"{torch.get_num_threads()} threads, no spinning"
                                                           if device.type == "cpu" else None]))
                else:
                    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
                entry.setup_seconds = round(time.perf_counter() - setup_start, 3)
                if device.type == "cuda":  # this mode's own peak, not the largest of the run so far
                    torch.cuda.reset_peak_memory_stats(device)
                with torch.inference_mode():
                    entry.top1_agreement = round(float((_logits(run()).argmax(-1) == reference.cpu()).float().mean()), 4)
                    cpu_start = time.process_time()
                    times = _time_calls(run, device, warmup, iterations, min_seconds=min_seconds)
                    entry.cpu_ms_per_call = round(1000 * (time.process_time() - cpu_start) / (len(times) + warmup), 3)
                entry.peak_rss_mb = _peak_rss_mb()
                if device.type == "cuda":
                    entry.peak_rss_mb = None
                    entry.reason = "; ".join(filter(None, [entry.reason, f"GPU peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"]))
            except Exception as error:  # one mode failing (no compiler, exporter gap) must not end the run
                entry.status, entry.reason = "error", _plain_text(f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}")
                continue
            finally:
                model.to(memory_format=torch.contiguous_format)
            median = statistics.median(times)
            entry.latency_ms = round(1000 * median, 3)
            entry.latency_p90_ms = round(1000 * sorted(times)[max(0, math.ceil(0.9 * len(times)) - 1)], 3)
            entry.latency_min_ms, entry.latency_max_ms = round(1000 * min(times), 3), round(1000 * max(times), 3)
            entry.timed_calls = len(times)
            entry.images_per_second = round(batch_size / median, 2)
            peak = peak_bf16 if mode in ("bf16", "bf16_compile") else peak_fp32
            if peak and mode not in INT8_MODES:
                entry.percent_of_peak = round(100 * result.flops_per_image * entry.images_per_second / peak, 2)
    onnx_files.close()  # (its temporary folder is also removed if an error ends the run early)
    for entry in result.modes:  # ratios to fp32 eager of the same batch size, same run
        eager = next((m for m in result.modes if m.mode == "eager" and m.batch_size == entry.batch_size and m.status == "ok"), None)
        if eager is not None and entry.images_per_second:
            entry.ratio_to_eager = round(entry.images_per_second / eager.images_per_second, 3)
    return result


def run_benchmark(
    architectures: Sequence[str] | None = None,
    *,
    devices: Sequence[str] = ("auto",),
    batch_sizes: Sequence[int] = (1, 8),
    modes: Sequence[str] = MODES,
    warmup: int = 2,
    iterations: int = 10,
    image_size: int | None = None,
    matmul_size: int | None = None,
    log: Callable[[str], None] = lambda text: None,
    min_seconds: float = 0.0,
    gpu_batch_sizes: Sequence[int] = (256,),
) -> dict:
    """Benchmark several architectures on several devices; returns a JSON-ready dict. GPUs also run
    ``gpu_batch_sizes`` (throughput batches)."""
    from .evaluation.inference import resolve_device
    from .models import ARCHITECTURES, available_architectures

    available = available_architectures()
    names = list(architectures) if architectures else available
    for name in names:
        if name not in ARCHITECTURES:
            raise ValueError(f"--arch {name!r}: unknown architecture; expected one of {sorted(ARCHITECTURES)}")
        if name not in available:
            raise ValueError(f"--arch {name!r}: its model folder is not installed")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"--modes {unknown}: expected some of {list(MODES)}")
    report = {
        "machine": {
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_flags": cpu_flags(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "settings": {"batch_sizes": list(batch_sizes), "modes": list(modes), "warmup": warmup, "iterations": iterations,
                     "min_seconds": min_seconds},
        "bf16": {},
        "peaks": {},
        "results": [],
        "failures": [],
    }
    for device_name in devices:
        device = resolve_device(device_name)
        if device.type == "cuda":
            report["machine"]["gpu"] = torch.cuda.get_device_name(device)
        log(f"matmul peak on {device}")
        # On a GPU, cuDNN runs float32 convolutions on TF32 tensor cores by default (torch.backends.cudnn.allow_tf32):
        # against a plain-fp32 yardstick the CNNs showed 130-220 % of "peak" on an H200. The yardstick follows it.
        tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
        peaks = {"fp32": matmul_peak(device, torch.float32, matmul_size, iterations=10, allow_tf32=True if tf32 else None)}
        if tf32:
            report.setdefault("notes", []).append(f"{device}: fp32 peak measured with TF32 tensor cores (cuDNN's default for "
                                                  "float32 convolutions; torch.backends.cudnn.allow_tf32)")
        bf16 = bf16_support(device)
        report["bf16"][str(device)] = asdict(bf16)
        if bf16.native and {"bf16", "bf16_compile"} & set(modes):  # an emulated bf16 "peak" is no yardstick: no bf16 "% of peak" then
            peaks["bf16"] = matmul_peak(device, torch.bfloat16, matmul_size)
        report["peaks"][str(device)] = {k: round(v / 1e9, 2) for k, v in peaks.items()}  # GFLOP/s
        for name in names:
            try:
                sizes = list(batch_sizes) + [b for b in gpu_batch_sizes if device.type == "cuda" and b not in batch_sizes]
                result = benchmark_architecture(name, device=device, batch_sizes=sizes, modes=modes, warmup=warmup,
                                                iterations=iterations, image_size=image_size, peaks=peaks, log=log,
                                                min_seconds=min_seconds)
            except Exception as error:  # an architecture that cannot be built is reported, the others still run
                report["failures"].append({"arch": name, "device": str(device), "error": _plain_text(f"{type(error).__name__}: {error}")})
                log(f"  {name} failed: {type(error).__name__}: {error}")
                continue
            report["results"].append(asdict(result) | {"gmacs": round(result.gmacs, 4)})
    return report


def format_report(report: dict) -> str:
    lines = []
    machine = report["machine"]
    lines.append(f"machine: {machine['processor']}, {machine['cpu_count']} CPUs, torch {machine['torch']} ({machine['torch_threads']} threads)"
                 + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""))
    if machine.get("cpu_flags") is not None:
        lines.append(f"CPU flags: {' '.join(machine['cpu_flags']) or 'n/a'} (torch CPU capability {machine.get('cpu_capability')})")
    for device, bf16 in report.get("bf16", {}).items():
        lines.append(f"bf16 on {device}: {bf16['status']} ({bf16['detail']})")
    for device, peaks in report["peaks"].items():
        lines.append(f"matmul peak on {device}: " + ", ".join(f"{dtype} {value:.1f} GFLOP/s" for dtype, value in peaks.items())
                     + "  (% peak above 100 means the yardstick run was disturbed, e.g. by other work on the machine)")
    lines.extend(report.get("notes", []))
    lines.append("")
    lines.append(f"{'arch':<10} {'device':<6} {'input':>7} {'params':>12} {'GFLOPs':>8} {'GMACs':>7} {'peak MiB':>9}  reference (params / GFLOPs)")
    for result in report["results"]:
        reference = result.get("reference")
        ref_text = "-"
        if reference:
            params_ok = abs(result["params"] - reference["params"]) <= 0.01 * reference["params"]
            flops_ok = abs(result["flops_per_image"] - reference["flops"]) <= 0.01 * reference["flops"]
            ref_text = (f"{reference['params']:,} {'✓' if params_ok else '✗'} / {reference['flops'] / 1e9:.2f} {'✓' if flops_ok else '✗'}"
                        f"  ({reference['note']})")
        memory = f"{result['peak_memory_mb']:.1f}" if result["peak_memory_mb"] is not None else "n/a"
        lines.append(f"{result['arch']:<10} {result['device']:<6} {result['image_size'][0]:>3}x{result['image_size'][1]:<3} "
                     f"{result['params']:>12,} {result['flops_per_image'] / 1e9:>8.2f} {result['gmacs']:>7.2f} {memory:>9}  {ref_text}")
    lines.append("")
    for result in report["results"]:
        if result.get("config_overrides"):
            lines.append(f"{result['arch']}: config {result['config_overrides']} (the registry's benchmark_config)")
    lines.append("img/s is the median call's; min/max ms the fastest/slowest call; x eager = img/s over fp32 eager at the same batch "
                 "in this run; agree = top-1 agreement with fp32 eager on the same synthetic faces; RSS = process peak so far")
    lines.append(f"{'arch':<10} {'device':<6} {'mode':<16} {'batch':>5} {'img/s':>9} {'median ms':>10} {'min ms':>9} {'max ms':>9} "
                 f"{'calls':>5} {'% peak':>7} {'x eager':>7} {'agree':>6} {'cpu ms':>8} {'RSS MiB':>8}  note")
    for result in report["results"]:
        for mode in result["modes"]:
            if mode["status"] == "ok":
                notes = [f"setup {mode['setup_seconds']:.1f}s"] if mode["mode"] in ("compile", "bf16_compile", *INT8_MODES, *ONNX_MODES) and mode["setup_seconds"] else []
                notes += [mode["reason"]] if mode.get("reason") else []
                lines.append(f"{result['arch']:<10} {mode['device']:<6} {mode['mode']:<16} {mode['batch_size']:>5} {mode['images_per_second']:>9.2f} "
                             f"{mode['latency_ms']:>10.2f} {mode['latency_min_ms']:>9.2f} {mode['latency_max_ms']:>9.2f} {mode['timed_calls']:>5} "
                             f"{mode['percent_of_peak'] if mode['percent_of_peak'] is not None else '-':>7} "
                             f"{_fmt(mode.get('ratio_to_eager'), '.2f'):>7} {_fmt(mode.get('top1_agreement'), '.1%'):>6} "
                             f"{_fmt(mode.get('cpu_ms_per_call'), '.1f'):>8} {_fmt(mode.get('peak_rss_mb'), '.0f'):>8}  {'; '.join(notes)}")
            else:
                lines.append(f"{result['arch']:<10} {mode['device']:<6} {mode['mode']:<16} {mode['batch_size']:>5} {'-':>9} {'-':>10} {'-':>9} {'-':>9} "
                             f"{'-':>5} {'-':>7}  {mode['status']}: {mode['reason']}")
    for failure in report["failures"]:
        lines.append(f"{failure['arch']} on {failure['device']}: FAILED {failure['error']}")
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _plain_text(text: str) -> str:
    """An error message for the table and JSON: without the ANSI colour codes some compilers' messages carry."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def build_parser(prog: str = "hf-fer benchmark") -> argparse.ArgumentParser:
    """The parser lives in the torch-free :mod:`hf_fer_cli.parsers`, so ``--help`` and argument errors answer at once."""
    from hf_fer_cli.parsers import benchmark_parser

    return benchmark_parser(prog)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = args.batch_sizes or ([1] if args.quick else [1, 32])
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"--batch-sizes must be positive, got {batch_sizes}")
    modes = args.modes or (list(QUICK_MODES) if args.quick else list(MODES))
    if args.train:
        return _main_train(args, batch_sizes)
    if args.pipeline:
        return _main_pipeline(args)
    report = run_benchmark(
        args.arch, devices=args.devices, batch_sizes=batch_sizes, modes=modes,
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        iterations=args.iterations if args.iterations is not None else (3 if args.quick else 10),
        image_size=args.image_size,
        log=lambda text: print(text, file=sys.stderr),
        min_seconds=args.min_seconds if args.min_seconds is not None else (0.0 if args.quick else 2.0),
    )
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}")
    return 1 if report["failures"] and not report["results"] else 0


def _main_train(args, batch_sizes: list[int]) -> int:
    from .evaluation.inference import resolve_device
    from .models import available_architectures

    rows = []
    for device_name in args.devices:
        device = resolve_device(device_name)
        # --modes eager / bf16 (bf16 autocast, as `mixed_precision: bf16`); default: eager, and bf16 too on a GPU
        modes = args.modes or (["eager", "bf16"] if device.type == "cuda" else ["eager"])
        precisions = [{"eager": "no", "bf16": "bf16"}[mode] for mode in modes if mode in ("eager", "bf16")]
        if not precisions:
            raise ValueError(f"--train measures the modes eager and bf16, got --modes {' '.join(args.modes)}")
        for name in args.arch or available_architectures():
            for batch_size in batch_sizes if args.batch_sizes else [8]:
                for precision in precisions:
                    print(f"  training step: {name} batch {batch_size} on {device}{' (bf16 autocast)' if precision == 'bf16' else ''}", file=sys.stderr)
                    rows.append(training_throughput(name, device=device, batch_size=batch_size, image_size=args.image_size,
                                                    warmup=args.warmup if args.warmup is not None else 1, mixed_precision=precision,
                                                    iterations=args.iterations if args.iterations is not None else (2 if args.quick else 5)))
    print(f"training throughput (torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if any(r["device"].startswith("cuda") for r in rows) else "") + ")")
    print(f"{'arch':<10} {'device':<8} {'precision':>9} {'batch':>5} {'input':>9} {'s/step':>8} {'train img/s':>12} {'trainable params':>17}")
    for row in rows:
        size = "x".join(map(str, row["image_size"]))
        precision = "bf16" if row["mixed_precision"] == "bf16" else "fp32"
        print(f"{row['arch']:<10} {row['device']:<8} {precision:>9} {row['batch_size']:>5} {size:>9} {row['step_seconds']:>8.3f} "
              f"{row['train_images_per_second']:>12.2f} {row['trainable_params']:>17,}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"training": rows}, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# `--pipeline`: the face pipeline (decode, detect, align, classify) on a photo with 5 faces, and video memory.

_PIPELINE_PHOTO = "tests/fixtures/faces/sample5.jpg"  # 5 faces, 1920x1398 (the repository's test photos)


def cpu_summary() -> str:
    """The SIMD level torch dispatches to and the relevant CPU flags, on one line (how to read the figures)."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return f"torch CPU capability {capability}; flags: {' '.join(cpu_flags()) or 'n/a'}"


@dataclass(frozen=True)
class _TensorLayout:
    """Shape, strides (memory format), dtype and device of a forward's input tensor: enough to replay the call."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, value):
        if isinstance(value, torch.Tensor):
            return cls(tuple(value.shape), tuple(value.stride()), value.dtype, value.device)
        return value

    @staticmethod
    def make(value):
        """A tensor of that layout filled with N(0, 1) values (a convolution's speed does not depend on the values)."""
        if isinstance(value, _TensorLayout):
            return torch.empty_strided(value.shape, value.stride, dtype=value.dtype, device=value.device).normal_()
        return value


class _ForwardTimer:
    """Wall and process-CPU time spent inside a module's forward (pre/post hooks): overhead = end-to-end - forwards.

    CPU time is reported too because on a shared machine wall time mostly measures the neighbours. On a GPU each
    call is bracketed by synchronizations, so its time is the kernels' and not only their launch."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        parameter = next(module.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.total = self.cpu = 0.0
        self.calls = 0
        self.capture = False  # note each call's input shapes and layouts (for replay_alone)
        self._replaying = False  # the replay's own calls are not counted
        self.captured: list[tuple[tuple, dict]] = []
        self._start = self._start_cpu = 0.0
        self._handles = [module.register_forward_pre_hook(self._pre, with_kwargs=True), module.register_forward_hook(self._post)]

    def _pre(self, _module, args, kwargs):
        if self._replaying:
            return
        if self.capture:  # only the layout: copying (or keeping) the tensors would cost the run time and memory
            self.captured.append((tuple(_TensorLayout.of(a) for a in args), {k: _TensorLayout.of(v) for k, v in kwargs.items()}))
        _synchronize(self.device)
        self._start, self._start_cpu = time.perf_counter(), time.process_time()

    def _post(self, *_):
        if self._replaying:
            return
        _synchronize(self.device)
        self.total += time.perf_counter() - self._start
        self.cpu += time.process_time() - self._start_cpu
        self.calls += 1

    def reset(self):
        self.total = self.cpu = 0.0
        self.calls = 0
        self.captured = []

    def replay_alone(self, repeats: int = 3) -> tuple[float, float]:
        """Wall and process-CPU seconds the captured calls take run back to back with nothing else going on (median of ``repeats``): the
        forwards' own cost, against which the pipeline's overhead is measured. In-pipeline forward times are not
        that: work overlapping them (the next chunk's decoding in a thread) slows them down and would hide there."""
        if not self.captured:
            return 0.0, 0.0
        self._replaying = True
        totals, cpu = [], []
        calls = [(tuple(_TensorLayout.make(a) for a in args), {k: _TensorLayout.make(v) for k, v in kwargs.items()})
                 for args, kwargs in self.captured]
        try:
            with torch.inference_mode():
                for _ in range(repeats):
                    _synchronize(self.device)
                    started, started_cpu = time.perf_counter(), time.process_time()
                    for args, kwargs in calls:
                        self.module(*args, **kwargs)
                    _synchronize(self.device)
                    totals.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - started_cpu)
        finally:
            self._replaying = False
        return statistics.median(totals), statistics.median(cpu)

    def remove(self):
        for handle in self._handles:
            handle.remove()


def benchmark_pipeline(photo: str | os.PathLike | None = None, *, model: str | None = None, batch: int = 32,
                       iterations: int = 5, warmup: int = 1, log: Callable[[str], None] = lambda _: None,
                       device: str = "cpu") -> dict:
    """Per-stage times of the face pipeline for one photo and for ``batch`` photos at once (on the CPU, or with the
    detector and the classifier on ``device``)."""
    import hf_fer
    from .faces.pipeline import DEFAULT_BATCH_SIZE, TASK, FacialExpressionRecognitionPipeline
    from .evaluation.inference import load_model_for_inference

    photo = str(photo or Path(__file__).resolve().parents[2] / _PIPELINE_PHOTO)
    if not os.path.isfile(photo):
        raise FileNotFoundError(f"--photo {photo}: no such file (give a photo with faces)")
    loaded = load_model_for_inference(model or hf_fer.pretrained_path(), device=device)
    pipe = FacialExpressionRecognitionPipeline(model=loaded.model, image_processor=loaded.image_processor, device=loaded.device, task=TASK)
    detector_timer = _ForwardTimer(pipe.detector.model if hasattr(pipe.detector, "model") else pipe.detector)
    classifier_timer = _ForwardTimer(pipe.model)
    report: dict = {"photo": photo, "model": loaded.source, "threads": torch.get_num_threads(), "cpu": cpu_summary(),
                    "device": str(pipe.device),
                    "gpu": torch.cuda.get_device_name(pipe.device) if pipe.device.type == "cuda" else None,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "runs": []}
    # (photos, batch_size): all photos in one chunk (one detector call; batch_size also caps the faces per classifier
    # forward, so 1 photo at batch_size 1 classifies its 5 faces one by one), then the pipeline's default batch size
    # (what `pipe(photo)` / `pipe(photos)` do: 5 faces in one forward; several chunks, the next one decoded in a
    # background thread while the current one runs).
    # Last, the same photos already decoded (RGB arrays at full size, as a video decoder or a camera hands frames
    # over): the pipeline's overhead without the JPEG decoding, which no pipeline can skip for files.
    configs = [(1, 1, "file"), (1, DEFAULT_BATCH_SIZE, "file"), (batch, batch, "file")]
    if batch != DEFAULT_BATCH_SIZE:
        configs.append((batch, DEFAULT_BATCH_SIZE, "file"))
    configs.append((batch, batch, "array"))
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(photo) as opened:
        frame = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    for images, batch_size, kind in configs:
        inputs = [photo if kind == "file" else frame] * images
        for _ in range(warmup):
            pipe(inputs, batch_size=batch_size)
        samples = []
        for _ in range(iterations):
            pipe.timings.__init__()
            detector_timer.reset(), classifier_timer.reset()
            detector_timer.capture = classifier_timer.capture = True
            started, started_cpu = time.perf_counter(), time.process_time()
            results = pipe(inputs, batch_size=batch_size)
            total, total_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            detector_timer.capture = classifier_timer.capture = False
            t = pipe.timings
            # The same forward calls (same batches, shapes and memory layouts), replayed with nothing else running.
            (detector_alone, detector_alone_cpu), (classifier_alone, classifier_alone_cpu) = (
                detector_timer.replay_alone(), classifier_timer.replay_alone())
            samples.append({"end_to_end": total, "decode": t.decode, "detection": t.detection, "alignment": t.alignment,
                            "preprocess": t.preprocess, "classification": t.classification,
                            "detector_forward": detector_timer.total, "classifier_forward": classifier_timer.total,
                            "forwards_alone": detector_alone + classifier_alone, "faces": t.faces,
                            "forward_calls": detector_timer.calls + classifier_timer.calls,
                            "replayed_calls": len(detector_timer.captured) + len(classifier_timer.captured),
                            "end_to_end_cpu": total_cpu, "forwards_cpu": detector_alone_cpu + classifier_alone_cpu})
        median = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
        faces = int(median["faces"])
        # Overhead is measured against the forwards run alone, not against their time inside the pipeline: when the
        # next chunk decodes in a thread beside them, they slow down, and that slowdown is the pipeline's cost too.
        forwards = median["forwards_alone"]
        row = {
            "photos": images, "batch_size": batch_size, "input": kind, "faces": faces,
            "end_to_end_ms": 1e3 * median["end_to_end"], "per_photo_ms": 1e3 * median["end_to_end"] / images,
            "decode_ms": 1e3 * median["decode"], "detection_ms": 1e3 * median["detection"],
            "detector_forward_ms": 1e3 * median["detector_forward"], "alignment_ms": 1e3 * median["alignment"],
            "preprocess_ms": 1e3 * median["preprocess"], "classification_ms": 1e3 * median["classification"],
            "classifier_forward_ms": 1e3 * median["classifier_forward"],
            "forwards_alone_ms": 1e3 * median["forwards_alone"],
            "forward_calls": int(median["forward_calls"]), "replayed_calls": int(median["replayed_calls"]),
            "classification_per_face_ms": 1e3 * (median["preprocess"] + median["classification"]) / max(1, faces),
            "overhead_ms": 1e3 * (median["end_to_end"] - forwards),
            "overhead_percent": 100.0 * (median["end_to_end"] - forwards) / median["end_to_end"],
            # the same without the time spent decoding (and resizing for the detector, done in the decoding threads)
            # or waiting for the decoding thread: what the pipeline adds to decode + forwards
            "overhead_excluding_decode_percent": 100.0 * (median["end_to_end"] - forwards - median["decode"]) / median["end_to_end"],
            "end_to_end_cpu_ms": 1e3 * median["end_to_end_cpu"],
            "overhead_cpu_percent": 100.0 * (median["end_to_end_cpu"] - median["forwards_cpu"]) / max(median["end_to_end_cpu"], 1e-9),
            "faces_found": sum(len(r) for r in results),
        }
        log(f"  pipeline: {images} {'photo file' if kind == 'file' else 'decoded photo'}(s), batch_size {batch_size}: {row['end_to_end_ms']:.1f} ms")
        report["runs"].append(row)
    detector_timer.remove(), classifier_timer.remove()
    return report


_VIDEO_MEMORY_CHILD = """
import os, resource, sys
import hf_fer, hf_fer.faces.video, hf_fer.faces.pipeline, hf_fer.evaluation.inference, transformers.pipelines  # noqa
from hf_fer.faces.pipeline import TASK, FacialExpressionRecognitionPipeline
for video in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        loaded = hf_fer.evaluation.inference.load_model_for_inference(hf_fer.pretrained_path(), device="cpu")
        pipe = FacialExpressionRecognitionPipeline(model=loaded.model, image_processor=loaded.image_processor, device="cpu", task=TASK)
        frames = sum(1 for _ in hf_fer.faces.video.predict_video(pipe, video, every_n_frames=10))
        print("RSS", video, frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def benchmark_video_memory(photo: str | os.PathLike | None = None, frames: int = 150, size: tuple[int, int] = (640, 432)) -> dict:
    """Peak RSS of the pipeline on a video and on one 10x longer (every 10th frame), each in a forked child of a
    process that imported everything first, so both start from the same baseline."""
    import subprocess

    import av
    from PIL import Image

    photo = str(photo or Path(__file__).resolve().parents[2] / _PIPELINE_PHOTO)
    base = Image.open(photo).convert("RGB")
    base = base.resize((size[0], round(base.height * size[0] / base.width))).crop((0, 0, *size))
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for count in (frames, 10 * frames):
            path = os.path.join(folder, f"video_{count}.mp4")
            with av.open(path, mode="w") as container:
                stream = container.add_stream("mpeg4", rate=25)
                stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
                for index in range(count):
                    shifted = Image.new("RGB", size, (128, 128, 128))
                    shifted.paste(base, (round(8 * math.sin(index / 40.0)), 0))
                    for packet in stream.encode(av.VideoFrame.from_image(shifted)):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            paths.append(path)
        run = subprocess.run([sys.executable, "-c", _VIDEO_MEMORY_CHILD, *paths], capture_output=True, text=True, check=True)
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("RSS")]
    (short_frames, short_kb), (long_frames, long_kb) = [(int(r[2]), int(r[3])) for r in rows]
    return {"size": list(size), "short": {"frames": frames, "sampled": short_frames, "peak_rss_mb": short_kb / 1024},
            "long": {"frames": 10 * frames, "sampled": long_frames, "peak_rss_mb": long_kb / 1024},
            "ratio": long_kb / short_kb}


def format_pipeline_report(report: dict, memory: dict | None) -> str:
    load = report.get("load_average")
    on = f"{report['gpu']} ({report['device']}) and " if report.get("gpu") else ""
    lines = [f"face pipeline on {report['photo']} (model {Path(report['model']).name}), {on}{report['threads']} CPU threads"
             + (f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs" if load else ""),
             report["cpu"], "",
             f"{'photos':>6} {'input':>5} {'batch':>5} {'faces':>5} {'end-to-end':>11} {'per photo':>10} {'decode':>8} {'detection':>10} {'(det fwd)':>10} "
             f"{'alignment':>10} {'classify':>9} {'(cls fwd)':>10} {'per face':>9} {'fwd alone':>10} {'overhead':>9} {'w/o decode':>10} {'CPU ms':>9} {'overhead(CPU)':>13}"]
    for r in report["runs"]:
        lines.append(f"{r['photos']:>6} {r.get('input', 'file'):>5} {r.get('batch_size', r['photos']):>5} {r['faces']:>5} {r['end_to_end_ms']:>9.1f}ms {r['per_photo_ms']:>8.1f}ms {r['decode_ms']:>6.1f}ms "
                     f"{r['detection_ms']:>8.1f}ms {r['detector_forward_ms']:>8.1f}ms {r['alignment_ms']:>8.1f}ms "
                     f"{r['preprocess_ms'] + r['classification_ms']:>7.1f}ms {r['classifier_forward_ms']:>8.1f}ms "
                     f"{r['classification_per_face_ms']:>7.2f}ms {r['forwards_alone_ms']:>8.1f}ms {r['overhead_percent']:>8.1f}% {r['overhead_excluding_decode_percent']:>9.1f}% {r['end_to_end_cpu_ms']:>9.1f} "
                     f"{r['overhead_cpu_percent']:>12.1f}%")
    lines.append("overhead = end-to-end minus the detector's and the classifier's forward passes (decode, resize, NMS, "
                 "alignment, preprocessing, output), the forwards timed alone ('fwd alone': the same calls, same shapes "
                 "and memory layouts, replayed back to back right after the run, so a slowdown of the forwards by work beside them "
                 "counts as overhead; '(det fwd)'/'(cls fwd)' are their times inside the pipeline); the CPU overhead "
                 "likewise against the replay's CPU time; target <= 10 %; 'w/o decode' leaves out the decode column too (JPEG "
                 "decoding and the resize to the detector's size, or the wait for them); input 'array' = the photos "
                 "given already decoded, as video frames are. Wall times are per stage; the CPU columns "
                 "(process CPU time, all threads) are what to trust on a machine shared with other work. batch = "
                 "batch_size: images per chunk and faces per classifier forward; with several chunks the next one is "
                 "decoded while the current one runs, and decode shows only the time waited for it.")
    if memory:
        lines.append("")
        lines.append(f"video peak RSS ({memory['size'][0]}x{memory['size'][1]}, every 10th frame): "
                     f"{memory['short']['frames']} frames {memory['short']['peak_rss_mb']:.0f} MB, "
                     f"{memory['long']['frames']} frames {memory['long']['peak_rss_mb']:.0f} MB "
                     f"(x{memory['ratio']:.3f}; target <= x1.10)")
    return "\n".join(lines)


def _main_pipeline(args) -> int:
    from .evaluation.inference import resolve_device

    if len(args.devices) != 1:
        raise ValueError(f"--pipeline runs on one device, got --devices {' '.join(args.devices)}")
    torch.set_num_threads(args.threads or 2)
    report = benchmark_pipeline(args.photo, model=args.model, iterations=args.iterations or (2 if args.quick else 5),
                                warmup=args.warmup if args.warmup is not None else 1, device=str(resolve_device(args.devices[0])),
                                batch=8 if args.quick else 32, log=lambda text: print(text, file=sys.stderr))
    memory = None
    if not args.quick:
        try:
            memory = benchmark_video_memory(args.photo)
        except ImportError as error:  # PyAV is the `video` extra
            print(f"video peak memory not measured: {error} (pip install 'hf_fer[video]')", file=sys.stderr)
    print(format_pipeline_report(report, memory))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"pipeline": report, "video_memory": memory}, handle, indent=2)
        print(f"wrote {args.json}")
    return 0

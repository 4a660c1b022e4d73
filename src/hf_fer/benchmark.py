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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

__all__ = ["MODES", "REFERENCE_COST", "ModeResult", "ArchitectureResult", "matmul_peak", "count_flops", "count_parameters",
           "peak_forward_memory", "benchmark_architecture", "run_benchmark", "build_parser", "main"]

MODES = ("eager", "channels_last", "bf16", "compile", "onnxruntime")
QUICK_MODES = ("eager", "channels_last", "bf16")

#: Parameters and FlopCounterMode FLOPs per image of the upstream models at their default input size
#: (measured on the upstream code, shared/specs/<arch>.md). "Must match the papers" is checked against these.
REFERENCE_COST: dict[str, dict] = {
    "poster_v2": {"params": 43_753_941, "flops": 17_184_997_888, "note": "paper: 43.7 M params, 8.4 G multiply-adds"},
    "arm": {"params": 11_178_395, "flops": 3_627_619_998, "note": "ResNet-18 trunk ≈ 1.81 G multiply-adds"},
    "dacl": {"params": 103_042_311, "flops": 3_810_827_264, "note": "incl. the training-only attention branch"},
    "dmue": {"params": 11_181_632, "flops": 3_627_000_000, "note": "inference (target) branch"},
    "vt_nr": {"params": 89_997_139, "flops": 33_038_000_000, "note": "Swin-B + Neural Resizer + STN at 384×384"},
    "mini_xception": {"params": 56_951, "flops": 20_326_784,
                      "note": "Keras summary 58,423 = these + 1,472 BatchNorm moving statistics; 10.16 M multiply-adds by hand"},
}


@dataclass
class ModeResult:
    mode: str
    batch_size: int
    device: str
    status: str = "ok"  # ok | skipped | error
    reason: str | None = None
    latency_ms: float | None = None  # median time of one batch
    latency_p90_ms: float | None = None
    images_per_second: float | None = None
    percent_of_peak: float | None = None
    setup_seconds: float | None = None  # compile / export time


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
    modes: list[ModeResult] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.flops_per_image / 2e9


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_flops(model: torch.nn.Module, pixel_values: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``pixel_values`` (matmul/conv-type ops, 2 per multiply-add).

    ``FlopCounterMode`` does not see inside fused SDPA kernels on every backend, so models whose
    attention implementation can be switched (transformers backbones) are counted in eager mode.
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
    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), counter:
            model(pixel_values=pixel_values)
    finally:
        if switched:
            model.set_attn_implementation(previous)
    return int(counter.get_total_flops())


# Training-time configuration of each architecture where it differs from inference (the model that trains).
TRAINING_CONFIG_OVERRIDES: dict[str, dict] = {"dmue": {"use_aux_branches": True}}


def training_throughput(name: str, *, device: torch.device | str = "cpu", batch_size: int = 8, warmup: int = 1,
                        iterations: int = 3, image_size: int | None = None) -> dict:
    """Training images/s of one architecture: forward with labels (the model's own loss), backward, AdamW step.

    One plain optimizer step; recipes with SAM (POSTER V2) do two forward/backward passes per step.
    """
    from .models import ARCHITECTURES

    arch = ARCHITECTURES[name]
    device = torch.device(device)
    torch.manual_seed(0)
    model = arch.model_class(arch.config_class(**TRAINING_CONFIG_OVERRIDES.get(name, {}))).train().to(device)
    height, width = (image_size, image_size) if image_size else _image_size(arch)
    num_labels = model.config.num_labels
    pixel_values = torch.randn(batch_size, getattr(model.config, "num_channels", 3), height, width, device=device)
    labels = torch.arange(batch_size, device=device) % num_labels  # every class present (DMUE's branches all run)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = _time_calls(step, device, warmup, iterations)
    median = statistics.median(times)
    return {"arch": name, "device": str(device), "batch_size": batch_size, "image_size": [height, width],
            "step_seconds": round(median, 4), "train_images_per_second": round(batch_size / median, 2),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "config_overrides": TRAINING_CONFIG_OVERRIDES.get(name, {})}


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
        from torch.distributed._tools.mem_tracker import MemTracker

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


def _time_calls(run: Callable[[], object], device: torch.device, warmup: int, iterations: int) -> list[float]:
    for _ in range(warmup):
        run()
    _synchronize(device)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                iterations: int = 5) -> float:
    """Measured dense matmul throughput (FLOP/s) of this machine: the yardstick for "% of peak"."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    times = _time_calls(lambda: a @ b, device, warmup=2, iterations=iterations)
    return 2 * size**3 / min(times)


def _bf16_supported(device: torch.device) -> tuple[bool, str | None]:
    if device.type == "cuda":
        return (torch.cuda.is_bf16_supported(), None if torch.cuda.is_bf16_supported() else "this GPU has no bf16")
    if device.type == "cpu":
        return True, None
    return False, f"bf16 autocast not measured on {device.type}"


def _onnx_runner(model, pixel_values: torch.Tensor, device: torch.device):
    """Export to ONNX (dynamo exporter) and return a callable running it with ONNX Runtime."""
    import onnxruntime

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    folder = tempfile.mkdtemp(prefix="hf_fer_onnx_")
    path = os.path.join(folder, "model.onnx")
    torch.onnx.export(LogitsOnly(model).eval(), (pixel_values,), path, dynamo=True, input_names=["pixel_values"], output_names=["logits"])
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(path, providers=providers)
    feed = {"pixel_values": pixel_values.detach().cpu().numpy()}
    return lambda: session.run(None, feed)


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
) -> ArchitectureResult:
    """Measure one architecture built from its default config (random weights)."""
    from .models import ARCHITECTURES

    arch = ARCHITECTURES[name]
    device = torch.device(device)
    torch.manual_seed(0)
    model = arch.model_class(arch.config_class()).eval().to(device)
    height, width = (image_size, image_size) if image_size else _image_size(arch)
    channels = getattr(model.config, "num_channels", 3)  # mini_xception takes 1-channel grayscale
    probe = torch.randn(1, channels, height, width, device=device)
    result = ArchitectureResult(
        arch=name, device=str(device), image_size=(height, width), params=count_parameters(model),
        flops_per_image=count_flops(model, probe), peak_memory_mb=None, memory_method="", reference=REFERENCE_COST.get(name),
    )
    result.peak_memory_mb, result.memory_method = peak_forward_memory(model, probe)
    peak_fp32 = (peaks or {}).get("fp32")
    peak_bf16 = (peaks or {}).get("bf16") or peak_fp32
    compiled = None
    for batch_size in batch_sizes:
        pixel_values = torch.randn(batch_size, channels, height, width, device=device)
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
                    supported, reason = _bf16_supported(device)
                    if not supported:
                        entry.status, entry.reason = "skipped", reason
                        continue

                    def run():
                        with torch.autocast(device.type, dtype=torch.bfloat16):
                            return model(pixel_values=pixel_values)
                elif mode == "compile":
                    compiled = compiled or torch.compile(model)
                    with torch.inference_mode():
                        compiled(pixel_values=pixel_values)  # compile (and recompile per batch size) outside the timing
                    run = lambda: compiled(pixel_values=pixel_values)  # noqa: E731
                elif mode == "onnxruntime":
                    try:
                        import onnxruntime  # noqa: F401
                    except ImportError:
                        entry.status, entry.reason = "skipped", "onnxruntime not installed (pip install hf_fer[onnx])"
                        continue
                    run = _onnx_runner(model.to(memory_format=torch.contiguous_format), pixel_values, device)
                else:
                    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
                entry.setup_seconds = round(time.perf_counter() - setup_start, 3)
                with torch.inference_mode():
                    times = _time_calls(run, device, warmup, iterations)
            except Exception as error:  # one mode failing (no compiler, exporter gap) must not end the run
                entry.status, entry.reason = "error", f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
                continue
            finally:
                model.to(memory_format=torch.contiguous_format)
            median = statistics.median(times)
            entry.latency_ms = round(1000 * median, 3)
            entry.latency_p90_ms = round(1000 * sorted(times)[max(0, math.ceil(0.9 * len(times)) - 1)], 3)
            entry.images_per_second = round(batch_size / median, 2)
            peak = peak_bf16 if mode == "bf16" else peak_fp32
            if peak:
                entry.percent_of_peak = round(100 * result.flops_per_image * entry.images_per_second / peak, 2)
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
) -> dict:
    """Benchmark several architectures on several devices; returns a JSON-ready dict."""
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
        },
        "settings": {"batch_sizes": list(batch_sizes), "modes": list(modes), "warmup": warmup, "iterations": iterations},
        "peaks": {},
        "results": [],
        "failures": [],
    }
    for device_name in devices:
        device = resolve_device(device_name)
        if device.type == "cuda":
            report["machine"]["gpu"] = torch.cuda.get_device_name(device)
        log(f"matmul peak on {device}")
        peaks = {"fp32": matmul_peak(device, torch.float32, matmul_size, iterations=10)}
        if _bf16_supported(device)[0] and "bf16" in modes:
            # CPUs without bf16 units emulate it slowly: a smaller matrix keeps the measurement short.
            bf16_size = min(matmul_size or 1024, 512) if device.type == "cpu" else matmul_size
            peaks["bf16"] = matmul_peak(device, torch.bfloat16, bf16_size)
        report["peaks"][str(device)] = {k: round(v / 1e9, 2) for k, v in peaks.items()}  # GFLOP/s
        for name in names:
            try:
                result = benchmark_architecture(name, device=device, batch_sizes=batch_sizes, modes=modes, warmup=warmup,
                                                iterations=iterations, image_size=image_size, peaks=peaks, log=log)
            except Exception as error:  # an architecture that cannot be built is reported, the others still run
                report["failures"].append({"arch": name, "device": str(device), "error": f"{type(error).__name__}: {error}"})
                log(f"  {name} failed: {type(error).__name__}: {error}")
                continue
            report["results"].append(asdict(result) | {"gmacs": round(result.gmacs, 4)})
    return report


def format_report(report: dict) -> str:
    lines = []
    machine = report["machine"]
    lines.append(f"machine: {machine['processor']}, {machine['cpu_count']} CPUs, torch {machine['torch']} ({machine['torch_threads']} threads)"
                 + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""))
    for device, peaks in report["peaks"].items():
        lines.append(f"matmul peak on {device}: " + ", ".join(f"{dtype} {value:.1f} GFLOP/s" for dtype, value in peaks.items())
                     + "  (% peak above 100 means the yardstick run was disturbed, e.g. by other work on the machine)")
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
    lines.append(f"{'arch':<10} {'device':<6} {'mode':<14} {'batch':>5} {'img/s':>9} {'latency ms':>11} {'p90 ms':>9} {'% peak':>7}  note")
    for result in report["results"]:
        for mode in result["modes"]:
            if mode["status"] == "ok":
                setup = f"setup {mode['setup_seconds']:.1f}s" if mode["mode"] in ("compile", "onnxruntime") and mode["setup_seconds"] else ""
                lines.append(f"{result['arch']:<10} {mode['device']:<6} {mode['mode']:<14} {mode['batch_size']:>5} {mode['images_per_second']:>9.2f} "
                             f"{mode['latency_ms']:>11.2f} {mode['latency_p90_ms']:>9.2f} {mode['percent_of_peak'] if mode['percent_of_peak'] is not None else '-':>7}  {setup}")
            else:
                lines.append(f"{result['arch']:<10} {mode['device']:<6} {mode['mode']:<14} {mode['batch_size']:>5} {'-':>9} {'-':>11} {'-':>9} {'-':>7}  {mode['status']}: {mode['reason']}")
    for failure in report["failures"]:
        lines.append(f"{failure['arch']} on {failure['device']}: FAILED {failure['error']}")
    return "\n".join(lines)


def build_parser(prog: str = "hf-fer benchmark") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Measure images/s, latency, peak memory, parameters and FLOPs of each architecture (default configs, "
        "random weights, nothing downloaded), with the machine's matmul peak as the yardstick.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""examples:
  hf-fer benchmark --quick
  hf-fer benchmark --arch poster_v2 arm --batch-sizes 1 32 --devices cpu cuda --json bench.json
  hf-fer benchmark --arch arm --modes eager compile --iterations 50
  hf-fer benchmark --train --batch-sizes 8 32          # training images/s per architecture

modes: {', '.join(MODES)} (bf16 = autocast where the device supports it; onnxruntime only when installed).
--quick: batch size 1, 1 warm-up + 3 timed runs, modes {', '.join(QUICK_MODES)} unless --modes is given.
FLOPs count 2 per multiply-add (torch.utils.flop_counter); papers' "FLOPs" are usually multiply-adds (GMACs column).""",
    )
    parser.add_argument("--arch", nargs="+", default=None, help="architectures (default: all installed)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None, help="default: 1 8 (1 with --quick)")
    parser.add_argument("--devices", nargs="+", default=["auto"], help="auto (default: cuda if available, else cpu), cpu, cuda, ...")
    parser.add_argument("--modes", nargs="+", default=None, choices=MODES, help="execution modes (default: all)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="override the input size (default: the image processor's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (see below)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--train", action="store_true", help="measure training images/s (forward + loss + backward + AdamW step) instead of inference")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = args.batch_sizes or ([1] if args.quick else [1, 8])
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"--batch-sizes must be positive, got {batch_sizes}")
    modes = args.modes or (list(QUICK_MODES) if args.quick else list(MODES))
    if args.train:
        return _main_train(args, batch_sizes)
    report = run_benchmark(
        args.arch, devices=args.devices, batch_sizes=batch_sizes, modes=modes,
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        iterations=args.iterations if args.iterations is not None else (3 if args.quick else 10),
        image_size=args.image_size,
        log=lambda text: print(text, file=sys.stderr),
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
        for name in args.arch or available_architectures():
            for batch_size in batch_sizes if args.batch_sizes else [8]:
                print(f"  training step: {name} batch {batch_size} on {device}", file=sys.stderr)
                rows.append(training_throughput(name, device=device, batch_size=batch_size, image_size=args.image_size,
                                                warmup=args.warmup if args.warmup is not None else 1,
                                                iterations=args.iterations if args.iterations is not None else (2 if args.quick else 5)))
    print(f"training throughput (torch {torch.__version__}, {torch.get_num_threads()} CPU threads)")
    print(f"{'arch':<10} {'device':<8} {'batch':>5} {'input':>9} {'s/step':>8} {'train img/s':>12} {'trainable params':>17}")
    for row in rows:
        size = "x".join(map(str, row["image_size"]))
        print(f"{row['arch']:<10} {row['device']:<8} {row['batch_size']:>5} {size:>9} {row['step_seconds']:>8.3f} "
              f"{row['train_images_per_second']:>12.2f} {row['trainable_params']:>17,}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"training": rows}, handle, indent=2)
        print(f"wrote {args.json}")
    return 0

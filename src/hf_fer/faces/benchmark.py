"""Timing of the face detector (used by the benchmark script; never by unit tests)."""
from __future__ import annotations

import platform
import statistics
import time
from typing import Sequence

import torch


def cpu_description() -> str:
    """CPU model, the SIMD flags that matter for torch, and torch's chosen kernel level."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{model}; flags: {' '.join(f for f in wanted if f in flags) or 'n/a'}; torch kernels: {capability}"


def benchmark_detector(
    images: Sequence[torch.Tensor] | None = None,
    *,
    detector=None,
    max_size: int | None = 640,
    num_threads: int | None = 2,
    repeats: int = 20,
    warmup: int = 3,
    batch: bool = False,
) -> dict:
    """Time ``detector.detect`` (default: the shipped RetinaFace) per image, end to end (resize, forward, decoding,
    NMS). ``images``: uint8 RGB [3, H, W] tensors (default: scikit-image's astronaut photo, else a random image).
    ``batch=True`` times one ``detect`` call on all images and divides by their number. Returns figures in ms."""
    from .retinaface import RetinaFaceDetector

    previous_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        if images is None:
            try:
                from skimage import data

                images = [torch.from_numpy(data.astronaut()).permute(2, 0, 1).contiguous()]
            except ImportError:
                images = [torch.randint(0, 256, (3, 960, 1280), dtype=torch.uint8)]
        images = list(images)
        if detector is None:
            detector = RetinaFaceDetector.from_pretrained(max_size=max_size)
        calls = [images] if batch else [[image] for image in images]
        for _ in range(warmup):
            for call in calls:
                detector.detect(call)
        per_image = []
        for _ in range(repeats):
            for call in calls:
                start = time.perf_counter()
                detector.detect(call)
                per_image.append((time.perf_counter() - start) * 1000 / len(call))
        return {
            "ms_per_image_median": statistics.median(per_image),
            "ms_per_image_min": min(per_image),
            "images": len(images),
            "image_sizes": sorted({tuple(i.shape[1:]) for i in images}),
            "max_size": getattr(detector, "max_size", max_size),
            "threads": torch.get_num_threads(),
            "batched": batch,
            "cpu": cpu_description(),
            "torch": torch.__version__,
        }
    finally:
        torch.set_num_threads(previous_threads)

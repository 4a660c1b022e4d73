#!/usr/bin/env python
"""Peak memory of ``prepare-dataset`` versus dataset size: it must stay flat.

AffectNet has ~290k training images; holding them decoded (or even encoded) in memory is not an
option, so the readers stream images one by one into ``Dataset.from_generator``. This script checks
that claim: it writes AffectNet-style raw layouts (``training.csv``/``validation.csv`` +
``Manually_Annotated_Images/``) of several sizes, converts each in a fresh process, and prints the
peak resident memory of that process next to the size of the data.

    python scripts/dataset_memory_benchmark.py --sizes 2000 20000 --image-size 128

Each image is unique (a random low-resolution pattern upsampled, so JPEGs stay small and realistic),
which also keeps the duplicate detector honest.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

_CHILD = r"""
import json, resource, sys, threading, time

def status_mb():
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0]) / 1024
    return values

peaks = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
done = threading.Event()

def sample():
    while not done.is_set():
        for key, value in status_mb().items():
            peaks[key] = max(peaks[key], value)
        time.sleep(0.02)

import datasets
from hf_fer.data.benchmarks import prepare_dataset
baseline = status_mb()
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
start = time.perf_counter()
result = prepare_dataset("affectnet-8", sys.argv[1], sys.argv[2], progress=False)
seconds = time.perf_counter() - start
done.set()
sampler.join()
print(json.dumps({
    "baseline_rss_mb": baseline["VmRSS"],
    "baseline_anon_mb": baseline["RssAnon"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_anon_mb": peaks["RssAnon"],
    "peak_file_mb": peaks["RssFile"],
    "seconds": seconds,
    "num_examples": {split: len(ds) for split, ds in result.dataset.items()},
    "num_issues": result.report.num_issues,
}))
"""


def write_affectnet_layout(root: Path, num_images: int, image_size: int, seed: int = 0, layout: str = "affectnet-csv") -> int:
    """AffectNet layout with ``num_images`` unique JPEGs, 90% train / 10% validation; returns bytes written.

    ``affectnet-csv``: training.csv/validation.csv + Manually_Annotated_Images/; ``class-folders``:
    train/<id>/ and val/<id>/ (POSTER V2's layout).
    """
    rng = np.random.default_rng(seed)
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    num_train = int(num_images * 0.9)
    total_bytes = 0
    csv_names = ("training.csv", "validation.csv") if layout == "affectnet-csv" else ()
    files = {name: open(root / name, "w") for name in csv_names}
    try:
        for handle in files.values():
            handle.write(header)
        for index in range(num_images):
            expression = index % 8
            if layout == "class-folders":
                folder = root / ("train" if index < num_train else "val") / str(expression)
            else:
                folder = root / "Manually_Annotated_Images" / f"{index // 1000:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            pattern = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            path = folder / f"{index:07d}.jpg"
            Image.fromarray(pattern).resize((image_size, image_size), Image.BILINEAR).save(path, quality=90)
            total_bytes += path.stat().st_size
            if files:
                files["training.csv" if index < num_train else "validation.csv"].write(f"{folder.name}/{path.name},0,0,{image_size},{image_size},,{expression},{rng.uniform(-1, 1):.3f},{rng.uniform(-1, 1):.3f}\n")
    finally:
        for handle in files.values():
            handle.close()
    return total_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="numbers of images to test")
    parser.add_argument("--image-size", type=int, default=128, help="side of the generated JPEGs")
    parser.add_argument("--layout", default="affectnet-csv", choices=["affectnet-csv", "class-folders"], help="raw layout to generate")
    parser.add_argument("--workdir", default=None, help="where to write the layouts (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the generated layouts and outputs")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hf_fer_memory_"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in args.sizes:
            raw, out = workdir / f"raw_{size}", workdir / f"out_{size}"
            shutil.rmtree(raw, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            raw.mkdir(parents=True)
            start = time.perf_counter()
            raw_bytes = write_affectnet_layout(raw, size, args.image_size, layout=args.layout)
            print(f"wrote {size} images ({raw_bytes / 2**20:.1f} MiB of JPEG) in {time.perf_counter() - start:.0f}s", flush=True)
            child = subprocess.run([sys.executable, "-c", _CHILD, str(raw), str(out)], capture_output=True, text=True, env=dict(os.environ))
            if child.returncode != 0:
                print(child.stderr[-3000:], file=sys.stderr)
                return 1
            result = json.loads(child.stdout.strip().splitlines()[-1])
            decoded_mib = size * args.image_size * args.image_size * 3 / 2**20
            rows.append((size, raw_bytes / 2**20, decoded_mib, result))
            print(json.dumps({"num_images": size, **result}), flush=True)
            if not args.keep:
                shutil.rmtree(raw, ignore_errors=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        "\nRSS counts the Arrow files datasets memory-maps (file-backed, reclaimable page cache); "
        "anonymous memory (RssAnon) is what the process itself allocates."
    )
    print(f"{'images':>8} {'JPEG MiB':>9} {'decoded MiB':>12} {'peak RSS':>9} {'anon after import':>18} {'peak anon':>10} {'anon growth':>12} {'peak file-backed':>17} {'seconds':>8}")
    for size, raw_mib, decoded_mib, result in rows:
        growth = result["peak_anon_mb"] - result["baseline_anon_mb"]
        print(
            f"{size:>8} {raw_mib:>9.1f} {decoded_mib:>12.1f} {result['peak_rss_mb']:>5.0f} MiB {result['baseline_anon_mb']:>14.0f} MiB"
            f" {result['peak_anon_mb']:>6.0f} MiB {growth:>8.0f} MiB {result['peak_file_mb']:>13.0f} MiB {result['seconds']:>8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

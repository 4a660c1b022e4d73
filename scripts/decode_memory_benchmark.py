#!/usr/bin/env python
"""Peak memory of decoding a "batch" of huge PNGs with ``hf_fer.image_io.load_image``.

The case from issue 15: six 12000x12000 PNGs (a few hundred KB of files) used to take 7.35 GB in
``hf-fer predict`` because every full-size decode was held for the batch. With ``max_size`` each image is
shrunk while it is decoded, so only one full-size image exists at a time and the batch holds small ones.

Prints the resident memory before decoding (baseline), the peak while decoding all images and keeping
the results (as a batch does), and the difference. Target: <= 1 GB over baseline for 6 x 12000².

    python scripts/decode_memory_benchmark.py                      # 6 x 12000², max_size 448
    python scripts/decode_memory_benchmark.py --max-size 0         # no max_size: full-size decodes (needs ~2.6 GB)
"""
from __future__ import annotations

import argparse
import os
import resource
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path


def write_png(path: Path, side: int, seed: int) -> int:
    """A valid RGB PNG of ``side``² pixels (one gradient row, repeated), in well under a second per file.

    Rows 2.. use PNG's "Up" filter, so they are all zero bytes; their deflate stream is one pre-compressed,
    self-contained block repeated (a full flush makes blocks byte-aligned and independent).
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    def deflate(data: bytes, final: bool = False) -> bytes:
        compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)

    period = bytes((seed * 40 + i) % 256 for i in range(768))
    first_row = b"\x00" + (period * (3 * side // len(period) + 1))[: 3 * side]
    up_row = b"\x02" + bytes(3 * side)
    rows_per_block = max(1, (1 << 20) // len(up_row))
    blocks, remainder = divmod(side - 1, rows_per_block)
    block_data = up_row * rows_per_block
    block, tail_data = deflate(block_data), up_row * remainder
    checksum = zlib.adler32(first_row)
    for _ in range(blocks):
        checksum = zlib.adler32(block_data, checksum)
    checksum = zlib.adler32(tail_data, checksum)
    stream = b"\x78\x01" + deflate(first_row) + block * blocks + deflate(tail_data, final=True) + struct.pack(">I", checksum)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    return path.stat().st_size


def rss_mb(field: str = "VmRSS") -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0), so the peak excludes everything before."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--side", type=int, default=12000)
    parser.add_argument("--max-size", type=int, default=448, help="long-side cap while decoding (0: none, full-size decodes)")
    parser.add_argument("--dir", default=None, help="where to write the PNGs (default: a temporary folder)")
    args = parser.parse_args(argv)

    from hf_fer.image_io import load_image

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        files, total = [], 0
        for index in range(args.count):
            path = Path(folder) / f"huge_{index}.png"
            total += write_png(path, args.side, index)
            files.append(path)
        print(f"{args.count} PNGs of {args.side}x{args.side} RGB: {total / 1024:.0f} KB of files, "
              f"{args.count * args.side ** 2 * 3 / 2 ** 20:.0f} MB if all decoded at full size")

        baseline = rss_mb()
        exact = reset_peak()
        start = time.perf_counter()
        batch = [load_image(path, max_size=args.max_size or None) for path in files]
        elapsed = time.perf_counter() - start
        peak = rss_mb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"decoded {len(batch)} images to {batch[0].size[0]}x{batch[0].size[1]} in {elapsed:.1f} s "
              f"(max_size={args.max_size or None}, cpus={os.cpu_count()})")
        print(f"baseline RSS: {baseline:.0f} MB")
        print(f"peak RSS: {peak:.0f} MB" + ("" if exact else " (lifetime peak: /proc/self/clear_refs unavailable)"))
        print(f"peak over baseline: {peak - baseline:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

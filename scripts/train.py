#!/usr/bin/env python
"""Train a FER model from a recipe: `accelerate launch scripts/train.py --recipe R --dataset D --output O` (see --help)."""
import sys

from hf_fer_cli import main  # torch-free until the command runs: --help answers at once

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

#!/usr/bin/env python
"""Convert an upstream FER checkpoint into a transformers folder (see `--help`). Same as `hf-fer convert`."""
import sys

from hf_fer_cli import main  # torch-free until the command runs: --help answers at once

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))

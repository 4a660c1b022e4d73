#!/usr/bin/env python
"""Thin wrapper: `python scripts/benchmark.py ...` is `hf-fer benchmark ...` (see `--help`)."""
import sys

from hf_fer_cli import main  # torch-free until the command runs: --help answers at once

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))

#!/usr/bin/env python
"""Thin wrapper: `python scripts/benchmark.py ...` is `hf-fer benchmark ...` (see `--help`)."""
import sys

from hf_fer.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))

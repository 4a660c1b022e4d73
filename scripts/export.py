#!/usr/bin/env python
"""Thin wrapper: `python scripts/export.py ...` is `hf-fer export ...` (see `--help`)."""
import sys

from hf_fer_cli import main  # torch-free until the command runs: --help answers at once

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))

#!/usr/bin/env python
"""Thin wrapper: `python scripts/push_to_hub.py ...` is `hf-fer push ...` (see `--help`)."""
import sys

from hf_fer_cli import main  # torch-free until the command runs: --help answers at once

if __name__ == "__main__":
    sys.exit(main(["push", *sys.argv[1:]]))

#!/usr/bin/env python
"""Thin wrapper: `python scripts/push_to_hub.py ...` is `hf-fer push ...` (see `--help`)."""
import sys

from hf_fer.cli import main

if __name__ == "__main__":
    sys.exit(main(["push", *sys.argv[1:]]))

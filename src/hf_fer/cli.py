"""``python -m hf_fer.cli ...``: the ``hf-fer`` command (kept for scripts and tests that name it).

The command itself lives in the top-level package :mod:`hf_fer_cli`, outside ``hf_fer``, so that ``hf-fer --help``
and argument errors never import torch or transformers (``import hf_fer`` registers the Auto classes, which does).
"""
from __future__ import annotations

import sys

from hf_fer_cli import SUBCOMMANDS, USAGE, build_parser, main, run_subcommand

__all__ = ["SUBCOMMANDS", "USAGE", "build_parser", "main", "run_subcommand"]

if __name__ == "__main__":
    sys.exit(main())

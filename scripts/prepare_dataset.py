#!/usr/bin/env python
"""Convert a raw FER benchmark download into a ``datasets.DatasetDict``.

    python scripts/prepare_dataset.py --benchmark raf-db --raw-dir ~/data/raf-basic --output data/rafdb

Thin wrapper over :func:`hf_fer.data.benchmarks.main` (same as ``hf-fer prepare-dataset``); see
``--help`` for the layouts, ``--strict`` and ``--push-to-hub``.
"""
import sys

from hf_fer.data.benchmarks import main

if __name__ == "__main__":
    sys.exit(main())

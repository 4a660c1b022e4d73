# Vendored from ../shared/parity/fixture_weights.py (unchanged) so the tests stand alone.
"""Deterministic stand-in weights for checkpoint-conversion parity tests.

A parity fixture pairs an *original* (upstream) checkpoint layout with the
logits that the upstream implementation produced for it.  Instead of shipping
hundreds of megabytes of random weights, a fixture ships the list of state-dict
entries (name, shape, dtype) and a seed; this module regenerates the exact same
tensors anywhere, with NumPy's PCG64 generator (stable across NumPy versions).

Rules, applied entry by entry in the listed order, all from one generator:
  * integer dtype (e.g. BatchNorm ``num_batches_tracked``) -> zeros, no draw
  * name ends with ``running_var``                       -> uniform(0.5, 1.5)
  * name ends with ``running_mean``                      -> normal(0, 0.1)
  * two or more dimensions                               -> normal(0, 1/sqrt(fan_in)),
                                                            fan_in = prod(shape[1:])
  * one dimension, name ends with ``weight``             -> uniform(0.8, 1.2)
  * anything else (biases, 0-d or 1-d tensors)           -> normal(0, 0.05)
Entries listed under ``fixed`` in the fixture (non-learned buffers such as
relative-position indices) are not generated: they are read from the
fixture's ``fixed_buffers.safetensors`` and consume no draws.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

_INT_DTYPES = {"int64", "int32", "int16", "int8", "uint8", "bool"}


def generate(entries, seed: int, fixed=None):
    """Return {name: np.ndarray} for ``entries`` = [[name, shape, dtype], ...]."""
    fixed = fixed or {}
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, dtype in entries:
        shape = tuple(int(s) for s in shape)
        if name in fixed:
            out[name] = np.asarray(fixed[name])
            continue
        if dtype in _INT_DTYPES:
            out[name] = np.zeros(shape, dtype=np.int64 if dtype != "bool" else bool)
        elif name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith("running_mean"):
            out[name] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[1:])) or 1
            out[name] = rng.normal(0.0, 1.0 / math.sqrt(fan_in), shape).astype(np.float32)
        elif len(shape) == 1 and name.endswith("weight"):
            out[name] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        else:
            out[name] = rng.normal(0.0, 0.05, shape).astype(np.float32)
    return out


def load_fixture_state_dict(fixture_dir, seed: int | None = None):
    """Regenerate the original-layout state dict described by ``fixture_dir``.

    ``fixture_dir`` holds ``fixture.json`` ({"entries": [...], "seed": int,
    "fixed": [names]}) and, when ``fixed`` is non-empty,
    ``fixed_buffers.safetensors``.  Returns {name: torch.Tensor}.
    """
    import torch
    from safetensors.numpy import load_file

    fixture_dir = Path(fixture_dir)
    meta = json.loads((fixture_dir / "fixture.json").read_text())
    fixed = {}
    if meta.get("fixed"):
        fixed = load_file(str(fixture_dir / "fixed_buffers.safetensors"))
    arrays = generate(meta["entries"], meta["seed"] if seed is None else seed, fixed)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

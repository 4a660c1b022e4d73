"""POSTER V2 under torch.compile (its own file: compiling takes most of a CPU minute)."""
from __future__ import annotations

import torch

from test_poster_v2 import tiny_model


def test_torch_compile_fullgraph_matches_eager():
    """No graph breaks (upstream's `.item()` size computations would break the graph) and the same logits."""
    model = tiny_model()
    pixel_values = torch.randn(2, 3, 80, 70)
    with torch.no_grad():
        eager = model(pixel_values=pixel_values).logits
        compiled = torch.compile(model, fullgraph=True, dynamic=False)(pixel_values=pixel_values).logits
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)

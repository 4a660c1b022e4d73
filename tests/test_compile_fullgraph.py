"""Every architecture compiles as one graph (``torch.compile(fullgraph=True)``: no graph breaks, so no
``.item()`` shape maths or data-dependent Python branches in the forward) and gives the eager logits.

POSTER V2 has its own file (tests/test_poster_v2_compile.py); the others are here, with tiny configs.
"""
from __future__ import annotations

import pytest
import torch

import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.labels import id2label
from hf_fer.models.arm import ArmForImageClassification
from hf_fer.models.dacl import DaclForImageClassification
from hf_fer.models.dmue import DmueConfig, DmueForImageClassification
from test_arm import tiny_config as arm_tiny_config
from test_dacl import tiny_config as dacl_tiny_config
from test_vt_nr import tiny_model as vt_nr_tiny_model


def _arm():
    model = ArmForImageClassification(arm_tiny_config()).eval()
    model.calibrate_affinity([torch.randn(4, 3, 64, 64)])  # batch-independent "running" affinity map
    return model, (2, 3, 64, 64)


def _dacl():
    return DaclForImageClassification(dacl_tiny_config()).eval(), (2, 3, 64, 64)


def _dmue():
    return DmueForImageClassification(DmueConfig(backbone_depths=[1, 1, 1, 1], id2label=id2label("affectnet-8"))).eval(), (2, 3, 64, 64)


def _vt_nr():
    return vt_nr_tiny_model(), (2, 3, 64, 64)


def _mini_xception():
    from hf_fer.pretrained import pretrained_path
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(pretrained_path()).eval(), (2, 1, 64, 64)


BUILDERS = {"arm": _arm, "dacl": _dacl, "dmue": _dmue, "vt_nr": _vt_nr, "mini_xception": _mini_xception}


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_torch_compile_fullgraph_matches_eager(arch):
    torch.manual_seed(0)
    model, shape = BUILDERS[arch]()
    pixel_values = torch.randn(*shape)
    torch._dynamo.reset()
    with torch.no_grad():
        eager = model(pixel_values=pixel_values).logits
        compiled = torch.compile(model, fullgraph=True, dynamic=False)(pixel_values=pixel_values).logits
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)

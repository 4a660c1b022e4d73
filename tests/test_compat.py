"""Every private API hf_fer uses lives in hf_fer/_compat.py and still exists in the installed versions.

When a torch/numpy upgrade moves one of them, these tests fail naming it (instead of a checkpoint load or a
benchmark failing in a user's hands); nothing outside _compat.py may reach for the same internals.
"""
import pickle
import pickletools
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_fer import _compat

SRC = Path(__file__).resolve().parents[1] / "src" / "hf_fer"


def test_torch_weights_only_allow_list_is_readable():
    allowed = _compat.torch_weights_only_allowed_globals()
    # what any torch.save'd state dict needs: if these are missing, the internal changed meaning
    assert {"torch._utils._rebuild_tensor_v2", "collections.OrderedDict"} <= allowed, sorted(allowed)[:20]
    assert "builtins.eval" not in allowed and "os.system" not in allowed


def _globals_in(payload: bytes) -> set[str]:
    """Qualified names a pickle refers to (GLOBAL, or STACK_GLOBAL after two string pushes)."""
    names, strings = set(), []
    for opcode, argument, _ in pickletools.genops(payload):
        if opcode.name == "GLOBAL":
            names.add(argument.replace(" ", "."))
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(argument)
        elif opcode.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]}.{strings[-1]}")
    return names


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_numpy_reconstructors_cover_what_numpy_pickles_name(protocol):
    reconstructors = _compat.numpy_pickle_reconstructors()
    payload = pickle.dumps({"array": np.arange(6, dtype=np.float32).reshape(2, 3), "scalar": np.float64(0.5)}, protocol=protocol)
    numpy_functions = {name for name in _globals_in(payload) if name.split(".")[-1] in ("_reconstruct", "scalar")}
    assert numpy_functions and numpy_functions <= set(reconstructors), (numpy_functions, sorted(reconstructors))
    array = reconstructors["numpy._core.multiarray._reconstruct"](np.ndarray, (0,), b"b")
    assert isinstance(array, np.ndarray)


def test_checkpoint_with_numpy_values_loads_through_the_safe_reader(tmp_path):
    from hf_fer.conversion import load_upstream_checkpoint

    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": OrderedDict(weight=torch.ones(2)), "best_acc": np.float64(0.9), "hist": np.arange(3)}, path)
    checkpoint = load_upstream_checkpoint(path)
    assert torch.equal(checkpoint["weight"], torch.ones(2)) and float(checkpoint.metadata["best_acc"]) == 0.9


def test_memory_tracker_and_cpu_bf16_probes_exist():
    tracker = _compat.torch_memory_tracker()
    assert hasattr(tracker, "track_external") and hasattr(tracker, "get_tracker_snapshot")
    for module, name, _ in _compat.CPU_BF16_PROBES:
        owner = torch.ops.mkldnn if module == "torch.ops.mkldnn" else __import__(module, fromlist=["_"])
        assert callable(getattr(owner, name, None)), f"{module}.{name} is gone: update hf_fer/_compat.py (CPU_BF16_PROBES)"
    assert set(_compat.cpu_bf16_capabilities()) == {"onednn_bf16", "avx512_bf16", "amx_tile"}


def test_a_moved_internal_fails_loudly_naming_it():
    with pytest.raises(_compat.InternalAPIMoved, match=r"torch\._no_such_module\._get_allowed_globals .*constraints\.txt"):
        _compat._internal("torch._no_such_module", "_get_allowed_globals", "the test")


PRIVATE_USES = re.compile(
    r"_weights_only_unpickler|np\._core|numpy\._core|numpy\.core|_tools\.mem_tracker|_is_mkldnn_bf16_supported|"
    r"_is_avx512_bf16_supported|_is_amx_tile_supported|_LazyAutoMapping|_extra_content|MAPPING_NAMES|_attn_implementation_internal"
)


def test_no_private_api_outside_compat():
    """The model folders (remote code, checked by their own tests) are outside this rule's reach: they cannot import
    hf_fer._compat."""
    offenders = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        if relative.name == "_compat.py" or relative.parts[0] == "models" and len(relative.parts) > 2:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_USES.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "private APIs outside hf_fer/_compat.py:\n" + "\n".join(offenders)

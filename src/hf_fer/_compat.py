"""The private APIs of other libraries that hf_fer uses because no public API does the job, all in one place.

Each one is named here with the reason no public API fits; ``tests/test_compat.py`` checks every one against the
installed versions and fails with a message naming the internal that moved, so a dependency upgrade breaks one
test file, not a checkpoint load or a benchmark in a user's hands. Add nothing here that has a public equivalent.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["InternalAPIMoved", "torch_weights_only_allowed_globals", "numpy_pickle_reconstructors", "torch_memory_tracker",
           "cpu_bf16_capabilities", "CPU_BF16_PROBES"]


class InternalAPIMoved(ImportError):
    """A private API hf_fer relies on is gone from the installed version of its library."""


def _internal(modules: str | tuple[str, ...], name: str, why: str) -> Any:
    """``module.name`` from the first of ``modules`` that has it; :class:`InternalAPIMoved` naming it otherwise."""
    modules = (modules,) if isinstance(modules, str) else modules
    errors = []
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            errors.append(f"{module}.{name}: {error}")
    from importlib.metadata import PackageNotFoundError, version

    package = modules[0].split(".")[0]
    try:
        installed = f"{package} {version(package)}"
    except PackageNotFoundError:
        installed = package
    raise InternalAPIMoved(
        f"hf_fer needs the private {' or '.join(f'{m}.{name}' for m in modules)} ({why}), which {installed} does not "
        f"provide ({'; '.join(errors)}). Install the versions in constraints.txt, or update hf_fer/_compat.py for this version."
    )


def torch_weights_only_allowed_globals() -> set[str]:
    """Qualified names ``torch.load(weights_only=True)`` accepts without ``safe_globals``.

    Private: ``torch._weights_only_unpickler._get_allowed_globals``. The public
    ``torch.serialization.get_safe_globals()`` lists only names a user added, and
    ``get_unsafe_globals_in_checkpoint`` reads zip checkpoints only and without our size and bomb limits; the
    checkpoint reader (hf_fer.conversion) scans the pickle itself and needs the built-in allow-list to know which
    of the globals it found still need a data-only stand-in.
    """
    allowed = _internal("torch._weights_only_unpickler", "_get_allowed_globals",
                        "the built-in allow-list of torch.load(weights_only=True)")
    return set(allowed().keys())


def numpy_pickle_reconstructors() -> dict[str, Callable]:
    """numpy's array/scalar unpickling functions under both names pickles use.

    A pickled ``ndarray`` or numpy scalar refers to ``numpy.core.multiarray._reconstruct`` / ``.scalar`` (numpy 1.x)
    or ``numpy._core.multiarray...`` (numpy 2.x) by name; the unpickler must map these names to the functions, which
    numpy only exposes from its private ``numpy._core.multiarray`` (``numpy.core`` is a deprecated alias of it).
    """
    names = {}
    for function in ("_reconstruct", "scalar"):
        # numpy 2.x: numpy._core; numpy 1.x (>= 1.24 is supported): numpy.core
        target = _internal(("numpy._core.multiarray", "numpy.core.multiarray"), function, "rebuilding pickled numpy arrays and scalars")
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            names[f"{module}.{function}"] = target
    return names


def torch_memory_tracker():
    """``MemTracker`` (peak memory of a CPU forward pass, by module and tensor kind).

    Private: ``torch.distributed._tools.mem_tracker.MemTracker``; torch's public memory statistics
    (``torch.cuda.max_memory_allocated``) exist only for accelerators.
    """
    return _internal("torch.distributed._tools.mem_tracker", "MemTracker", "peak memory of a forward pass on CPU")


#: CPU bf16 probes (module, function, what it tells): torch has no public "does this CPU do bf16 natively" query
#: (``torch.backends.cpu.get_cpu_capability()`` names the SIMD level only). ``hf-fer benchmark`` reports them.
CPU_BF16_PROBES = (
    ("torch.ops.mkldnn", "_is_mkldnn_bf16_supported", "onednn_bf16"),
    ("torch.cpu", "_is_avx512_bf16_supported", "avx512_bf16"),
    ("torch.cpu", "_is_amx_tile_supported", "amx_tile"),
)


def cpu_bf16_capabilities() -> dict[str, bool]:
    """``{"onednn_bf16", "avx512_bf16", "amx_tile"}`` → whether this CPU/torch build has it (False where a probe
    fails: a build without oneDNN; a missing probe raises in tests/test_compat.py, not here)."""
    import torch

    capabilities = {}
    for module, name, key in CPU_BF16_PROBES:
        owner = torch.ops.mkldnn if module == "torch.ops.mkldnn" else importlib.import_module(module)
        try:
            capabilities[key] = bool(getattr(owner, name)())
        except (AttributeError, RuntimeError):
            capabilities[key] = False
    return capabilities

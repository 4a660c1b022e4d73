"""Reading upstream (research-repo) checkpoints safely, and the generic conversion driver.

Upstream FER repos save checkpoints with ``torch.save`` of a container dict: a state dict under
some key (``state_dict``, ``model_state_dict``, ``model``...), often with DataParallel's ``module.``
prefix, CUDA tensors, optimizer state and sometimes pickled helper objects defined in the training
script (POSTER V2 pickles ``__main__.RecorderMeter`` instances holding numpy arrays).

:func:`load_upstream_checkpoint` reads all of that with ``torch.load(weights_only=True)``: no pickled
code is ever executed. Classes the checkpoint references that are not plain tensors/containers are
replaced by inert stubs (they can be created and filled with state, never called); numpy arrays are
allowed; a global that would be *called* during unpickling (``os.system``, ``eval``...) is refused
with :class:`UnsafeCheckpointError`.

:func:`convert_original_checkpoint` is the engine of ``scripts/convert_original_checkpoint.py``:
load → the architecture's own key mapping (``hf_fer.models.<arch>.convert_<arch>_original``) →
``save_pretrained`` with remote code and ``auto_map``.
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import pickletools
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "UnsafeCheckpointError",
    "UpstreamCheckpoint",
    "ConversionReport",
    "load_upstream_checkpoint",
    "strip_prefix",
    "map_state_dict",
    "convert_original_checkpoint",
]

# Keys under which upstream training scripts store the model weights, most specific first.
KNOWN_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "params", "weights")

# Modules whose globals are never stubbed: a checkpoint naming them is refused outright.
_FORBIDDEN_MODULES = {
    "os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil", "importlib",
    "runpy", "pickle", "_pickle", "socket", "ctypes", "pty", "code", "codeops", "types", "marshal",
    "webbrowser", "platform", "signal", "multiprocessing", "threading", "asyncio", "pdb", "timeit",
    "operator", "functools", "inspect", "io", "pathlib", "tempfile", "glob", "commands", "popen2",
}


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint would execute code (or reference a dangerous global) if unpickled."""


class UpstreamCheckpoint(dict):
    """A flat ``{name: tensor}`` state dict (it *is* a dict) plus what else the file held.

    Attributes:
        path: the file read.
        container_key: the key the state dict was found under (``None`` for a bare state dict).
        metadata: the other top-level entries (epoch, best_acc, optimizer state, stubbed objects...).
        stubbed_globals: fully-qualified names of classes that were replaced by inert stubs.
        stripped_prefix: the DataParallel prefix removed from every key, if any.
    """

    def __init__(self, *args, path: str = "", container_key: str | None = None, metadata: dict | None = None,
                 stubbed_globals: list[str] | None = None, stripped_prefix: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = path
        self.container_key = container_key
        self.metadata = metadata or {}
        self.stubbed_globals = stubbed_globals or []
        self.stripped_prefix = stripped_prefix

    def check_keys(self, expected: Iterable[str], ignore_prefixes: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        """Return ``(missing, unexpected)`` key names against ``expected`` (keys under ``ignore_prefixes`` skipped)."""
        ignore = tuple(ignore_prefixes)
        expected = list(expected)
        present = [k for k in self if not (ignore and k.startswith(ignore))]
        missing = [k for k in expected if k not in self]
        expected_set = set(expected)
        unexpected = [k for k in present if k not in expected_set]
        return missing, unexpected


@dataclass
class ConversionReport:
    """What a converter did with each upstream key; printed by the CLI, asserted on by tests."""

    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # known-dead upstream keys, intentionally discarded
    unexpected: list[str] = field(default_factory=list)  # upstream keys nobody knows what to do with
    missing: list[str] = field(default_factory=list)  # our parameters no upstream key filled
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"loaded {len(self.loaded)} tensors, dropped {len(self.dropped)} unused upstream keys, "
            f"{len(self.unexpected)} unexpected, {len(self.missing)} missing"
        ]
        if self.dropped:
            prefixes = sorted({k.rsplit(".", 1)[0].split(".")[0] for k in self.dropped})
            lines.append(f"  dropped (not used by the forward pass): {len(self.dropped)} keys under {', '.join(prefixes)}")
        for title, keys in (("unexpected", self.unexpected), ("missing", self.missing)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... (+{len(keys) - 20})" if len(keys) > 20 else "")
                lines.append(f"  {title}: {shown}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------


def _make_stub(qualified_name: str) -> type:
    """An inert stand-in class for an unknown pickled class: state is kept, nothing is executed."""
    module, _, name = qualified_name.rpartition(".")

    def __init__(self, *args, **kwargs):  # reached only through REDUCE, i.e. a *call* in the pickle
        raise UnsafeCheckpointError(
            f"the checkpoint calls {qualified_name}(...) while unpickling; refusing to load it "
            "(only plain tensors, containers, numpy arrays and data-only objects are accepted)"
        )

    def __setstate__(self, state):
        object.__setattr__(self, "_stub_state", state)

    def __getattr__(self, item):
        state = object.__getattribute__(self, "__dict__").get("_stub_state")
        if isinstance(state, dict) and item in state:
            return state[item]
        raise AttributeError(item)

    def __repr__(self):
        return f"<stub of {qualified_name}>"

    stub = type(name or "Stub", (), {
        "__init__": __init__, "__setstate__": __setstate__, "__getattr__": __getattr__, "__repr__": __repr__,
    })
    stub.__module__ = module or "__stub__"
    stub.__qualname__ = name
    return stub


def _safe_reconstructor(cls, base, state):
    """Protocol 0/1 pickles build plain objects through ``copyreg._reconstructor``; allow it for stubs only."""
    if base is not object or not getattr(cls, "__stub__", False):
        raise UnsafeCheckpointError(f"copyreg._reconstructor on {cls!r} with base {base!r} is not allowed")
    return object.__new__(cls)


def _numpy_globals() -> dict[str, Any]:
    """The numpy globals needed to rebuild plain arrays and scalars (no code paths)."""
    import numpy as np

    from ._compat import numpy_pickle_reconstructors

    allowed: dict[str, Any] = dict(numpy_pickle_reconstructors())
    allowed["numpy.ndarray"] = np.ndarray
    allowed["numpy.dtype"] = np.dtype
    for dtype_cls_name in dir(getattr(np, "dtypes", object)):
        if dtype_cls_name.endswith("DType"):
            allowed[f"numpy.dtypes.{dtype_cls_name}"] = getattr(np.dtypes, dtype_cls_name)
    return allowed


# The pickled *structure* of a checkpoint (tensors live outside it) is a few MB even for large models.
MAX_PICKLE_BYTES = 256 * 2**20
# torch stores zip members uncompressed; a member that inflates far beyond its stored size is a bomb.
MAX_COMPRESSION_RATIO = 100


class _CappedReader:
    """A read-only stream that refuses to hand out more than ``limit`` bytes (bounded memory and time)."""

    def __init__(self, stream, limit: int, what: str):
        self.stream, self.limit, self.what, self.count = stream, limit, what, 0

    def _take(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.limit:
            raise ValueError(f"{self.what}: the pickled part exceeds {self.limit // 2**20} MiB; refusing to read further")
        return data

    def read(self, size: int = -1) -> bytes:
        return self._take(self.stream.read(self.limit + 1 - self.count if size is None or size < 0 else min(size, self.limit + 1 - self.count)))

    def readline(self, size: int = -1) -> bytes:
        return self._take(self.stream.readline(self.limit + 1 - self.count))


def _scan_pickles(stream, what: str, max_pickles: int) -> list[str]:
    """Globals referenced by up to ``max_pickles`` pickles stored back to back in ``stream`` (read incrementally)."""
    names: list[str] = []
    for index in range(max_pickles):
        recent_strings: list[str] = []
        memo: dict[int, Any] = {}  # strings put in the memo: STACK_GLOBAL may take its names from it (BINGET)
        last: Any = None  # what the previous opcode pushed, when it was a string
        opcodes = 0
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                opcodes += 1
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    recent_strings = (recent_strings + [arg])[-2:]
                elif name == "MEMOIZE":
                    memo[len(memo)] = last
                    continue
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = last
                    continue
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    value = memo.get(int(arg))
                    if isinstance(value, str):
                        recent_strings = (recent_strings + [value])[-2:]
                    last = value
                    continue
                elif name == "STACK_GLOBAL" and len(recent_strings) == 2:
                    names.append(f"{recent_strings[0]}.{recent_strings[1]}")
                elif name == "STOP":
                    break
                last = arg if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8") else None
        except ValueError as error:
            text = str(error)
            if "refusing" in text:
                raise
            if index > 0 and opcodes == 0:
                break  # the end of a plain pickle file (or data that follows the last pickle)
            if index > 0 or any(word in text for word in ("exhausted", "not enough data", "remain")):
                raise ValueError(f"{what}: the file is truncated or damaged (it ends or breaks inside a pickle: {error})") from None
            raise ValueError(f"{what}: not a PyTorch checkpoint or pickle ({error})") from None
    return names


def _pickled_globals(path: str) -> list[str]:
    """List every global a torch checkpoint (zip or legacy format) or plain pickle references, without unpickling it.

    Memory and time stay bounded: pickles are streamed (never read whole), their size is capped and zip
    members that would inflate far beyond their stored size are refused before anything is decompressed.
    """
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes), not a checkpoint (an interrupted download or copy?)")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    names: list[str] = []
    # torch.load takes a file for a zip archive only when it *starts* with a zip header (zipfile also accepts an
    # archive appended to anything, e.g. a malicious legacy pickle followed by a harmless checkpoint): scan what
    # torch will read.
    if magic == b"PK\x03\x04" and zipfile.is_zipfile(path):
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path}: a damaged or truncated zip archive ({error})") from None
        with archive:
            for info in archive.infolist():
                if info.file_size > 16 * 2**20 and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
                    raise UnsafeCheckpointError(
                        f"{path}: member {info.filename} would inflate from {info.compress_size:,} to {info.file_size:,} bytes "
                        f"(ratio > {MAX_COMPRESSION_RATIO}): refusing a possible decompression bomb (torch stores checkpoint members uncompressed)"
                    )
            # after the bomb check: testzip inflates
            damaged = archive.testzip()  # every member against its CRC-32 (torch does not check them)
            if damaged is not None:
                raise ValueError(f"{path}: member {damaged} fails its CRC-32 check: the file is damaged (a bad download "
                                 "or copy?); converting it would give wrong weights")
            for info in archive.infolist():
                if not info.filename.endswith(".pkl"):
                    continue
                if info.file_size > MAX_PICKLE_BYTES:
                    raise UnsafeCheckpointError(f"{path}: {info.filename} declares {info.file_size:,} bytes of pickle "
                                                f"(limit {MAX_PICKLE_BYTES // 2**20} MiB); refusing to read it")
                with archive.open(info) as member:
                    names += _scan_pickles(_CappedReader(member, MAX_PICKLE_BYTES, f"{path}:{info.filename}"), f"{path}:{info.filename}", 1)
    elif magic.startswith(b"PK"):
        raise ValueError(f"{path}: a truncated zip archive ({size:,} bytes, no central directory): an incomplete download or copy?")
    else:
        with open(path, "rb") as handle:  # legacy torch format: magic, protocol, sys info, the object, storage keys
            names += _scan_pickles(_CappedReader(handle, MAX_PICKLE_BYTES, path), path, 5)
    return list(dict.fromkeys(names))


def _torch_safe_names() -> set[str]:
    from ._compat import torch_weights_only_allowed_globals

    return torch_weights_only_allowed_globals()


def _read_pickle(path: str) -> tuple[Any, list[str]]:
    allowed_by_torch = _torch_safe_names()
    numpy_allowed = _numpy_globals()
    extra: list[tuple[Any, str]] = []
    stubbed: list[str] = []
    for qualified in _pickled_globals(path):
        if qualified in allowed_by_torch:
            continue
        module = qualified.rpartition(".")[0]
        if qualified in numpy_allowed:
            # numpy.dtype(...) builds instances of numpy.dtypes.*DType classes, which BUILD must accept too
            extra.extend((obj, name) for name, obj in numpy_allowed.items() if (obj, name) not in extra)
        elif qualified == "copyreg._reconstructor":
            extra.append((_safe_reconstructor, qualified))
        elif module.split(".")[0] in _FORBIDDEN_MODULES or qualified.startswith("torch._C") or module == "":
            raise UnsafeCheckpointError(
                f"{path}: the checkpoint references the global {qualified!r}, which can execute code; "
                "refusing to load it. Only tensors, containers, numpy arrays and data-only objects are accepted."
            )
        else:
            stub = _make_stub(qualified)
            stub.__stub__ = True
            extra.append((stub, qualified))
            stubbed.append(qualified)
    try:
        with torch.serialization.safe_globals(extra):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # torch wraps errors raised inside the unpickler
        cause = error
        while cause is not None and not isinstance(cause, UnsafeCheckpointError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, UnsafeCheckpointError):
            raise UnsafeCheckpointError(f"{path}: {cause}") from None
        if "UnsafeCheckpointError" in str(error) or "refusing" in str(error):
            raise UnsafeCheckpointError(f"{path}: {error}") from None
        if "Weights only load failed" in str(error):  # torch's own weights-only unpickler refused something
            reason = next((line.split(":", 1)[1].strip() for line in str(error).splitlines()
                           if line.strip().startswith("WeightsUnpickler error:")), "it holds more than tensors and data")
            raise UnsafeCheckpointError(f"{path}: refused by torch's weights-only loader ({reason}); hf_fer never "
                                        "unpickles code, so this file cannot be read as a checkpoint") from None
        hint = (f" (the file has {os.path.getsize(path):,} bytes: it is truncated or damaged)"
                if any(word in str(error) for word in ("EOF", "corrupt", "truncat", "out of range")) else "")
        raise ValueError(f"{path}: could not read the checkpoint with torch.load(weights_only=True): {error}{hint}") from error
    return obj, stubbed


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> tuple[dict[str, torch.Tensor], bool]:
    """Remove ``prefix`` from every key that has it (DataParallel/DDP wrappers). Returns (dict, stripped?)."""
    stripped = any(k.startswith(prefix) for k in state_dict)
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}, stripped


def load_upstream_checkpoint(path: str | os.PathLike, container_key: str | None = None) -> UpstreamCheckpoint:
    """Open an upstream ``.pth``/``.pth.tar`` without executing pickled code; return its flat state dict.

    The state dict is found at the top level or under one of :data:`KNOWN_CONTAINER_KEYS` (or
    ``container_key``); ``module.`` prefixes are stripped; tensors end up on CPU, contiguous.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj, stubbed = _read_pickle(path)

    metadata: dict = {}
    found_key: str | None = None
    if _is_state_dict(obj):
        state = obj
    elif isinstance(obj, Mapping):
        keys = [container_key] if container_key else [k for k in KNOWN_CONTAINER_KEYS if k in obj]
        state = None
        for key in keys:
            if key not in obj:
                raise KeyError(f"{path}: no key {key!r} in the checkpoint (keys: {sorted(map(str, obj))})")
            if _is_state_dict(obj[key]):
                state, found_key = obj[key], key
                break
        if state is None and set(map(str, obj)) <= {"state", "param_groups"}:
            raise ValueError(
                f"{path}: this file holds only an optimizer state (keys 'state' and 'param_groups'), no model weights. "
                "POSTER V2's '*model_best.pth' is written this way by an upstream bug: convert the per-epoch checkpoint instead."
            )
        if state is None:
            raise ValueError(
                f"{path}: no state dict found; expected a dict of tensors at the top level or under one of "
                f"{list(KNOWN_CONTAINER_KEYS)}, got top-level keys {sorted(map(str, obj))}"
            )
        metadata = {k: v for k, v in obj.items() if k != found_key}
    elif isinstance(obj, torch.nn.Module):  # cannot happen with weights_only, kept for clarity
        raise ValueError(f"{path}: holds a pickled nn.Module, not a state dict")
    else:
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")

    flat, stripped = strip_prefix(state, "module.")
    broken = [key for key, tensor in flat.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:  # a diverged or damaged training run: the converted model would output NaN
        raise ValueError(f"{path}: {len(broken)} tensor(s) hold NaN or infinite values ({', '.join(broken[:5])}"
                         f"{', ...' if len(broken) > 5 else ''}); a model converted from it would output NaN")
    checkpoint = UpstreamCheckpoint(path=path, container_key=found_key, metadata=metadata,
                                    stubbed_globals=stubbed, stripped_prefix="module." if stripped else None)
    for key, tensor in flat.items():
        checkpoint[key] = tensor.detach().cpu().contiguous()
    return checkpoint


def map_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    rename_key,
    expected: Mapping[str, torch.Tensor],
    report: ConversionReport,
    *,
    not_in_upstream: Iterable[str] = (),
    model_name: str = "the model",
) -> dict[str, torch.Tensor]:
    """Rename upstream keys onto ``expected`` (our state dict), checking names and shapes; fill ``report``.

    ``rename_key(upstream_key)`` returns our key or ``None`` (unknown). Counters saved as shape ``[1]``
    instead of ``[]`` are accepted; tensors are cast to our dtype (half-precision saves become float32).
    Raises ``ValueError`` listing every unexpected key, missing key and shape mismatch at once.
    """
    skip = set(not_in_upstream)
    mapped: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, tensor in state_dict.items():
        new_key = rename_key(key)
        if new_key is None or new_key not in expected or new_key in skip:
            report.unexpected.append(key)
        elif expected[new_key].ndim == 0 and tensor.numel() == 1:
            mapped[new_key] = tensor.reshape(()).to(expected[new_key].dtype)
            report.loaded.append(key)
        elif tuple(tensor.shape) != tuple(expected[new_key].shape):
            mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} vs expected {tuple(expected[new_key].shape)}")
        else:
            mapped[new_key] = tensor.to(expected[new_key].dtype)
            report.loaded.append(key)
    report.missing = [k for k in expected if k not in mapped and k not in skip]
    if report.unexpected or report.missing or mismatched:
        raise ValueError(
            f"the checkpoint does not fit {model_name}:\n"
            f"  unexpected keys ({len(report.unexpected)}): {report.unexpected}\n"
            f"  missing keys ({len(report.missing)}): {report.missing}\n"
            f"  shape mismatches ({len(mismatched)}): {mismatched}"
        )
    return mapped


# ---------------------------------------------------------------------------------------------
# Conversion driver
# ---------------------------------------------------------------------------------------------


def _converter_module(arch: str):
    from .models import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown --arch {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch].converter


def require_keys(state_dict: Mapping, architecture: str, keys: tuple[str, ...]) -> None:
    """Refuse a file that is not a checkpoint of ``architecture``, naming the missing entry and the keys found."""
    for key in keys:
        if key not in state_dict:
            raise ValueError(
                f"not a{'n' if architecture[0] in 'AEIOU' else ''} {architecture} checkpoint: no {key!r} entry. "
                f"Keys found: {sorted(state_dict)[:30]}" + (" ..." if len(state_dict) > 30 else "")
            )


def classes_from_head(head_name: str, head, num_labels: int | None, id2label: Mapping | None, features: str = "features") -> int:
    """Number of classes of a ``[num_classes, features]`` classifier weight, checked against ``--num-labels`` and the names."""
    if head.ndim != 2:
        raise ValueError(f"{head_name} must be 2-D [num_classes, {features}], got shape {tuple(head.shape)}")
    if num_labels is not None and num_labels != head.shape[0]:
        raise ValueError(f"--num-labels {num_labels} but the checkpoint's {head_name} has {head.shape[0]} classes (shape {tuple(head.shape)})")
    if id2label is not None and len(id2label) != head.shape[0]:
        raise ValueError(f"{len(id2label)} class names given but the checkpoint has {head.shape[0]} classes")
    return int(head.shape[0])


def resolve_id2label(num_labels: int | None, dataset: str | None, id2label: Mapping | str | None) -> dict[int, str] | None:
    """``--dataset``/``--id2label`` → ``{index: name}``; checks it agrees with ``--num-labels``."""
    from . import labels as label_spaces

    mapping: dict[int, str] | None = None
    if id2label is not None:
        if isinstance(id2label, str):
            text = id2label.strip()
            if os.path.isfile(text):
                import json

                text = Path(text).read_text()
            if text.startswith("{"):
                import json

                mapping = {int(k): str(v) for k, v in json.loads(text).items()}
            else:
                mapping = dict(enumerate(n.strip() for n in text.split(",") if n.strip()))
        else:
            mapping = {int(k): str(v) for k, v in id2label.items()}
    elif dataset is not None:
        mapping = label_spaces.id2label(dataset)
    if mapping is not None and num_labels is not None and len(mapping) != num_labels:
        raise ValueError(f"--num-labels {num_labels} disagrees with the {len(mapping)} class names given: {list(mapping.values())}")
    return mapping


def convert_original_checkpoint(
    arch: str,
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    num_labels: int | None = None,
    dataset: str | None = None,
    id2label: Mapping | str | None = None,
    options: argparse.Namespace | None = None,
    verbose: bool = True,
):
    """Convert an upstream checkpoint into a ``save_pretrained`` folder (weights, configs, remote code).

    Returns ``(model, image_processor, report)``.
    """
    from .models import ARCHITECTURES

    converter = _converter_module(arch)
    mapping = resolve_id2label(num_labels, dataset, id2label)
    # upstream released checkpoints for several benchmarks, each with its own class order (Architecture.upstream_benchmarks)
    upstream_benchmarks = ARCHITECTURES[arch].upstream_benchmarks
    if mapping is None and checkpoint is not None and len(upstream_benchmarks) > 1:
        raise ValueError(
            f"{arch} was trained upstream on several benchmarks, each with its own class order, and the checkpoint does not say which: "
            f"pass --dataset (one of {', '.join(upstream_benchmarks)}) or --id2label with the class names in the checkpoint's order"
        )
    # a converter reading another format (mini_xception: Keras HDF5) brings its own `load_checkpoint`
    loader = getattr(converter, "load_checkpoint", load_upstream_checkpoint)
    state_dict = loader(checkpoint) if checkpoint is not None else None
    if options is None:
        parser = argparse.ArgumentParser()
        if hasattr(converter, "add_arguments"):
            converter.add_arguments(parser)
        options = parser.parse_args([])
    model, report = converter.convert(state_dict, num_labels=num_labels, id2label=mapping, options=options)
    if dataset is not None:
        model.config.hf_fer_dataset = dataset
    # provenance: config.json's ``hf_fer_converted_from`` is the one record the model card reads
    # (hf_fer.hub.model_card.provenance_section); file name and hash only, local paths stay private
    model.config.hf_fer_converted_from = conversion_record(arch, checkpoint, state_dict)
    image_processor = converter.default_image_processor(model.config) if hasattr(converter, "default_image_processor") else None
    if image_processor is not None and dataset is not None:
        # the face crop of the checkpoint's training data (saved in preprocessor_config.json; see hf_fer.faces)
        from .faces.alignment import training_alignment

        alignment = training_alignment(arch, dataset)
        if alignment is not None:
            image_processor.face_alignment = alignment
    save_staged(model, image_processor, output)
    if verbose:
        print(class_order_line(model.config, "--dataset " + dataset if dataset else "--id2label" if id2label is not None else None))
        where = f" (under {state_dict.container_key!r}" + (", 'module.' prefix stripped)" if state_dict.stripped_prefix else ")") if state_dict is not None and state_dict.container_key else ""
        print(f"read {checkpoint}{where}")
        if state_dict is not None and state_dict.stubbed_globals:
            print(f"  ignored pickled helper objects (never executed): {', '.join(state_dict.stubbed_globals)}")
        print(report.summary())
        print(f"wrote {output}")
    return model, image_processor, report


def conversion_record(arch: str, checkpoint: str | os.PathLike | None, state_dict=None) -> dict:
    """What a converted folder says about its origin (``config.hf_fer_converted_from``): the upstream file's name
    and SHA-256, where the weights sat in it, the epoch/accuracy upstream saved next to them, and the hf_fer version."""
    from . import __version__

    metadata = getattr(state_dict, "metadata", None) or {}
    sha256 = metadata.get("sha256")  # a loader that hashed the file already (Keras .hdf5)
    if not isinstance(sha256, str) and checkpoint is not None and os.path.isfile(checkpoint):
        sha256 = _sha256(checkpoint)
    return {
        "arch": arch,
        "checkpoint": os.path.basename(str(checkpoint)) if checkpoint is not None else None,
        "sha256": sha256 if isinstance(sha256, str) else None,
        "container_key": getattr(state_dict, "container_key", None),
        "epoch": _plain(metadata.get("epoch")),
        "best_acc": _plain(metadata.get("best_acc")),
        "hf_fer_version": __version__,
    }


def _sha256(path: str | os.PathLike) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def class_order_line(config, chosen_by: str | None) -> str:
    """The one line that says which class order the converted model got, and how it was chosen."""
    from .labels import benchmark_of

    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    try:
        order = benchmark_of(names)
    except KeyError:  # names that are not expressions: no benchmark to name
        order = None
    label = f"{order} order" if order else "class names"
    how = (f"from {chosen_by}" if chosen_by else
           "the converter's default: pass --dataset or --id2label if the checkpoint was trained on other classes")
    return f"hf-fer convert: {label} ({how}): " + ", ".join(f"{i} {name}" for i, name in enumerate(names))


def _plain(value):
    """A JSON-friendly copy of a checkpoint metadata value (0-d tensors become numbers; anything else: None)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return value if isinstance(value, (int, float, str)) else None


def save_with_remote_code(model, image_processor, output: str | os.PathLike) -> None:
    """``save_pretrained`` model (+ processor) with ``auto_map`` and the model folder's code files."""
    model.config.__class__.register_for_auto_class()
    model.__class__.register_for_auto_class("AutoModelForImageClassification")
    # The base model lives in the same modeling file: name it too, so AutoModel / the image-feature-extraction
    # pipeline load the folder as remote code without hf_fer installed.
    base_model_class = getattr(sys.modules[model.__class__.__module__], model.__class__.__name__.replace("ForImageClassification", "Model"), None)
    if base_model_class is not None and base_model_class is not model.__class__:
        auto_map = dict(getattr(model.config, "auto_map", None) or {})
        auto_map["AutoModel"] = f"{base_model_class.__module__.rsplit('.', 1)[-1]}.{base_model_class.__name__}"
        model.config.auto_map = auto_map
    model.save_pretrained(output)
    if image_processor is not None:
        image_processor.__class__.register_for_auto_class("AutoImageProcessor")
        image_processor.save_pretrained(output)


def save_staged(model, image_processor, output: str | os.PathLike) -> Path:
    """:func:`save_with_remote_code` into a temporary folder beside ``output``, then moved into place.

    A kill or an error while saving never leaves a half-written model where ``output`` is: a new folder appears
    with one rename; into an existing one the files move one by one with ``os.replace``, ``config.json`` last.
    A killed run's ``.<output>.hf_fer-partial-*`` folder is deleted by the next run.
    """
    import shutil

    from ._staging import publish_files, recover_interrupted, staging_folder

    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"output {output} exists and is not a folder")
    staged = staging_folder(output)
    try:
        save_with_remote_code(model, image_processor, staged)
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        if output.exists():
            written = {path.name for path in staged.iterdir()}
            publish_files(staged, output)
            stale = sorted(name for name in STALE_AFTER_NEW_WEIGHTS if name not in written and (output / name).is_file())
            stale += sorted(path.name for path in output.iterdir() if path.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            if stale:
                warnings.warn(f"{output} still holds {', '.join(stale)} from before this conversion: they describe other "
                              "weights (hf-fer push refuses their results); delete them or run `hf-fer evaluate` again",
                              stacklevel=2)
        else:
            os.rename(staged, output)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return output


#: Files of a model folder that describe its weights: stale once new weights are saved into the folder.
STALE_AFTER_NEW_WEIGHTS = ("eval_results.json", "training_results.json", "training_info.json", "calibration.json")


def main(argv: list[str] | None = None) -> int:
    """``scripts/convert_original_checkpoint.py`` / ``hf-fer convert``."""
    from .models import ARCHITECTURES

    from hf_fer_cli.parsers import convert_parser  # the same parser `hf-fer convert --help` shows without torch

    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--arch", choices=sorted(ARCHITECTURES), required=False)
    known, _ = base.parse_known_args(argv)
    converter = _converter_module(known.arch) if known.arch else None
    parser = convert_parser(architectures=sorted(ARCHITECTURES), arch=known.arch,
                            add_arch_arguments=getattr(converter, "add_arguments", None) if converter else None)
    args = parser.parse_args(argv)
    convert_original_checkpoint(
        args.arch, args.checkpoint, args.output, num_labels=args.num_labels, dataset=args.dataset,
        id2label=args.id2label, options=args,
    )
    return 0

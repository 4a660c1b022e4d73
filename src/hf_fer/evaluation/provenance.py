"""What a result file records so that a number can be traced: data fingerprint, checkpoint hash, versions, alignment."""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

__all__ = ["SplitHasher", "checkpoint_hashes", "package_versions", "alignment_description"]


class SplitHasher:
    """SHA-256 of an evaluated split, fed one (label, image) at a time in dataset order.

    Images are hashed by their encoded bytes (or the file's bytes when the entry is a path), so two result
    files with the same ``split_sha256`` were computed on exactly the same images, labels and order.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def update(self, entry, label) -> None:
        data = None
        if isinstance(entry, dict):
            data = entry.get("bytes")
            if data is None and entry.get("path"):
                entry = entry["path"]
        if data is None and isinstance(entry, (str, os.PathLike)):
            try:
                data = Path(entry).read_bytes()
            except OSError:
                data = f"unreadable:{entry}".encode()
        if data is None and hasattr(entry, "tobytes"):  # an already decoded PIL image
            data = entry.tobytes() + repr((getattr(entry, "size", None), getattr(entry, "mode", None))).encode()
        if data is None:
            data = repr(entry).encode()
        self._hash.update(f"{int(label)}:{len(data)}:".encode())
        self._hash.update(data)
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_hashes(source: str, model=None) -> dict:
    """SHA-256 of each ``*.safetensors`` of a local model folder; the Hub commit of a Hub model."""
    path = Path(str(source)).expanduser()
    if path.is_dir():
        files = {p.name: _file_sha256(p) for p in sorted(path.glob("*.safetensors"))}
        return {"files": files, "sha256": next(iter(files.values())) if len(files) == 1 else None}
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return {"hub_commit": commit}


def package_versions() -> dict:
    """Versions of everything that can change a number."""
    from importlib import metadata

    import importlib

    versions = {"python": platform.python_version()}
    modules = {"torch": "torch", "torchvision": "torchvision", "transformers": "transformers", "datasets": "datasets", "numpy": "numpy",
               "scikit-learn": "sklearn", "scipy": "scipy", "pillow": "PIL", "huggingface-hub": "huggingface_hub"}
    for package, module_name in modules.items():
        try:  # the running module's own version (torch's includes its build, e.g. +cu130)
            versions[package] = getattr(importlib.import_module(module_name), "__version__", None) or metadata.version(package)
        except (ImportError, metadata.PackageNotFoundError):
            versions[package] = None
    try:
        from .. import __version__

        versions["hf_fer"] = __version__
    except ImportError:
        pass
    return versions


def alignment_description(image_processor, dataset_alignment: str | None = None) -> dict:
    """How faces reach the model: the dataset's own crops/alignment and the processor's resize/crop."""
    config = {}
    if hasattr(image_processor, "to_dict"):
        try:
            config = json.loads(json.dumps(image_processor.to_dict(), default=str))
        except (TypeError, ValueError):
            config = {}
    processor = {key: config.get(key) for key in ("image_processor_type", "do_resize", "size", "resample", "do_center_crop", "crop_size",
                                                  "image_mean", "image_std") if key in config}
    face_alignment = {key: value for key, value in config.items() if "align" in key.lower()}
    return {
        "dataset": dataset_alignment or "images used as stored in the dataset (no detection or alignment at evaluation)",
        "processor": processor,
        **({"processor_alignment": face_alignment} if face_alignment else {}),
    }

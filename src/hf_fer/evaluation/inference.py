"""Shared inference plumbing of ``hf-fer evaluate``, ``predict`` and ``benchmark``: devices, model loading, decoding.

Kept in one place so that every command picks the device the same way, loads models the same way
(``import hf_fer`` registers the architectures; folders of unknown architectures need an explicit
``trust_remote_code``), and treats unreadable images the same way: skipped and reported, never
silently dropped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..image_io import ImageDecodeError, load_image

__all__ = ["resolve_device", "load_model_for_inference", "open_rgb_image", "ordered_label_names", "ImageLoadError"]

#: Kept as an alias: every decode failure is :class:`hf_fer.image_io.ImageDecodeError`.
ImageLoadError = ImageDecodeError


def resolve_device(device: str | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else Apple MPS, else CPU; anything else is passed to ``torch.device``."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return resolved


@dataclass
class LoadedModel:
    model: torch.nn.Module
    image_processor: object
    device: torch.device
    source: str

    @property
    def label_names(self) -> list[str]:
        return ordered_label_names(self.model.config.id2label)


def ordered_label_names(id2label) -> list[str]:
    """``id2label`` (int or str keys) → names in index order; refuses gaps (a config bug worth knowing about)."""
    indices = sorted(int(key) for key in id2label)
    if indices != list(range(len(indices))):
        raise ValueError(f"config id2label must number classes 0..{len(indices) - 1}, got indices {indices}")
    return [str(id2label[index] if index in id2label else id2label[str(index)]) for index in indices]


def _looks_like_a_path(source: str) -> bool:
    """True for arguments that can only mean a local folder (a Hub id is ``name`` or ``org/name``).

    ``runs/typo`` is also a valid Hub id, but when ``runs/`` is a local folder the user meant a path.
    """
    if source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1 or os.sep != "/" and os.sep in source:
        return True
    parent = Path(source).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def load_model_for_inference(
    model_name_or_path: str | os.PathLike,
    device: str | None = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> LoadedModel:
    """Model (eval mode, on ``device``) + image processor of a local folder or Hub id.

    hf_fer's own architectures load through the registered classes; ``trust_remote_code`` is passed
    explicitly (``False`` by default) so no interactive prompt ever appears.
    """
    import hf_fer  # noqa: F401  (registers every architecture with the Auto classes)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    source = str(model_name_or_path)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"--model {source}: expected a model folder (config.json, model.safetensors), got a file")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--model {source}: no config.json in this folder; is it a save_pretrained folder?")
        if not (path / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"--model {source}: no preprocessor_config.json (the image processor) in this folder")
        source = str(path)
    elif _looks_like_a_path(source):
        raise FileNotFoundError(f"no such folder: {source}")
    kwargs = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    resolved_device = resolve_device(device)
    try:
        model = AutoModelForImageClassification.from_pretrained(source, **kwargs).eval().to(resolved_device)
    except OSError as error:
        if path.exists():
            raise
        # Not a local folder, and not loadable from the Hub either (offline, unknown repo...): say both.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(f"no such folder: {source} (nor a Hub model id that could be loaded: {reason})") from None
    image_processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    return LoadedModel(model=model, image_processor=image_processor, device=resolved_device, source=source)


def open_rgb_image(source, *, max_size: int | None = None, name: str | None = None):
    """Decode one image (file path, bytes, ``datasets`` ``{"bytes", "path"}`` entry, PIL image, array) to RGB.

    A thin wrapper over :func:`hf_fer.image_io.load_image` (the one decoder of every path); raises
    :class:`ImageLoadError` (= ``ImageDecodeError``) naming the file and the reason; callers skip and report it.
    """
    return load_image(source, max_size=max_size, name=name)

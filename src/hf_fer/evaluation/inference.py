"""Shared inference plumbing of ``hf-fer evaluate``, ``predict`` and ``benchmark``: devices, model loading, decoding.

Kept in one place so that every command picks the device the same way, loads models the same way
(``import hf_fer`` registers the architectures; folders of unknown architectures need an explicit
``trust_remote_code``), and treats unreadable images the same way: skipped and reported, never
silently dropped.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["resolve_device", "load_model_for_inference", "open_rgb_image", "ordered_label_names", "ImageLoadError"]


class ImageLoadError(ValueError):
    """An image file or dataset entry could not be decoded."""


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
    elif source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--model {source}: folder does not exist")
    kwargs = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    resolved_device = resolve_device(device)
    model = AutoModelForImageClassification.from_pretrained(source, **kwargs).eval().to(resolved_device)
    image_processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    return LoadedModel(model=model, image_processor=image_processor, device=resolved_device, source=source)


def open_rgb_image(source: str | os.PathLike | bytes | dict):
    """Decode one image (file path, bytes, or a ``datasets`` ``{"bytes", "path"}`` entry) to an RGB PIL image.

    Raises :class:`ImageLoadError` with the reason; callers skip and report it.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, dict):
        data, path = source.get("bytes"), source.get("path")
        source = data if data is not None else path
        if source is None:
            raise ImageLoadError("empty image entry (no bytes and no path)")
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with Image.open(handle) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError as error:
        raise ImageLoadError(f"file not found: {error.filename or source}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageLoadError(f"cannot decode image: {type(error).__name__}: {error}") from None

"""One image decoder for every path: predict, evaluate, the face pipeline, dataset validation and training.

Before this module, four code paths decoded images four ways (EXIF orientation applied in some, 16-bit
PNGs clipped to white in others, palette indices fed to a model, CMYK crashing training). Everything now
goes through :func:`load_image`, so an image decodes to the same pixels wherever it is used, and every
failure is one :class:`ImageDecodeError` that names the file and the reason.

Policies (documented here because callers rely on them):

* **Orientation**: the EXIF orientation tag is applied (like ``PIL.ImageOps.exif_transpose``).
* **Modes**: ``1``/``L``/``P``/``CMYK``/``YCbCr``/... convert with PIL; 16-bit images (``I;16*``) are
  scaled to 8 bits (``round(v * 255 / 65535)``), never clipped; ``I`` (32-bit integer) is treated as
  8-bit when all values lie in 0..255 and as 16-bit otherwise (values clipped to 0..65535 first);
  ``F`` (float) is treated as 0..1 when all values lie in [0, 1] and as 0..255 otherwise (clipped).
* **Alpha** (``LA``/``PA``/``RGBA``, palette or colour-key transparency) is composited on white, as
  ``transformers``' ``convert_to_rgb`` does, so a transparent background never becomes black.
  ``mode="RGBA"`` keeps the alpha channel instead.
* **Animations / multi-frame files**: the first frame.
* **Size limit**: the pixel count is checked from the header *before* any pixel is decoded (default
  :data:`DEFAULT_MAX_PIXELS`, environment variable ``HF_FER_MAX_IMAGE_PIXELS`` — a positive integer or
  ``none`` — or the ``max_pixels`` argument). PIL's own ``DecompressionBombError`` never escapes: it is
  turned into the same :class:`ImageDecodeError`. The limit applies to the pixels actually decoded, so a
  large JPEG that JPEG's DCT scaling (``draft``) shrinks under ``max_size`` is accepted.
* **max_size**: the long side is reduced to at most ``max_size`` while decoding (JPEG ``draft``, then
  a bicubic resize with ``reducing_gap``), so a huge photo never sits full-size in a batch.
* **draft_size**: JPEG only, off by default: decode with JPEG's DCT scaling (1/2, 1/4, 1/8) at the smallest
  scale whose long side is still at least ``draft_size``, and stop there (no resampling). For callers that resize
  again anyway (the face pipeline's detector works at 640 px): most of a full decode's cost, without its pixels.
* **URLs**: a ``http://`` / ``https://`` string is fetched (as ``transformers``' own ``load_image`` does), with
  a timeout (:data:`URL_TIMEOUT_ENV`, default 30 s) and a size cap (:data:`URL_MAX_BYTES_ENV`, default 100 MB),
  then decoded like bytes; a failed fetch is an :class:`ImageDecodeError` naming the URL and the HTTP status.
* **Truncated files are errors**, even when ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was switched on
  elsewhere in the process: padding a half-decoded photo with grey would silently change predictions
  and training data.
"""
from __future__ import annotations

import io
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "ImageDecodeError",
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "load_image",
    "resolve_max_pixels",
    "max_size_for",
    "is_url",
    "fetch_url",
    "IMAGE_EXTENSIONS",
]

DEFAULT_MAX_PIXELS: int = 200_000_000
#: File extensions taken for images (folders given to ``hf-fer predict``, URLs that name a photo, not a stream).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MAX_PIXELS_ENV = "HF_FER_MAX_IMAGE_PIXELS"
URL_TIMEOUT_ENV = "HF_FER_URL_TIMEOUT"
URL_MAX_BYTES_ENV = "HF_FER_URL_MAX_BYTES"
_DEFAULT_URL_TIMEOUT = 30.0
_DEFAULT_URL_MAX_BYTES = 100 * 1024 * 1024

# PIL settings are process globals; the rare moments this module changes one are serialised.
_PIL_GLOBALS_LOCK = threading.Lock()

_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {  # the same table as PIL.ImageOps.exif_transpose
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_OUTPUT_MODES = ("RGB", "L", "RGBA")


class ImageDecodeError(ValueError):
    """An image could not be decoded. ``str()`` is ``"<source>: <reason>"``; both are attributes too."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason

    def __reduce__(self):  # picklable (DataLoader workers send exceptions between processes)
        return type(self), (self.source, self.reason)


def resolve_max_pixels(max_pixels: int | None = None) -> int | None:
    """The pixel limit in force: ``max_pixels`` if given, else ``$HF_FER_MAX_IMAGE_PIXELS``, else the default.

    ``None`` means no limit (``HF_FER_MAX_IMAGE_PIXELS=none``).
    """
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
        return max_pixels
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if text.lower() in ("none", "unlimited"):
        return None
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive integer or 'none', got {text!r}")
    return value


def max_size_for(image_processor: Any, minimum: int = 512) -> int | None:
    """Decode-time long-side cap for images an image processor will shrink anyway.

    Twice the processor's target (four times for ``shortest_edge`` resizing, to leave room for elongated
    images), at least ``minimum``: after an antialiased resize from at least twice the size, the result
    is practically the same as resizing from the full image, at a fraction of the memory.
    """
    size = getattr(image_processor, "size", None) or {}

    def side(key: str) -> int | None:  # a plain dict or transformers' SizeDict
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        return int(value) if value else None

    sides = [value for value in (side("height"), side("width"), side("longest_edge")) if value]
    if side("shortest_edge"):  # the long side ends up longer than the short one: allow 2:1 images
        sides.append(2 * side("shortest_edge"))
    if not sides:
        return None
    return max(2 * max(sides), minimum)


# ---------------------------------------------------------------------------------------------------------
def load_image(
    source: str | os.PathLike | bytes | Image.Image | np.ndarray | Any,
    *,
    max_pixels: int | None = None,
    max_size: int | None = None,
    mode: str = "RGB",
    name: str | None = None,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode one image to a PIL image of ``mode`` (``"RGB"``, ``"L"`` or ``"RGBA"``).

    Args:
        source: a file path, an http(s) URL, encoded bytes, a ``datasets`` image entry (``{"bytes", "path"}``),
            a PIL image, a numpy array (``HxW`` or ``HxWxC`` with C in 1/3/4, RGB order, or ``CxHxW`` when the
            last axis cannot be channels; uint8, bool, uint16 or float in [0, 1]) or a torch tensor (``CxHxW`` or ``HxW``, torchvision's layout; same dtypes).
        max_pixels: pixel-count limit (see :func:`resolve_max_pixels`).
        max_size: if given, the long side of the result is at most this (reduced while decoding).
        draft_size: JPEG files/bytes only: decode at the smallest DCT scale (1/2, 1/4, 1/8) whose long side is
            at least this, without further resampling (the result's long side may be up to twice this). Other
            formats and in-memory images are unaffected. Default: off.
        mode: output mode.
        name: how errors name the source (default: the path, or ``<bytes>``/``<array>``/...).

    Raises:
        ImageDecodeError: for every unreadable input (missing, empty, truncated, not an image, too many
            pixels...), with the source and the reason in the message.
    """
    if mode not in _OUTPUT_MODES:
        raise ValueError(f"mode must be one of {_OUTPUT_MODES}, got {mode!r}")
    if max_size is not None and (isinstance(max_size, bool) or int(max_size) < 1):
        raise ValueError(f"max_size must be a positive int or None, got {max_size!r}")
    if draft_size is not None and (isinstance(draft_size, bool) or int(draft_size) < 1):
        raise ValueError(f"draft_size must be a positive int or None, got {draft_size!r}")
    limit = resolve_max_pixels(max_pixels)

    if isinstance(source, dict):  # a datasets Image(decode=False) entry
        data, path = source.get("bytes"), source.get("path")
        name = name or (str(path) if path else None)
        if data is None and not path:
            raise ImageDecodeError(name or "<image entry>", "empty image entry (no bytes and no path)")
        source = data if data is not None else path
    if is_url(source):
        name = name or source
        source = fetch_url(source, name=name)
    if isinstance(source, (str, os.PathLike)):
        name = name or os.fspath(source)
        return _load_path(Path(source), name, limit, max_size, mode, draft_size)
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        if len(source) == 0:
            raise ImageDecodeError(name, "empty file (0 bytes)")
        return _decode_stream(io.BytesIO(source if isinstance(source, bytes) else bytes(source)), name, limit, max_size, mode, draft_size)
    if isinstance(source, Image.Image):
        name = name or getattr(source, "filename", None) or "<PIL image>"
        return _decode_opened(source, name, limit, max_size, mode, own=False)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(source, torch.Tensor):
        name = name or "<tensor>"
        return _finish(_image_from_array(_tensor_to_hwc(torch, source, name), name, limit), max_size, mode, None)
    if isinstance(source, np.ndarray):
        name = name or "<array>"
        return _finish(_image_from_array(source, name, limit), max_size, mode, None)
    raise TypeError(f"cannot load an image from {type(source).__name__}: expected a path, URL, bytes, PIL image, numpy array or tensor")


def is_url(source: Any) -> bool:
    """Whether ``source`` is an ``http://`` or ``https://`` URL string (what :func:`load_image` fetches)."""
    return isinstance(source, str) and source[:8].lower().startswith(("http://", "https://"))


def fetch_url(url: str, *, name: str | None = None, timeout: float | None = None, max_bytes: int | None = None) -> bytes:
    """The bytes at ``url`` (http/https), read with a timeout and at most ``max_bytes``; every failure is an
    :class:`ImageDecodeError` naming the URL (HTTP status, network error, too large, empty)."""
    import urllib.error
    import urllib.request

    name = name or url
    timeout = float(os.environ.get(URL_TIMEOUT_ENV, _DEFAULT_URL_TIMEOUT)) if timeout is None else timeout
    max_bytes = int(os.environ.get(URL_MAX_BYTES_ENV, _DEFAULT_URL_MAX_BYTES)) if max_bytes is None else max_bytes
    request = urllib.request.Request(url, headers={"User-Agent": "hf_fer"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ImageDecodeError(name, f"download too large ({int(declared)} bytes; limit {max_bytes}, {URL_MAX_BYTES_ENV})")
            data = response.read(max_bytes + 1)
    except ImageDecodeError:
        raise
    except urllib.error.HTTPError as error:
        raise ImageDecodeError(name, f"cannot fetch the URL (HTTP {error.code} {error.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ImageDecodeError(name, f"cannot fetch the URL ({reason})") from None
    if len(data) > max_bytes:
        raise ImageDecodeError(name, f"download too large (over {max_bytes} bytes, {URL_MAX_BYTES_ENV})")
    if not data:
        raise ImageDecodeError(name, "empty download (0 bytes)")
    return data


# ---------------------------------------------------------------------------------------------------------
def _load_path(path: Path, name: str, limit, max_size, mode, draft_size=None) -> Image.Image:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ImageDecodeError(name, "no such file") from None
    except OSError as error:
        raise ImageDecodeError(name, f"cannot access the file ({error.strerror or error})") from None
    if path.is_dir():
        raise ImageDecodeError(name, "is a folder, not an image file")
    if stat.st_size == 0:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ImageDecodeError(name, f"cannot read the file ({error.strerror or error})") from None
    with handle:
        return _decode_stream(handle, name, limit, max_size, mode, draft_size)


def _decode_stream(handle, name: str, limit, max_size, mode, draft_size=None) -> Image.Image:
    image = _open_header(handle, name)
    with image:
        return _decode_opened(image, name, limit, max_size, mode, own=True, draft_size=draft_size)


def _open_header(handle, name: str) -> Image.Image:
    """``Image.open`` (reads the header only) with every failure mapped to :class:`ImageDecodeError`."""
    try:
        with warnings.catch_warnings():  # PIL's "could be decompression bomb" warning: our own limit decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(handle)
    except UnidentifiedImageError:
        handle.seek(0)
        start = handle.read(12)
        raise ImageDecodeError(name, f"cannot decode image: not an image (unrecognised format; the data starts with {start!r})") from None
    except Image.DecompressionBombError:
        # PIL's own limit (~179 Mpx) fired while reading the header; ours decides, with the actual size.
        handle.seek(0)
        with _PIL_GLOBALS_LOCK:
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return _open_header(handle, name)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except Exception as error:  # corrupt header: OSError, SyntaxError, struct.error, EOFError...
        raise ImageDecodeError(name, f"cannot decode image: corrupt header ({type(error).__name__}: {error})") from None


def _check_pixels(size: tuple[int, int], limit: int | None, name: str, what: str = "") -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageDecodeError(name, f"invalid image size {width}x{height}")
    if limit is not None and width * height > limit:
        raise ImageDecodeError(
            name,
            f"too many pixels: {width}x{height}{what} = {width * height:,} > limit {limit:,} "
            f"(raise it with max_pixels= or {MAX_PIXELS_ENV})",
        )


@contextmanager
def _truncated_images_are_errors():
    """Make sure ``LOAD_TRUNCATED_IMAGES`` is off while decoding (only touches the global if someone set it)."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _PIL_GLOBALS_LOCK:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _decode_opened(image: Image.Image, name: str, limit, max_size, mode: str, own: bool,
                   draft_size: int | None = None) -> Image.Image:
    header_size = image.size
    _check_pixels(header_size, None, name)
    target = max(v for v in (max_size, draft_size) if v is not None) if (max_size or draft_size) else None
    if own and target is not None and image.format == "JPEG" and max(header_size) > target:
        scale = target / max(header_size)
        shrink = round if target == draft_size else int  # draft_size: the long side never ends below it
        try:  # DCT scaling by 1/2, 1/4 or 1/8, never below the requested size
            image.draft(None, (max(1, shrink(header_size[0] * scale)), max(1, shrink(header_size[1] * scale))))
        except Exception:  # draft is an optimisation only
            pass
    what = f" (decoded at 1/{header_size[0] // image.size[0]} of {header_size[0]}x{header_size[1]})" if image.size != header_size else ""
    _check_pixels(image.size, limit, name, what)
    try:
        with _truncated_images_are_errors():
            image.load()  # the current frame: the first one for a freshly opened animation
    except Image.DecompressionBombError as error:  # e.g. a GIF frame larger than its header says
        raise ImageDecodeError(name, f"too many pixels ({error})") from None
    except MemoryError:
        raise ImageDecodeError(name, f"not enough memory to decode {image.size[0]}x{image.size[1]} pixels") from None
    except Exception as error:
        message = str(error)
        kind = "truncated file" if "truncated" in message.lower() or isinstance(error, EOFError) else "corrupt image data"
        raise ImageDecodeError(name, f"cannot decode image: {kind} ({type(error).__name__}: {message})") from None
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG)
    except Exception:  # unreadable EXIF: keep the pixels as stored
        orientation = None
    return _finish(_to_8bit(image, name), max_size, mode, orientation)


def _to_8bit(image: Image.Image, name: str) -> Image.Image:
    """Any PIL mode → one of L, LA, RGB, RGBA with the right values (see the module docstring)."""
    mode = image.mode
    if mode in ("RGB", "L", "LA", "RGBA"):
        if mode in ("RGB", "L") and image.has_transparency_data:  # colour-key transparency (tRNS)
            return image.convert("RGBA")
        return image
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):
        return image.convert("RGBA" if mode == "PA" or image.has_transparency_data else "RGB")
    if mode == "La":
        return image.convert("LA")
    if mode == "RGBa":
        return image.convert("RGBA")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode), "L")
    try:
        return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX...
    except Exception as error:
        raise ImageDecodeError(name, f"unsupported image mode {mode!r} ({error})") from None


def _scale_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth values → uint8, processed in row blocks so a large image needs little extra memory."""
    if mode == "F":
        finite = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
        unit = finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0)
        factor = 255.0 if unit else 1.0
        return np.clip(np.rint(finite * factor), 0, 255).astype(np.uint8)
    if mode == "I" and array.size and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.uint8)
    out = np.empty(array.shape, dtype=np.uint8)
    for row in range(0, array.shape[0], 512):
        block = np.clip(array[row:row + 512].astype(np.int64), 0, 65535)
        out[row:row + 512] = (block * 255 + 32767) // 65535  # round(v * 255 / 65535)
    return out


def _finish(image: Image.Image, max_size: int | None, mode: str, orientation) -> Image.Image:
    """Downscale (before compositing: fewer pixels to touch), composite alpha, convert, rotate."""
    if max_size is not None and max(image.size) > max_size:
        scale = max_size / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if image.mode in ("LA", "RGBA") and mode != "RGBA":
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if image.mode != mode:
        image = image.convert(mode)
    transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
    if transpose is not None:
        image = image.transpose(transpose)
    return image


def _tensor_to_hwc(torch, tensor, name: str) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim == 3:
        if tensor.shape[0] not in (1, 3, 4):
            raise ImageDecodeError(name, f"expected a CxHxW tensor with C in (1, 3, 4), got shape {tuple(tensor.shape)}")
        tensor = tensor.permute(1, 2, 0)
    elif tensor.ndim != 2:
        raise ImageDecodeError(name, f"expected a CxHxW or HxW tensor, got shape {tuple(tensor.shape)}")
    if tensor.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
        tensor = tensor.float()
    return tensor.contiguous().numpy()


def _image_from_array(array: np.ndarray, name: str, limit) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # CxHxW (torchvision's layout) where the layout cannot be HxWxC
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageDecodeError(name, f"expected an HxW or HxWxC array with C in (1, 3, 4), got shape {array.shape}")
    _check_pixels((array.shape[1], array.shape[0]), limit, name)
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = _scale_to_uint8(array, "I;16")
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageDecodeError(name, "float pixel values must be finite, got NaN or infinity")
        if array.min() < 0 or array.max() > 1:
            raise ImageDecodeError(name, f"float pixel values must lie in [0, 1], got {np.nanmin(array):g}..{np.nanmax(array):g}")
        array = np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ImageDecodeError(name, f"integer pixel values must lie in 0..255 for dtype {array.dtype}, got {array.min()}..{array.max()}")
        array = array.astype(np.uint8)
    else:
        raise ImageDecodeError(name, f"unsupported array dtype {array.dtype}")
    mode = "L" if array.ndim == 2 else ("RGB" if array.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(array), mode)

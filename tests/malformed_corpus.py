"""A generated corpus of malformed and unusual image files, each with the outcome every decode path must give.

``make_malformed_corpus(directory)`` writes the files and returns ``{file name: Expectation}``. Expected
pixels are computed independently of :mod:`hf_fer.image_io`: from the arrays the files were made of with
plain numpy arithmetic (16-bit scaling, alpha over white, CMYK → RGB), or with PIL's own
``ImageOps.exif_transpose`` for orientation. Everything is small or highly compressible, so generating
the whole corpus takes well under a second and a few MB.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["Expectation", "make_malformed_corpus", "png_bytes_from_rows", "HUGE_SIDE", "BOMB_SIDE"]

HUGE_SIDE = 30_000      # a real, complete 1-bit PNG of HUGE_SIDE² pixels (~110 KB on disk)
BOMB_SIDE = 100_000     # a 68-byte PNG whose header declares BOMB_SIDE² pixels


@dataclass
class Expectation:
    """What decoding a corpus file must give.

    ``error``: a lower-case substring of the :class:`~hf_fer.image_io.ImageDecodeError` reason, or ``None``
    when the file must decode. ``rgb``: the expected decoded ``HxWx3`` uint8 content (``None`` for errors),
    equal within ``atol`` (JPEG files are lossy; everything else is exact up to rounding).
    """

    description: str
    error: str | None = None
    rgb: np.ndarray | None = None
    atol: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _ihdr(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))


def png_bytes_from_rows(width: int, height: int, bit_depth: int, color_type: int, row: bytes) -> bytes:
    """A valid PNG whose every row is ``row`` (filter byte 0 added), compressed as a stream: cheap at any size."""
    compressor = zlib.compressobj(9)
    line = b"\x00" + row
    parts = [compressor.compress(line) for _ in range(height)]
    parts.append(compressor.flush())
    return b"\x89PNG\r\n\x1a\n" + _ihdr(width, height, bit_depth, color_type) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _bomb_header_png() -> bytes:
    """68 bytes: signature, IHDR declaring BOMB_SIDE² RGB pixels, a tiny IDAT, IEND. Decoding it would need 30 GB."""
    idat = zlib.compress(b"\x00" * 64)[:11]
    data = b"\x89PNG\r\n\x1a\n" + _ihdr(BOMB_SIDE, BOMB_SIDE, 8, 2) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    assert len(data) == 68, len(data)
    return data


def _quadrants(height: int, width: int) -> np.ndarray:
    """Four distinct flat colours in 8-pixel-aligned quadrants (survive JPEG nearly exactly) — shows any rotation."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w] = (220, 30, 30)
    image[:h, w:] = (30, 200, 40)
    image[h:, :w] = (40, 50, 210)
    image[h:, w:] = (235, 235, 40)
    return image


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def make_malformed_corpus(directory: str | Path) -> dict[str, Expectation]:
    """Write the corpus into ``directory`` and return the expectation of every file (keyed by file name)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, Expectation] = {}

    def write(name: str, data: bytes, expectation: Expectation) -> None:
        (directory / name).write_bytes(data)
        corpus[name] = expectation

    # --- files that must be refused, each with its own reason -----------------------------------------
    write("zero_byte.jpg", b"", Expectation("zero-byte file", error="empty file"))
    full_jpeg = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)), "JPEG", quality=90)
    write("truncated.jpg", full_jpeg[: len(full_jpeg) // 2], Expectation("JPEG cut in the middle of its scan data", error="truncated"))
    full_png = _encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)), "PNG")
    write("truncated.png", full_png[: len(full_png) // 2], Expectation("PNG cut in the middle of its IDAT chunk", error="truncated"))
    write("text.jpg", b"this is a text file that only pretends to be a JPEG\n", Expectation("text named .jpg", error="not an image"))
    write("bomb_header.png", _bomb_header_png(), Expectation(f"68-byte PNG header declaring {BOMB_SIDE}x{BOMB_SIDE}", error="too many pixels"))
    write("huge_30000.png", png_bytes_from_rows(HUGE_SIDE, HUGE_SIDE, 1, 0, b"\xff" * (HUGE_SIDE // 8)),
          Expectation(f"complete white 1-bit PNG of {HUGE_SIDE}x{HUGE_SIDE} (900 Mpx, over the default limit)", error="too many pixels"))

    # --- files that must decode to known pixels -------------------------------------------------------
    # CMYK JPEG (as Photoshop writes, Adobe marker): flat 16x16 blocks. Naive CMYK → RGB:
    # R = (255 - C) * (255 - K) / 255, likewise G from M and B from Y.
    cmyk = np.zeros((32, 32, 4), np.uint8)
    cmyk[:16, :16] = (0, 255, 255, 0)      # red
    cmyk[:16, 16:] = (200, 0, 100, 0)
    cmyk[16:, :16] = (0, 0, 0, 128)        # grey through K
    cmyk[16:, 16:] = (0, 0, 0, 0)          # white
    cmyk_rgb = np.rint((255.0 - cmyk[..., :3]) * (255.0 - cmyk[..., 3:4]) / 255.0).astype(np.uint8)
    write("cmyk.jpg", _encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100),
          Expectation("CMYK JPEG", rgb=cmyk_rgb, atol=6))

    # 16-bit grayscale PNG spanning the full range: scaled to 8 bits (round(v / 257)), not clipped to white.
    gray16 = (np.arange(40 * 40, dtype=np.uint32).reshape(40, 40) * 65535 // (40 * 40 - 1)).astype(np.uint16)
    expected16 = np.rint(gray16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    write("gray16.png", _encode(Image.fromarray(gray16), "PNG"), Expectation("16-bit grayscale PNG", rgb=np.repeat(expected16[..., None], 3, axis=2)))

    # Palette PNG with per-entry alpha (tRNS): colours composited over white: c * a / 255 + 255 * (1 - a / 255).
    palette_rgb = np.array([[255, 0, 0], [0, 0, 255], [0, 160, 0], [20, 20, 20]], np.uint8)
    palette_alpha = np.array([255, 0, 128, 64], np.uint8)
    indices = (np.arange(24)[:, None] // 6 + np.arange(24)[None, :] // 6) % 4
    paletted = Image.fromarray(indices.astype(np.uint8), "P")
    paletted.putpalette(palette_rgb.flatten().tolist())
    alpha = palette_alpha[indices].astype(np.float64)[..., None] / 255.0
    over_white = np.rint(palette_rgb[indices] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    write("palette_alpha.png", _encode(paletted, "PNG", transparency=bytes(palette_alpha.tolist())),
          Expectation("palette PNG with per-entry transparency", rgb=over_white, atol=1))

    # EXIF orientation 6 (rotate 90° clockwise to display): the expected image is PIL's own exif_transpose.
    stored = Image.fromarray(_quadrants(32, 48))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_bytes = _encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(rotated_bytes)) as reference:
        displayed = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"))
    assert displayed.shape == (48, 32, 3)
    write("exif_rotated.jpg", rotated_bytes, Expectation("JPEG with EXIF orientation 6 (stored 48x32, shown 32x48)", rgb=displayed, atol=0))

    # Animated GIF: three flat frames; the first frame is the image.
    frames = [Image.new("RGB", (20, 16), colour) for colour in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    write("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
          Expectation("animated GIF (3 frames)", rgb=np.full((16, 20, 3), (250, 10, 10), np.uint8)))

    write("one_pixel.png", _encode(Image.new("RGB", (1, 1), (12, 34, 56)), "PNG"),
          Expectation("1x1 image", rgb=np.array([[[12, 34, 56]]], np.uint8)))

    gray48 = ((np.arange(48)[:, None] * 5 + np.arange(48)[None, :] * 2) % 256).astype(np.uint8)
    write("gray48.png", _encode(Image.fromarray(gray48, "L"), "PNG"),
          Expectation("48x48 grayscale (FER2013-like)", rgb=np.repeat(gray48[..., None], 3, axis=2)))

    # Gray + alpha (LA) and RGBA: alpha composited over white as well.
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 0
    rgba[..., 3] = (np.arange(16)[None, :] * 17).astype(np.uint8)
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    write("rgba.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"),
          Expectation("RGBA PNG with an alpha ramp", rgb=np.rint(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8), atol=1))
    return corpus

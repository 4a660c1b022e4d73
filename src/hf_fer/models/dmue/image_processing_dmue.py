"""Image processor of DMUE: upstream's evaluation transform for already aligned faces.

Resize to 256x256 (bilinear), center-crop 224, rescale to [0, 1], normalise with mean 0.5 / std 0.5
(upstream inference.py and validation loader).
"""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging

logger = logging.get_logger(__name__)
_WARNED_WHOLE_PHOTOS: set[str] = set()

# Which face crop this model expects (the face pipeline reads it; saved in preprocessor_config.json). The default
# follows DMUE's AffectNet preprocessing (upstream crop_align.py): 98-landmark similarity alignment onto its own
# template (template.npy, unpublished here), then the MTCNN face box enlarged by 256/224 in each dimension and
# resized to 256x256. Approximation: the detector box enlarged by 256/224 (margin 1/14 on each side) resized to
# 256x256; the in-plane rotation normalisation of the 98-point step is not reproduced.
FACE_ALIGNMENT = {
    "method": "box",
    "margin": 0.0714,
    "square": False,
    "output_size": [256, 256],
    "source": "DMUE AffectNet preprocessing (crop_align.py): MTCNN box enlarged by 256/224, resized to 256x256; "
              "approximated by the detector box with a 1/14 margin per side (its 98-point template alignment is "
              "not reproduced)",
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


class DmueImageProcessorKwargs(ImagesKwargs, total=False):
    face_alignment: dict | None  # how to crop a face from a photo for this model (see FACE_ALIGNMENT)


class DmueImageProcessor(TorchvisionBackend):
    valid_kwargs = DmueImageProcessorKwargs
    face_alignment = FACE_ALIGNMENT
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 256, "width": 256}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True  # grayscale (FER2013 PNGs), RGBA and palette images become RGB instead of failing

    # Copied from hf_fer.models.arm.image_processing_arm.ArmImageProcessor.preprocess
    def preprocess(self, images, *args, **kwargs):
        _warn_if_whole_photos(self, images)
        return super().preprocess(images, *args, **kwargs)


__all__ = ["DmueImageProcessor", "DmueImageProcessorKwargs", "FACE_ALIGNMENT"]

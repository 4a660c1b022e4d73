"""VT-NR image processor: deliver 384×384 ImageNet-normalised RGB, nothing more.

The "neural resizer" of the paper is *not* here: it is learned, so it lives in the model
(``VtNrForImageClassification.resizer``) and trains with it. This processor only brings images to the
resolution the model's STN and resizer take as input (``config.image_size``, 384), rescales to [0, 1]
and normalises with the ImageNet statistics used upstream. No crop.

Upstream fed 384×384 faces made offline by x8 face super-resolution (DIC, HELEN weights) of the
48×48 FER+ images; such images pass through unchanged. Smaller images are upsampled here with bicubic
interpolation as a fallback: that works, but is not what the paper did and will not match its accuracy.
"""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging

logger = logging.get_logger(__name__)
_WARNED_WHOLE_PHOTOS: set[str] = set()

# Which face crop this model expects (the face pipeline reads it; saved in preprocessor_config.json). The default
# follows the training data: FER+ (FER2013 relabelled) 48x48 grayscale faces, cropped by the dataset makers around a
# detector box (tight, roughly square), then super-resolved x8 offline. Approximation: a square detector box, no
# margin, 48x48, which this processor then upsamples to 384 (bicubic fallback, see above).
FACE_ALIGNMENT = {
    "method": "box",
    "margin": 0.0,
    "square": True,
    "output_size": [48, 48],
    "source": "FER2013 / FER+ 48x48 face crops from a box detector (face centred, about the same size); "
              "approximated by a square detector box without margin at 48x48",
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


class VtNrImageProcessorKwargs(ImagesKwargs, total=False):
    face_alignment: dict | None  # how to crop a face from a photo for this model (see FACE_ALIGNMENT)


class VtNrImageProcessor(TorchvisionBackend):
    r"""Resize to 384×384 (bicubic, only if needed), convert to RGB, rescale 1/255, ImageNet mean/std.

    The output ``pixel_values [B, 3, 384, 384]`` is the input of the model's STN; the model's learned
    Neural Resizer then makes the backbone's 224×224 itself. For a model built with another
    ``image_size``, pass ``size={"height": s, "width": s}``.
    """

    valid_kwargs = VtNrImageProcessorKwargs
    face_alignment = FACE_ALIGNMENT
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 384, "width": 384}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    # Copied from hf_fer.models.arm.image_processing_arm.ArmImageProcessor.preprocess
    def preprocess(self, images, *args, **kwargs):
        _warn_if_whole_photos(self, images)
        return super().preprocess(images, *args, **kwargs)


__all__ = ["VtNrImageProcessor", "VtNrImageProcessorKwargs", "FACE_ALIGNMENT"]

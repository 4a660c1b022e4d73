"""ARM eval preprocessing (upstream ``test_raf-db.py``): resize both sides to 224 (bilinear), ImageNet mean/std.

No crop: RAF-DB aligned faces (100×100) are stretched to the full input size. Training augmentations (flip or
Gaussian noise, random erasing) belong to the training pipeline, not here.
"""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging

logger = logging.get_logger(__name__)
_WARNED_WHOLE_PHOTOS: set[str] = set()

# Which face crop this model expects (the face pipeline reads it; saved in preprocessor_config.json). The default
# follows the training data: RAF-DB "aligned" 100x100 faces, made by the dataset authors with a similarity transform
# from 5 manual landmarks. Their template is unpublished: approximated by the ArcFace 112x112 template
# (insightface arcface_src) scaled to 100 px. Checkpoints trained on other data carry their own setting.
FACE_ALIGNMENT = {
    "method": "similarity_5pt",
    "template": [[34.1916, 46.1574], [65.6534, 45.9834], [50.0225, 64.0505], [37.0976, 82.4692], [63.1517, 82.3251]],
    "output_size": [100, 100],
    "source": "RAF-DB aligned 100x100 faces (similarity transform from 5 manual landmarks, made by the dataset "
              "authors); their template is unpublished - approximated by the ArcFace 112x112 template scaled to "
              "100 px",
}


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


class ArmImageProcessorKwargs(ImagesKwargs, total=False):
    face_alignment: dict | None  # how to crop a face from a photo for this model (see FACE_ALIGNMENT)


class ArmImageProcessor(TorchvisionBackend):
    valid_kwargs = ArmImageProcessorKwargs
    face_alignment = FACE_ALIGNMENT
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True  # grayscale (FER2013 PNGs), RGBA and palette images become RGB instead of failing

    def preprocess(self, images, *args, **kwargs):
        _warn_if_whole_photos(self, images)
        return super().preprocess(images, *args, **kwargs)


__all__ = ["ArmImageProcessor", "ArmImageProcessorKwargs", "FACE_ALIGNMENT"]

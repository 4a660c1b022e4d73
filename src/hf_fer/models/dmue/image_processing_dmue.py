"""Image processor of DMUE: upstream's evaluation transform for already aligned faces.

Resize to 256x256 (bilinear), center-crop 224, rescale to [0, 1], normalise with mean 0.5 / std 0.5
(upstream inference.py and validation loader).
"""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

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


__all__ = ["DmueImageProcessor", "DmueImageProcessorKwargs", "FACE_ALIGNMENT"]

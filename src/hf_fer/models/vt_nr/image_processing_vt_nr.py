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


__all__ = ["VtNrImageProcessor", "VtNrImageProcessorKwargs", "FACE_ALIGNMENT"]

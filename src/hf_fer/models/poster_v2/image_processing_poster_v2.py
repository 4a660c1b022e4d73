"""Image processor of POSTER V2: upstream's evaluation preprocessing."""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs

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


class PosterV2ImageProcessorKwargs(ImagesKwargs, total=False):
    face_alignment: dict | None  # how to crop a face from a photo for this model (see FACE_ALIGNMENT)


class PosterV2ImageProcessor(TorchvisionBackend):
    """Resize to exactly 224x224 (aspect ratio not kept, bilinear), scale to [0, 1], ImageNet mean/std.

    Upstream evaluates aligned face crops this way, with no centre crop. The model's own 112x112 nearest
    subsampling is part of the model, not of this processor. Upstream resizes with PIL (antialiased
    bilinear); this torchvision backend resizes with antialiased bilinear interpolation on tensors, which
    agrees with PIL up to small rounding differences.
    """

    valid_kwargs = PosterV2ImageProcessorKwargs
    face_alignment = FACE_ALIGNMENT
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True  # grayscale (FER2013 PNGs), RGBA and palette images become RGB instead of failing


__all__ = ["PosterV2ImageProcessor", "PosterV2ImageProcessorKwargs", "FACE_ALIGNMENT"]

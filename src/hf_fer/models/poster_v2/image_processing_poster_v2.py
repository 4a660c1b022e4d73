"""Image processor of POSTER V2: upstream's evaluation preprocessing."""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


class PosterV2ImageProcessor(TorchvisionBackend):
    """Resize to exactly 224x224 (aspect ratio not kept, bilinear), scale to [0, 1], ImageNet mean/std.

    Upstream evaluates aligned face crops this way, with no centre crop. The model's own 112x112 nearest
    subsampling is part of the model, not of this processor. Upstream resizes with PIL (antialiased
    bilinear); this torchvision backend resizes with antialiased bilinear interpolation on tensors, which
    agrees with PIL up to small rounding differences.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True


__all__ = ["PosterV2ImageProcessor"]

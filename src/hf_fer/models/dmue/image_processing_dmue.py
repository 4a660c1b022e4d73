"""Image processor of DMUE: upstream's evaluation transform for already aligned faces.

Resize to 256x256 (bilinear), center-crop 224, rescale to [0, 1], normalise with mean 0.5 / std 0.5
(upstream inference.py and validation loader).
"""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling


class DmueImageProcessor(TorchvisionBackend):
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 256, "width": 256}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True


__all__ = ["DmueImageProcessor"]

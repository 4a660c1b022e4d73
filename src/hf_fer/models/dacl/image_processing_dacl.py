"""DACL eval preprocessing (upstream ``main.py``): Resize(256) on the shorter side, CenterCrop(224), dataset mean/std.

The mean/std are upstream's own statistics (not ImageNet's). Training uses a random five-crop and a flip
instead of the centre crop; those belong to the training pipeline.
"""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling

DACL_MEAN = [0.5752, 0.4495, 0.4012]
DACL_STD = [0.2086, 0.1911, 0.1827]


class DaclImageProcessor(TorchvisionBackend):
    resample = PILImageResampling.BILINEAR
    image_mean = DACL_MEAN
    image_std = DACL_STD
    size = {"shortest_edge": 256}
    do_resize = True
    do_center_crop = True
    crop_size = {"height": 224, "width": 224}
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True


__all__ = ["DaclImageProcessor"]

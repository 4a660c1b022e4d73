"""ARM eval preprocessing (upstream ``test_raf-db.py``): resize both sides to 224 (bilinear), ImageNet mean/std.

No crop: RAF-DB aligned faces (100×100) are stretched to the full input size. Training augmentations (flip or
Gaussian noise, random erasing) belong to the training pipeline, not here.
"""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


class ArmImageProcessor(TorchvisionBackend):
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True


__all__ = ["ArmImageProcessor"]

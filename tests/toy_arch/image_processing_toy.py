from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling


class ToyImageProcessor(TorchvisionBackend):
    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 32, "width": 32}
    do_resize = True
    do_rescale = True
    do_normalize = True

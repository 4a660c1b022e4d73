"""DACL eval preprocessing (upstream ``main.py``): Resize(256) on the shorter side, CenterCrop(224), dataset mean/std.

The mean/std are upstream's own statistics (not ImageNet's). Training uses a random five-crop and a flip
instead of the centre crop; those belong to the training pipeline.
"""
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

DACL_MEAN = [0.5752, 0.4495, 0.4012]
DACL_STD = [0.2086, 0.1911, 0.1827]

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


class DaclImageProcessorKwargs(ImagesKwargs, total=False):
    face_alignment: dict | None  # how to crop a face from a photo for this model (see FACE_ALIGNMENT)


class DaclImageProcessor(TorchvisionBackend):
    valid_kwargs = DaclImageProcessorKwargs
    face_alignment = FACE_ALIGNMENT
    resample = PILImageResampling.BILINEAR
    image_mean = DACL_MEAN
    image_std = DACL_STD
    size = {"shortest_edge": 256}
    default_to_square = False  # an int `size` is the shorter side, like the default above and torchvision's Resize(int)
    do_resize = True
    do_center_crop = True
    crop_size = {"height": 224, "width": 224}
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True  # grayscale (FER2013 PNGs), RGBA and palette images become RGB instead of failing


__all__ = ["DaclImageProcessor", "DaclImageProcessorKwargs", "FACE_ALIGNMENT"]

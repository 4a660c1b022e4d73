"""The training transform resizes with the image processor's own geometry: size rule, resample filter, centre crop.

Reference outputs come from the eval path (the processor called on the image) and from hand-computed
nearest-neighbour indexing, never from the training transform itself.
"""
import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_utils import PILImageResampling

from hf_fer.models import ARCHITECTURES
from hf_fer.training.data import build_train_transform


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth gradient with high-frequency noise on top: bilinear, bicubic and nearest give different pixels."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([x, y, (x + y) / 2]) * 200
    noise = torch.randint(0, 56, (3, height, width), generator=generator)
    array = (base + noise).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


@pytest.mark.parametrize("arch", ["vt_nr", "dacl", "dmue", "arm"])
def test_train_transform_without_augmentation_is_the_eval_preprocessing(arch):
    # VT-NR resizes bicubic; DACL resizes the shorter side then centre-crops; DMUE resizes then centre-crops
    processor = ARCHITECTURES[arch].image_processor_class()
    image = _photo(157, 203)
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    got = build_train_transform(processor, [])(image)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_vt_nr_train_resize_is_bicubic_like_its_processor():
    processor = ARCHITECTURES["vt_nr"].image_processor_class()
    assert processor.resample == PILImageResampling.BICUBIC
    image = _photo(96, 96, seed=1)
    got = build_train_transform(processor, [])(image)
    mean, std = torch.tensor(processor.image_mean)[:, None, None], torch.tensor(processor.image_std)[:, None, None]
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    from torchvision.transforms.v2 import functional as F

    for mode, should_match in ((F.InterpolationMode.BICUBIC, True), (F.InterpolationMode.BILINEAR, False)):
        resized = F.resize(pixels, [384, 384], interpolation=mode, antialias=True)
        reference = (resized.float() / 255 - mean) / std
        assert torch.allclose(got, reference, atol=1e-5) is should_match, mode


def test_a_processor_saved_with_nearest_gives_a_nearest_neighbour_train_resize():
    processor = ARCHITECTURES["arm"].image_processor_class(resample=PILImageResampling.NEAREST, size={"height": 112, "width": 112})
    image = _photo(224, 224, seed=2)
    got = build_train_transform(processor, [])(image)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    # exact halving: nearest neighbour with pixel centres (PIL's NEAREST: source = floor((i + 0.5) * 2) = 2i + 1)
    # keeps every second pixel, no averaging
    expected = pixels[:, 1::2, 1::2].float() / 255
    assert torch.equal(pixels[:, 1::2, 1::2], torch.from_numpy(np.array(image.resize((112, 112), Image.NEAREST))).permute(2, 0, 1))
    mean, std = torch.tensor(processor.image_mean)[:, None, None], torch.tensor(processor.image_std)[:, None, None]
    torch.testing.assert_close(got, (expected - mean) / std, atol=1e-5, rtol=0)


def test_recipe_crop_replaces_the_processor_centre_crop():
    processor = ARCHITECTURES["dacl"].image_processor_class()  # shorter side 256, centre crop 224
    image = _photo(300, 256, seed=3)
    got = build_train_transform(processor, [{"name": "RandomCrop", "size": 200}])(image)
    assert got.shape == (3, 200, 200)
    assert build_train_transform(processor, [])(image).shape == (3, 224, 224)

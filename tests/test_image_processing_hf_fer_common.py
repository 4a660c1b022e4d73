"""transformers' common image-processor tests (ImageProcessingTestMixin, vendored) on every hf_fer processor."""
from __future__ import annotations

import unittest

from hf_fer.models import ARCHITECTURES

from transformers_common.test_image_processing_common import ImageProcessingTester, ImageProcessingTestMixin

# Small sizes keep the mixin fast; DACL keeps its own geometry (shorter side, then a centre crop).
PROCESSOR_KWARGS = {
    "arm": dict(size={"height": 20, "width": 20}),
    "dacl": dict(size={"shortest_edge": 22}, crop_size={"height": 18, "width": 18}),
    "dmue": dict(size={"height": 22, "width": 22}, crop_size={"height": 18, "width": 18}),
    "poster_v2": dict(size={"height": 20, "width": 20}),
    "vt_nr": dict(size={"height": 20, "width": 20}),
    "mini_xception": dict(size={"height": 20, "width": 20}),
}


def _tester_class(arch: str):
    processor_class = ARCHITECTURES[arch].image_processor_class
    defaults = processor_class()

    class Tester(ImageProcessingTester):
        def __init__(self, parent, **kwargs):
            values = {"do_resize": True, "do_normalize": True, "image_mean": list(defaults.image_mean),
                      "image_std": list(defaults.image_std), **PROCESSOR_KWARGS[arch]}
            if getattr(defaults, "do_center_crop", False) and "crop_size" in values:
                values["do_center_crop"] = True
            super().__init__(parent, batch_size=3, min_resolution=24, max_resolution=60, **{**values, **kwargs})

        def _get_image_processing_classes(self):
            # transformers finds in-tree processors from the test file's folder name; ours are registered by hf_fer.
            return {"torchvision": processor_class}

        def expected_output_image_shape(self, images):
            channels, height, width = super().expected_output_image_shape(images)
            # mini-Xception converts to grayscale: one output channel whatever the input has
            return (1 if arch == "mini_xception" else channels), height, width

    return Tester


def _test_case(arch: str):
    return type(f"{ARCHITECTURES[arch].class_prefix}ImageProcessingTest", (ImageProcessingTestMixin, unittest.TestCase),
                {"image_processor_tester_class": _tester_class(arch), "__module__": __name__})


ArmImageProcessingTest = _test_case("arm")
DaclImageProcessingTest = _test_case("dacl")
DmueImageProcessingTest = _test_case("dmue")
PosterV2ImageProcessingTest = _test_case("poster_v2")
VtNrImageProcessingTest = _test_case("vt_nr")


class MiniXceptionImageProcessingTest(_test_case("mini_xception")):
    @unittest.skip(reason="mini-Xception's processor converts RGB (or grayscale) to one luminance channel; a 4-channel "
                          "image has no defined grayscale conversion and is refused with a clear error")
    def test_call_numpy_4_channels(self):
        pass


def test_every_processor_takes_grayscale_rgba_and_palette_images():
    """FER2013/FER+ datasets hold mode-"L" images: every processor turns L/LA/RGBA/P PIL images into RGB first
    (four of them used to fail with a broadcast error). A gray image gives what its RGB copy gives."""
    import numpy as np
    import pytest
    from PIL import Image

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8))
    for arch in ARCHITECTURES:
        processor = ARCHITECTURES[arch].image_processor_class(**PROCESSOR_KWARGS[arch])
        gray = processor(photo.convert("L"), return_tensors="pt").pixel_values
        reference = processor(photo.convert("L").convert("RGB"), return_tensors="pt").pixel_values
        assert gray.shape == reference.shape and bool((gray == reference).all()), arch
        for mode in ("LA", "RGBA", "P"):
            expected = processor(photo.convert(mode).convert("RGB"), return_tensors="pt").pixel_values
            got = processor(photo.convert(mode), return_tensors="pt").pixel_values
            assert got.shape == expected.shape and got.numpy() == pytest.approx(expected.numpy()), (arch, mode)

"""transformers' common model/config tests on a tiny DMUE (see common_model_test.py)."""
import unittest

from common_model_test import HfFerModelTest


class DmueModelTest(HfFerModelTest, unittest.TestCase):
    arch = "dmue"

    @unittest.skip(reason="DMUE's trunk is torchvision's ResNet, whose stage widths (64-512) are fixed: a ResNet-18 with one "
                          "block per stage is already ~5M parameters, above the mixin's 1M limit")
    def test_model_is_small(self):
        pass

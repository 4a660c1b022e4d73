"""transformers' common model/config tests on a tiny DACL (see common_model_test.py)."""
import unittest

from common_model_test import HfFerModelTest


class DaclModelTest(HfFerModelTest, unittest.TestCase):
    arch = "dacl"

    @unittest.skip(reason="DACL's trunk is torchvision's ResNet, whose stage widths (64-512) are fixed: a ResNet-18 with one "
                          "block per stage is already ~5M parameters, above the mixin's 1M limit")
    def test_model_is_small(self):
        pass

    @unittest.skip(reason="DACL's class centers are a buffer (moved by upstream's own update rule, not the optimizer) that "
                          "_init_weights draws at random like upstream's centers, N(0, 2/num_labels); the mixin expects "
                          "every buffer to be deterministic")
    def test_init_weights_can_init_buffers(self):
        pass

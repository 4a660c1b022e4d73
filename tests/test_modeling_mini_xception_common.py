"""transformers' common model/config tests on a tiny mini-Xception (see common_model_test.py)."""
import unittest

from common_model_test import HfFerModelTest


class MiniXceptionModelTest(HfFerModelTest, unittest.TestCase):
    arch = "mini_xception"

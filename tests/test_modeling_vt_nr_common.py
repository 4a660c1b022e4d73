"""transformers' common model/config tests on a tiny VT-NR (see common_model_test.py)."""
import unittest

from common_model_test import HfFerModelTest


class VtNrModelTest(HfFerModelTest, unittest.TestCase):
    arch = "vt_nr"
    # VT-NR's attentions are its transformers backbone's (Swin here), whose own common tests check them (window
    # attention shapes differ from the ViT layout the mixin's test_attention_outputs expects).
    has_attentions = False

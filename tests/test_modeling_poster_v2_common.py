"""transformers' common model/config tests on a tiny POSTER V2 (see common_model_test.py)."""
import unittest

from common_model_test import HfFerModelTest, HfFerModelTester


class PosterV2ModelTester(HfFerModelTester):
    """Token layout for the mixin's attention tests: a class token + 3 scales of 7x7 tokens, ViT-style."""

    def __init__(self, parent, **kwargs):
        super().__init__(parent, "poster_v2", **kwargs)
        config = self.get_config()
        self.num_attention_heads = config.num_attention_heads
        self.num_hidden_layers = config.num_hidden_layers
        self.hidden_size = config.hidden_size
        self.seq_length = 1 + 3 * config.num_patches_per_scale


class PosterV2ModelTest(HfFerModelTest, unittest.TestCase):
    arch = "poster_v2"
    has_attentions = True

    def setUp(self):
        super().setUp()
        self.model_tester = PosterV2ModelTester(self)

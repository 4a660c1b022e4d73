"""A transformers-style ModelTester + ModelTesterMixin + ConfigTester base for hf_fer's architectures.

Mirrors transformers' tests/models/resnet/test_modeling_resnet.py and tests/models/vit/test_modeling_vit.py:
each tests/test_modeling_<arch>_common.py subclasses :class:`HfFerModelTest` with a tiny config. The mixin
finds base and classification models through transformers' static name tables (in-tree models are listed
there); ours are added to those tables for the duration of the test class only.
"""
from __future__ import annotations

import unittest
from unittest import mock

import torch
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, MODEL_MAPPING_NAMES
from transformers.testing_utils import torch_device

import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.models import ARCHITECTURES

from tiny_models import input_shape, tiny_config
from transformers_common.test_configuration_common import ConfigTester
from transformers_common.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor


class HfFerModelTester:
    def __init__(self, parent, arch: str, batch_size: int = 2, num_labels: int = 3, is_training: bool = True, **config_overrides):
        self.parent, self.arch = parent, arch
        self.batch_size, self.num_labels, self.is_training = batch_size, num_labels, is_training
        self.config_overrides = config_overrides
        _, self.num_channels, self.image_size, _ = input_shape(arch, batch_size)

    def get_config(self):
        return tiny_config(self.arch, num_labels=self.num_labels, **self.config_overrides)

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}

    def create_and_check_model(self, config, pixel_values, labels):
        model = ARCHITECTURES[self.arch].base_model_class(config).to(torch_device).eval()
        with torch.no_grad():
            result = model(pixel_values)
        self.parent.assertEqual(result.pooler_output.shape[0], self.batch_size)
        self.parent.assertEqual(result.last_hidden_state.shape[0], self.batch_size)

    def create_and_check_for_image_classification(self, config, pixel_values, labels):
        model = ARCHITECTURES[self.arch].model_class(config).to(torch_device).eval()
        with torch.no_grad():
            result = model(pixel_values, labels=labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))
        self.parent.assertTrue(torch.isfinite(result.loss))


class HfFerModelTest(ModelTesterMixin):
    """Subclasses set ``arch`` (and tester overrides) and mix in ``unittest.TestCase``."""

    arch: str = ""
    tester_kwargs: dict = {}
    # As transformers' ResNet test: vision models without token embeddings.
    test_resize_embeddings = False
    has_attentions = False
    test_torch_exportable = False  # tests/exporters is not in transformers' sdist; hf_fer tests export in test_export.py

    @classmethod
    def setUpClass(cls):
        spec = ARCHITECTURES[cls.arch]
        cls.all_model_classes = (spec.base_model_class, spec.model_class)
        cls._name_tables = mock.patch.dict(MODEL_MAPPING_NAMES, {cls.arch: spec.base_model_class.__name__})
        cls._head_tables = mock.patch.dict(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, {cls.arch: spec.model_class.__name__})
        cls._name_tables.start()
        cls._head_tables.start()

    @classmethod
    def tearDownClass(cls):
        cls._head_tables.stop()
        cls._name_tables.stop()

    def setUp(self):
        self.model_tester = HfFerModelTester(self, self.arch, **self.tester_kwargs)
        self.config_tester = ConfigTester(self, config_class=ARCHITECTURES[self.arch].config_class, has_text_modality=False)

    def test_config(self):
        # As transformers' ResNet test: every common config check except the text-model properties
        # (hidden_size / num_attention_heads / num_hidden_layers), which vision configs need not have.
        self.config_tester.create_and_test_config_to_json_string()
        self.config_tester.create_and_test_config_to_json_file()
        self.config_tester.create_and_test_config_from_and_save_pretrained()
        self.config_tester.create_and_test_config_from_and_save_pretrained_subfolder()
        self.config_tester.create_and_test_config_from_and_save_pretrained_composite()
        self.config_tester.create_and_test_config_with_num_labels()
        self.config_tester.check_config_arguments_init()
        self.config_tester.create_and_test_config_from_pretrained_custom_kwargs()
        self.config_tester.check_config_can_be_init_without_params()

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def test_for_image_classification(self):
        self.model_tester.create_and_check_for_image_classification(*self.model_tester.prepare_config_and_inputs())

    @unittest.skip(reason="hf_fer models do not use inputs_embeds (as transformers' ResNet/ViT)")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="hf_fer models do not use inputs_embeds (as transformers' ResNet/ViT)")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    @unittest.skip(reason="hf_fer models have no input and output embeddings (as transformers' ResNet)")
    def test_model_get_set_embeddings(self):
        pass

    def test_hidden_states_output(self):
        """As transformers' ResNet test: one hidden state per stage, batch first (maps or tokens)."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            for from_config in (False, True):
                model = model_class(config).to(torch_device).eval()
                with torch.no_grad():
                    if from_config:
                        model.config.output_hidden_states = True
                        outputs = model(**inputs_dict)
                    else:
                        outputs = model(**inputs_dict, output_hidden_states=True)
                hidden_states = outputs.hidden_states
                self.assertIsNotNone(hidden_states)
                self.assertGreaterEqual(len(hidden_states), 2)
                for state in hidden_states:
                    self.assertEqual(state.shape[0], self.model_tester.batch_size)
            fresh_config, _ = self.model_tester.prepare_config_and_inputs_for_common()
            with torch.no_grad():
                self.assertIsNone(model_class(fresh_config).eval()(**inputs_dict).hidden_states)

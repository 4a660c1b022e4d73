"""Regression tests for the model bugs of issue 16 (each failed before its fix)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, pipeline

import hf_fer
from hf_fer.converters.convert_vt_nr_original import label_prior_for
from hf_fer.models.vt_nr import VtNrForImageClassification
from hf_fer.models.vt_nr.configuration_vt_nr import FERPLUS_LABEL_PRIOR

from test_vt_nr import tiny_model as tiny_vt_nr


def _train_step(model, num_labels: int, image_size: int = 64) -> torch.Tensor:
    model.train()
    out = model(pixel_values=torch.randn(2, 3, image_size, image_size), labels=torch.tensor([1, num_labels - 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    return out.loss


# 1. VT-NR: a checkpoint re-headed for another label space must not keep the FER+ 8x8 prior.
def test_vt_nr_reheaded_with_num_labels_loads_and_trains(tmp_path):
    tiny_vt_nr().save_pretrained(tmp_path)
    model = VtNrForImageClassification.from_pretrained(tmp_path, num_labels=7, ignore_mismatched_sizes=True)
    assert model.config.num_labels == 7 and model.head.classifier.out_features == 7
    assert model.config.label_prior_matrix is None  # generic names: no prior known
    with pytest.warns(UserWarning, match="uniform"):
        _train_step(model, 7)
    model.save_pretrained(tmp_path / "again")  # the saved config is consistent and reloads
    assert VtNrForImageClassification.from_pretrained(tmp_path / "again").config.num_labels == 7


def test_vt_nr_reheaded_with_named_labels_gets_the_fer_plus_prior_in_their_order(tmp_path):
    tiny_vt_nr().save_pretrained(tmp_path)
    id2label = hf_fer.labels.id2label("raf-db")
    model = VtNrForImageClassification.from_pretrained(tmp_path, id2label=id2label, ignore_mismatched_sizes=True)
    assert model.config.num_labels == 7
    np.testing.assert_allclose(model.config.label_prior_matrix, label_prior_for("raf-db"), rtol=1e-6)
    _train_step(model, 7)
    model.save_pretrained(tmp_path / "again")
    reloaded = VtNrForImageClassification.from_pretrained(tmp_path / "again")
    np.testing.assert_allclose(reloaded.config.label_prior_matrix, label_prior_for("raf-db"), rtol=1e-6)
    # the original FER+ label space still gets the FER+ prior
    assert VtNrForImageClassification.from_pretrained(tmp_path).config.label_prior_matrix == [list(r) for r in FERPLUS_LABEL_PRIOR]

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


# 2. DACL: the tuple output is the output object's to_tuple(), loss terms included.
def test_dacl_tuple_output_is_to_tuple_with_loss_terms():
    from test_dacl import tiny_config as dacl_config
    from hf_fer.models.dacl import DaclForImageClassification

    torch.manual_seed(0)
    model = DaclForImageClassification(dacl_config(center_lr=0.0)).eval()
    pixel_values, labels = torch.randn(3, 3, 64, 64), torch.tensor([0, 2, 1])
    as_object = model(pixel_values, labels=labels, output_hidden_states=True)
    as_tuple = model(pixel_values, labels=labels, output_hidden_states=True, return_dict=False)
    expected = as_object.to_tuple()
    assert len(as_tuple) == len(expected) == 7  # loss, logits, hidden_states, features, attention, CE, center loss
    for got, want in zip(as_tuple, expected):
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            torch.testing.assert_close(g, w)
    torch.testing.assert_close(as_tuple[5], as_object.classification_loss)
    torch.testing.assert_close(as_tuple[6], as_object.center_loss)


# 3. DACL, DMUE and VT-NR honour config.problem_type like transformers' own classifiers.
def _problem_type_models():
    from test_dacl import tiny_config as dacl_config
    from hf_fer.models.dacl import DaclForImageClassification
    from hf_fer.models.dmue import DmueConfig, DmueForImageClassification

    def dacl(**kw):
        return DaclForImageClassification(dacl_config(**kw)), 64

    def dmue(**kw):
        return DmueForImageClassification(DmueConfig(backbone_depths=[1, 1, 1, 1], **kw)), 64

    def vt_nr(**kw):
        from test_vt_nr import tiny_config as vt_nr_config

        return VtNrForImageClassification(vt_nr_config(**kw)), 64

    return {"dacl": dacl, "dmue": dmue, "vt_nr": vt_nr}


@pytest.mark.parametrize("arch", ["dacl", "dmue", "vt_nr"])
def test_problem_type_multi_label_and_regression(arch):
    build = _problem_type_models()[arch]
    torch.manual_seed(0)
    pixel_values = torch.randn(3, 3, 64, 64)
    model, _ = build(num_labels=4, problem_type="multi_label_classification")
    model.eval()
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = model(pixel_values, labels=targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()

    model, _ = build(num_labels=1, problem_type="regression")
    model.eval()
    values = torch.tensor([0.5, -1.0, 2.0])
    out = model(pixel_values, labels=values)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), values))


# 5. An int `size` follows the processor's own default geometry: the shorter side (torchvision's Resize(int)) where
# the default is {"shortest_edge": ...} (DACL), a square where the default is {"height", "width"} (the others).
@pytest.mark.parametrize("arch", sorted(hf_fer.models.ARCHITECTURES))
def test_int_size_follows_the_default_geometry(arch):
    processor_class = hf_fer.models.ARCHITECTURES[arch].image_processor_class
    shortest_edge = "shortest_edge" in processor_class().size
    processor = processor_class(size=96, do_center_crop=False)
    assert dict(processor.size) == ({"shortest_edge": 96} if shortest_edge else {"height": 96, "width": 96})
    image = np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    assert tuple(pixel_values.shape[-2:]) == ((96, 192) if shortest_edge else (96, 96))


# 6. Every architecture has a base model registered with AutoModel, loading a classification checkpoint.
@pytest.mark.parametrize("arch", sorted(hf_fer.models.ARCHITECTURES))
def test_automodel_and_feature_extraction_pipeline_load_a_classification_checkpoint(arch, tmp_path):
    from tiny_models import input_shape, tiny_config

    spec = hf_fer.models.ARCHITECTURES[arch]
    torch.manual_seed(0)
    classifier = spec.model_class(tiny_config(arch, num_labels=3)).eval()
    classifier.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base).__name__ == f"{spec.class_prefix}Model"
    assert base.base_model is base or base.base_model_prefix in dict(base.named_children())
    classifier_state = classifier.state_dict()
    prefix = f"{base.base_model_prefix}." if base.base_model_prefix else ""
    for key, tensor in base.state_dict().items():  # every base weight is the checkpoint's
        torch.testing.assert_close(tensor, classifier_state[prefix + key], msg=key)
    pixel_values = torch.randn(input_shape(arch))
    with torch.no_grad():
        features = base(pixel_values)
    assert features.pooler_output.shape[0] == 2 and features.last_hidden_state.shape[0] == 2

    side, channels = input_shape(arch)[2], input_shape(arch)[1]
    processor = spec.image_processor_class(size={"height": side, "width": side}, do_center_crop=False)
    extractor = pipeline("image-feature-extraction", model=base, image_processor=processor)
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))
    pooled = extractor(image, return_tensors=True, pool=True)
    assert pooled.shape[0] == 1 and pooled.shape[-1] == features.pooler_output.shape[-1]


# 4. POSTER V2 returns its attention weights (argument and config) through transformers' attention interface.
def test_poster_v2_output_attentions_and_attn_implementation():
    from test_poster_v2 import tiny_model as tiny_poster

    model = tiny_poster()
    pixel_values = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        reference = model(pixel_values).logits
        out = model(pixel_values, output_attentions=True)  # under SDPA (the default) the eager path gives the weights
    model.set_attn_implementation("eager")  # transformers accepts config.output_attentions only with eager attention
    assert model.config._attn_implementation == "eager"
    model.config.output_attentions = True
    with torch.no_grad():
        from_config = model(pixel_values)
    model.config.output_attentions = False
    heads, tokens = model.config.num_attention_heads, 1 + 3 * model.config.num_patches_per_scale
    for attentions in (out.attentions, from_config.attentions):
        assert len(attentions) == model.config.num_hidden_layers
        for weights in attentions:
            assert weights.shape == (2, heads, tokens, tokens)
            torch.testing.assert_close(weights.sum(-1), torch.ones(2, heads, tokens))
    torch.testing.assert_close(out.logits, reference, atol=1e-5, rtol=1e-5)  # eager weights, same logits as SDPA
    with torch.no_grad():
        base = model.poster_v2(pixel_values, output_attentions=True)
    assert [w.shape[-1] for w in base.cross_attentions] == [s * s for s in model.config.window_size]
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, reference, atol=1e-5, rtol=1e-5)


# Gradient checkpointing (POSTER V2's transformer layers) recomputes in backward: same loss, same gradients.
def test_poster_v2_gradient_checkpointing_gives_the_same_gradients():
    from test_poster_v2 import tiny_model as tiny_poster

    model = tiny_poster().train()
    assert model.supports_gradient_checkpointing
    pixel_values, labels = torch.randn(2, 3, 56, 56), torch.tensor([1, 4])

    def step():  # same dropout / stochastic-depth draws in both runs (checkpointing replays the RNG state)
        torch.manual_seed(0)
        model.zero_grad()
        loss = model(pixel_values, labels=labels).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_off, grads_off = step()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert all(layer.gradient_checkpointing for layer in model.poster_v2.encoder)
    loss_on, grads_on = step()
    model.activation_checkpointing_disable()
    torch.testing.assert_close(loss_on, loss_off)
    assert grads_on.keys() == grads_off.keys() and len(grads_on) > 10
    for name in grads_off:
        torch.testing.assert_close(grads_on[name], grads_off[name], msg=name)

"""POSTER V2: model structure, size and compute, transformers integration, preprocessing, converter edge cases.

Parity with the upstream logits is in test_poster_v2_parity*.py. Expected numbers here come from the
spec (measured on the upstream model) or from hand computations, never from this implementation.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

import harness
import hf_fer  # noqa: F401  (registers poster_v2 with the Auto classes)
from hf_fer.models.poster_v2 import PosterV2Config, PosterV2ForImageClassification, PosterV2ImageProcessor
from hf_fer.converters import convert_poster_v2_original as converter

RAFDB = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]


def tiny_config(**overrides) -> PosterV2Config:
    """Same structure as the published model (all parts, three scales), tiny widths and a 56-pixel internal size."""
    values = dict(
        internal_size=56, landmark_stem_channels=8, landmark_stage_channels=[8, 16, 16],
        landmark_downsample_expansions=[16, 16, 24], landmark_block_expansions=[16, 24, 16], landmark_stage_depths=[1, 2, 1],
        landmark_output_channels=24, ir_stem_channels=8, ir_stage_channels=[8, 16, 16], ir_stage_depths=[2, 1, 2],
        cross_attention_heads=[1, 2, 2], hidden_size=32, num_attention_heads=4, intermediate_size=64,
        id2label=dict(enumerate(RAFDB)), label2id={n: i for i, n in enumerate(RAFDB)},
    )
    values.update(overrides)
    return PosterV2Config(**values)


def tiny_model(**overrides) -> PosterV2ForImageClassification:
    torch.manual_seed(0)
    model = PosterV2ForImageClassification(tiny_config(**overrides))
    with torch.no_grad():  # non-trivial norms/layer scales so every part moves the logits
        for name, param in model.named_parameters():
            if "layer_scale" in name:
                param.fill_(0.5)
    return model.eval()


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return PosterV2ForImageClassification(PosterV2Config()).eval()


# --- size and compute of the published configuration ------------------------------------------------------


def test_parameter_count_matches_upstream_forward_pass(full_model):
    """Spec §10: 43,753,941 parameters are reached by upstream's forward pass (7 classes); we build nothing else."""
    assert sum(p.numel() for p in full_model.parameters()) == 43_753_941
    frozen = sum(p.numel() for p in full_model.parameters() if not p.requires_grad)
    assert frozen == 911_232  # the frozen MobileFaceNet part that is used (spec §10)
    eight = PosterV2ForImageClassification(PosterV2Config(num_labels=8))
    assert sum(p.numel() for p in eight.parameters()) == 43_753_941 + 769


def test_flops_match_upstream(full_model):
    """Spec §10: FlopCounterMode counts 17,184,997,888 FLOPs (= the paper's ~8.4-8.5 G multiply-adds) per 224 image.

    FlopCounterMode has no formula for the fused CPU attention kernels, so attention runs through the math
    backend here (same result, made of countable matmuls).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        full_model(pixel_values=torch.randn(1, 3, 224, 224))
    total = counter.get_total_flops()
    assert abs(total - 17.185e9) / 17.185e9 < 0.01, total
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert abs(by_op["aten.bmm"] - 0.314e9) / 0.314e9 < 0.01, by_op  # both attentions' matmuls (spec §10)


@pytest.mark.parametrize("std", [0.01, 0.05])
def test_new_model_uses_upstream_init_for_the_vit_linears(std):
    """Upstream draws the ViT's, SE gate's and classifier's linears from a truncated normal of std 0.01 with zero
    biases; every other linear keeps PyTorch's kaiming-uniform default (std 1/sqrt(3 fan_in))."""
    torch.manual_seed(0)
    model = PosterV2ForImageClassification(tiny_config(linear_initializer_range=std))
    vit_linears = [model.classifier, *[m for m in model.se_gate.modules() if isinstance(m, torch.nn.Linear)]]
    for layer in model.poster_v2.encoder:
        vit_linears += [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    assert len(vit_linears) >= 2 + 4 * model.config.num_hidden_layers
    weights = torch.cat([linear.weight.flatten() for linear in vit_linears])
    assert abs(weights.std().item() - std) < 0.1 * std
    assert all(not linear.bias.any() for linear in vit_linears)
    others = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and not any(m is v for v in vit_linears)]
    for linear in others:  # e.g. the cross-attention's projections
        assert abs(linear.weight.std().item() - (3 * linear.in_features) ** -0.5) < 0.25 * (3 * linear.in_features) ** -0.5


def test_any_input_size_runs(full_model):
    """Spec §2.1: the model nearest-resamples every input to 112x112, so any H x W works (100x100, 300x260)."""
    with torch.no_grad():
        for height, width in ((100, 100), (300, 260)):
            logits = full_model(pixel_values=torch.randn(1, 3, height, width)).logits
            assert logits.shape == (1, 7) and torch.isfinite(logits).all()


def test_legacy_nearest_subsampling_of_224_inputs():
    """For a 224 input, upstream's legacy-nearest resize to 112 keeps every second pixel (spec §2.1)."""
    model = PosterV2ForImageClassification(tiny_config(internal_size=112, linear_initializer_range=0.5)).eval()
    pixel_values = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        full = model(pixel_values=pixel_values).logits
        subsampled = model(pixel_values=pixel_values[:, :, ::2, ::2].contiguous()).logits
        shifted = model(pixel_values=pixel_values[:, :, 1::2, 1::2].contiguous()).logits
    torch.testing.assert_close(full, subsampled, atol=1e-6, rtol=1e-6)
    assert (full - shifted).abs().max() > 1e-3  # the other pixel phase gives different logits


# --- structure: every part is used, the landmark network is frozen ----------------------------------------


def test_every_parameter_is_used_and_only_landmark_network_is_frozen():
    """No dead modules: a backward pass reaches every trainable parameter; the landmark network gets no gradient."""
    model = tiny_model(cross_attention_drop_path=[0.0, 0.0, 0.0]).train()  # no branch randomly dropped
    labels = torch.tensor([0, 3])
    outputs = model(pixel_values=torch.randn(2, 3, 64, 64), labels=labels)
    expected_loss = torch.nn.functional.cross_entropy(outputs.logits, labels)
    torch.testing.assert_close(outputs.loss, expected_loss)
    outputs.loss.backward()
    for name, param in model.named_parameters():
        if name.startswith("poster_v2.landmark_backbone."):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_input_gradients_flow_through_both_branches():
    """The landmark branch is frozen, not detached: saliency maps w.r.t. the input still work (as upstream)."""
    model = tiny_model()
    pixel_values = torch.randn(1, 3, 56, 56, requires_grad=True)
    model(pixel_values=pixel_values).logits[0, 0].backward()
    assert pixel_values.grad is not None and pixel_values.grad.abs().sum() > 0


@pytest.mark.parametrize("freeze_batchnorm", [False, True])
def test_landmark_batchnorm_statistics(freeze_batchnorm):
    """Upstream (default): landmark BNs use batch statistics and drift in training; `freeze_landmark_batchnorm` stops that."""
    model = tiny_model(freeze_landmark_batchnorm=freeze_batchnorm).train()
    landmark_bn = model.poster_v2.landmark_backbone.stem.norm
    image_bn = model.poster_v2.image_backbone.stem.norm
    before_landmark, before_image = landmark_bn.running_mean.clone(), image_bn.running_mean.clone()
    model(pixel_values=torch.randn(4, 3, 56, 56) + 1.0)
    assert landmark_bn.training is not freeze_batchnorm
    assert torch.equal(landmark_bn.running_mean, before_landmark) is freeze_batchnorm
    assert not torch.equal(image_bn.running_mean, before_image)  # the IR-50 branch trains normally
    assert not any(p.requires_grad for p in model.poster_v2.landmark_backbone.parameters())


def test_cross_attention_uses_relative_position_bias_and_landmark_queries():
    """Hand-computed attention of one scale: queries = raw landmark tokens, keys/values from the image tokens."""
    model = tiny_model()
    layer = model.poster_v2.cross_attention[2]
    attention = layer.attention
    with torch.no_grad():
        attention.relative_position_bias_table.normal_()
        image_tokens, landmark_tokens = torch.randn(2, 16, 16), torch.randn(2, 16, 16)
        out, _ = attention(image_tokens, landmark_tokens)
        kv = image_tokens @ attention.key_value.weight.T + attention.key_value.bias
        keys, values = kv[..., :16], kv[..., 16:]
        window = attention.window_size
        expected_heads = []
        for head in range(2):
            sl = slice(8 * head, 8 * head + 8)
            scores = landmark_tokens[..., sl] @ keys[..., sl].transpose(1, 2) * 8**-0.5
            for i in range(16):
                for j in range(16):
                    (ri, ci), (rj, cj) = divmod(i, window), divmod(j, window)
                    index = (ri - rj + window - 1) * (2 * window - 1) + (ci - cj + window - 1)
                    scores[:, i, j] += attention.relative_position_bias_table[index, head]
            expected_heads.append(scores.softmax(-1) @ values[..., sl])
        expected = torch.cat(expected_heads, -1) @ attention.output.weight.T + attention.output.bias
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# --- preprocessing ---------------------------------------------------------------------------------------


def test_attention_queries_keys_and_values_are_dense_for_sdpa():
    """A transposed (strided) query sends scaled_dot_product_attention to its slow math fallback: every call must get
    tensors whose last dimension is contiguous. Recorded on the real calls with a torch function mode."""
    from torch.overrides import TorchFunctionMode

    class RecordSdpa(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.strides = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.scaled_dot_product_attention:
                self.strides.append([tensor.stride(-1) for tensor in args[:3]])
            return func(*args, **(kwargs or {}))

    model = tiny_model()
    recorder = RecordSdpa()
    with torch.no_grad(), recorder:
        model(pixel_values=torch.randn(2, 3, 56, 56))
    assert len(recorder.strides) >= 3 + model.config.num_hidden_layers  # three cross-attention scales + the ViT
    assert all(stride == [1, 1, 1] for stride in recorder.strides), recorder.strides


def test_image_processor_is_upstream_eval_preprocessing():
    """Resize((224, 224)) bilinear -> ToTensor -> Normalize(ImageNet): compared with a hand-written PIL/numpy pipeline."""
    from PIL import Image

    processor = PosterV2ImageProcessor()
    assert processor.size == {"height": 224, "width": 224} and not processor.do_center_crop
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (150, 130, 3), dtype=np.uint8))
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 224, 224)
    resized = np.asarray(image.resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255.0
    expected = (resized - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    expected = torch.from_numpy(expected.transpose(2, 0, 1)).float()[None]
    difference = (pixel_values - expected).abs()
    assert difference.mean() < 0.01 and difference.max() < 0.1, (difference.mean(), difference.max())


# --- converter edge cases --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_state_dict():
    return harness.load_fixture_state_dict("poster_v2_7cls")


def _options(**values):
    return argparse.Namespace(ir50=None, mobilefacenet=None, **values)


def test_converter_names_misfitting_shapes(upstream_state_dict):
    state_dict = dict(upstream_state_dict)
    state_dict["attn2.proj.weight"] = torch.zeros(64, 128)
    with pytest.raises(ValueError, match=r"attn2\.proj\.weight: shape \(64, 128\) does not fit .*attention\.output\.weight \(128, 128\)"):
        converter.convert(state_dict, num_labels=None, id2label=None, options=_options())


def test_converter_names_missing_and_unknown_keys(upstream_state_dict):
    state_dict = {k: v for k, v in upstream_state_dict.items() if k != "ffn3.gamma2"}
    state_dict["VIT.mystery.weight"] = torch.zeros(3)
    with pytest.raises(ValueError) as error:
        converter.convert(state_dict, num_labels=None, id2label=None, options=_options())
    assert "VIT.mystery.weight" in str(error.value) and "cross_attention.2.layer_scale_mlp" in str(error.value)


def test_converter_rejects_other_models_and_wrong_label_counts(upstream_state_dict):
    with pytest.raises(ValueError, match="not a POSTER V2 checkpoint"):
        converter.convert({"fc.weight": torch.zeros(7, 4)}, num_labels=None, id2label=None, options=_options())
    with pytest.raises(ValueError, match="--num-labels 8"):
        converter.convert(upstream_state_dict, num_labels=8, id2label=None, options=_options())
    with pytest.raises(ValueError, match="7 outputs but 8 class names"):
        converter.convert(upstream_state_dict, num_labels=None, id2label=dict(enumerate("abcdefgh")), options=_options())


def test_dead_keys_are_exactly_the_documented_modules(upstream_state_dict):
    """Spec §4: the dead entries hold 14,562,653 parameters; every other upstream key maps to a distinct name."""
    dead = [k for k in upstream_state_dict if converter.is_dead_key(k)]
    dead_params = sum(upstream_state_dict[k].numel() for k in dead if "running_" not in k and "num_batches" not in k)
    assert dead_params == 14_562_653
    live = [k for k in upstream_state_dict if not converter.is_dead_key(k) and not k.endswith("relative_position_index")]
    names = [converter.upstream_key_to_hf(k) for k in live]
    assert None not in names and len(set(names)) == len(names)


def test_pretrained_parts_mode(upstream_state_dict, tmp_path, capsys):
    """No --checkpoint: --mobilefacenet (strict, {'state_dict': ...}) and --ir50 (tolerant; InsightFace `body.N` too)."""
    from transformers import AutoModelForImageClassification

    landmark = {k[len("face_landback."):]: v for k, v in upstream_state_dict.items() if k.startswith("face_landback.")}
    torch.save({"state_dict": landmark, "epoch": 10}, tmp_path / "mobilefacenet_model_best.pth.tar")
    # InsightFace numbering: stages of 3, 4, 14 (and 3 for the absent 4th stage) units in one `body`
    ir50, offsets = {}, {"1": 0, "2": 3, "3": 7}
    for key, value in upstream_state_dict.items():
        if key.startswith("ir_back.body"):
            stage, unit, rest = key[len("ir_back.body"):].split(".", 2)
            ir50[f"body.{offsets[stage] + int(unit)}.{rest}"] = value
        elif key.startswith("ir_back."):
            ir50[key[len("ir_back."):]] = value
    ir50["body.21.res_layer.1.weight"] = torch.zeros(512, 256, 3, 3)  # stage 4: not part of POSTER V2
    torch.save({"module." + k: v for k, v in ir50.items()}, tmp_path / "ir50.pth")

    output = harness.convert_with_cli("poster_v2", None, tmp_path / "untrained", [
        "--ir50", tmp_path / "ir50.pth", "--mobilefacenet", tmp_path / "mobilefacenet_model_best.pth.tar", "--dataset", "raf-db",
    ])
    printed = capsys.readouterr().out
    assert "matched 321 of the 321 landmark-backbone tensors" in printed, printed
    assert "matched 292 of the 292 image-backbone tensors" in printed, printed
    model = AutoModelForImageClassification.from_pretrained(output)
    torch.testing.assert_close(model.poster_v2.image_backbone.stages[2][13].conv2.weight, upstream_state_dict["ir_back.body3.13.res_layer.3.weight"])
    torch.testing.assert_close(model.poster_v2.landmark_backbone.stages[1][6].depthwise.conv.weight,
                               upstream_state_dict["face_landback.conv_4.model.5.conv_dw.conv.weight"])
    with pytest.raises(ValueError, match="--checkpoint .* or --ir50"):
        converter.convert(None, num_labels=None, id2label=None, options=_options())


def test_converter_uses_the_given_class_order(upstream_state_dict):
    caer_s = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "neutral", 5: "sadness", 6: "surprise"}
    model, report = converter.convert(upstream_state_dict, num_labels=None, id2label=caer_s, options=_options())
    assert model.config.id2label == caer_s and model.config.label2id["surprise"] == 6
    assert not model.training and not report.unexpected and not report.missing


@pytest.mark.parametrize("name, names", [
    ("rafdb", RAFDB),
    ("affectnet7", ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"]),
    ("affectnet8", ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]),
    ("caer_s", ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]),
])
def test_shipped_model_configs(name, names):
    """modeling_configs/poster_v2/*.json: the published architecture with each dataset's class order (spec §9)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(harness.REPO / "modeling_configs" / "poster_v2" / f"{name}.json")
    assert isinstance(config, PosterV2Config) and config.num_labels == len(names)
    assert [config.id2label[i] for i in range(len(names))] == names
    assert config.label2id == {n: i for i, n in enumerate(names)}
    default = PosterV2Config(num_labels=len(names)).to_dict()
    for key in ("ir_stage_depths", "landmark_stage_depths", "hidden_size", "num_hidden_layers", "window_size", "internal_size"):
        assert getattr(config, key) == default[key], key


def test_bad_inputs_and_configs_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, 3, height, width\); got \(2, 1, 56, 56\)"):
        model(pixel_values=torch.randn(2, 1, 56, 56))
    with pytest.raises(ValueError, match=r"window_size must equal the cross-attention map sizes \[28, 14, 7\]"):
        PosterV2Config(window_size=[14, 7, 4])
    with pytest.raises(ValueError, match="landmark_stage_channels"):
        PosterV2Config(landmark_stage_channels=[32, 128, 128])
    with pytest.raises(ValueError, match="one value per scale"):
        PosterV2Config(cross_attention_heads=[2, 4])

"""`hf-fer export --optimize`: ONNX Runtime's transformer fusions on VT-NR and POSTER V2.

The fused operators we rely on must actually appear (a fusion that silently stops matching after an exporter
or ONNX Runtime upgrade fails here), the fused file must still match PyTorch within the fp32 tolerance (checked
with a fresh ONNX Runtime session at batch sizes the exporter never saw), and the dynamic int8 MatMul variant
must quantize the transformers' linear layers.

Expected counts come from the model configs: every transformer block has one GELU MLP (-> one BiasGelu) and a
residual Add feeding a LayerNorm after its attention (-> at least one SkipLayerNormalization per block).
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.export import ONNX_FILE, REPORT_FILE, export_model, quantize_matmuls_dynamic
from hf_fer.models.poster_v2 import PosterV2ImageProcessor

from test_poster_v2 import tiny_model as poster_v2_tiny_model
from test_vt_nr import tiny_model as vt_nr_tiny_model, tiny_processor as vt_nr_tiny_processor


def _blocks(arch: str, model) -> int:
    """Transformer blocks with a GELU MLP, counted from the config."""
    if arch == "vt_nr":
        return sum(model.config.backbone_config.depths)
    # POSTER V2: one cross-attention layer per scale, then the ViT blocks
    return len(model.config.cross_attention_heads) + model.config.num_hidden_layers


BUILDERS = {
    "vt_nr": (vt_nr_tiny_model, vt_nr_tiny_processor),
    "poster_v2": (poster_v2_tiny_model, lambda: PosterV2ImageProcessor(size={"height": 64, "width": 64})),
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def fused_export(request, tmp_path_factory):
    make_model, make_processor = BUILDERS[request.param]
    model = make_model()
    out = tmp_path_factory.mktemp(request.param) / "out"
    result = export_model(model, out, image_processor=make_processor(), num_parity_images=8, optimize=True)
    return request.param, model, result


def test_fused_ops_present_and_parity(fused_export):
    arch, model, result = fused_export
    report = json.loads((result.output_dir / REPORT_FILE).read_text())
    assert report["passed"] and report["parity"]["fp32"]["max_abs_logit_diff"] <= 1e-4
    optimization = report["graph_optimization"]
    assert optimization["optimizer"] == "onnxruntime.transformers.optimizer.optimize_model"

    graph = onnx.load(str(result.output_dir / ONNX_FILE))
    ops = Counter(node.op_type for node in graph.graph.node if node.domain == "com.microsoft")
    blocks = _blocks(arch, model)
    print(f"\n{arch}: {blocks} transformer blocks; fused operators {optimization['fused_operators']}; contrib ops in the file {dict(ops)}")
    assert ops["BiasGelu"] == blocks == optimization["fused_operators"]["BiasGelu"]
    assert ops["SkipLayerNormalization"] >= blocks
    assert optimization["fused_operators"]["SkipLayerNormalization"] == ops["SkipLayerNormalization"]
    assert not any(node.op_type in ("Erf",) for node in graph.graph.node), "every GELU should be fused"

    # independent check: fresh inputs, batch sizes 1 and 3, a new session
    channels, height, width = report["input"]["shape"][1:]
    pixel_values = torch.randn(3, channels, height, width, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()
    session = onnxruntime.InferenceSession(str(result.output_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        got = session.run(None, {"pixel_values": pixel_values[:batch].numpy()})[0]
        np.testing.assert_allclose(got, expected[:batch], atol=1e-4, rtol=0)


def test_dynamic_int8_matmuls(fused_export, tmp_path):
    arch, model, result = fused_export
    target = tmp_path / "int8.onnx"
    quantize_matmuls_dynamic(result.output_dir / ONNX_FILE, target)
    ops = Counter(node.op_type for node in onnx.load(str(target)).graph.node)
    # every linear layer of the transformer parts (4 per block: q/k/v packed or not, output, two MLP layers)
    assert ops["DynamicQuantizeLinear"] > 0 and ops["MatMulInteger"] >= 2 * _blocks(arch, model)
    channels, height, width = json.loads((result.output_dir / REPORT_FILE).read_text())["input"]["shape"][1:]
    pixel_values = torch.randn(4, channels, height, width, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()
    got = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": pixel_values.numpy()})[0]
    error = np.abs(got - expected).max()
    print(f"\n{arch}: dynamic int8 MatMuls, max |logit diff| {error:.3g} (logit spread {np.ptp(expected):.3g})")
    assert 0 < error < 0.1 * np.ptp(expected)  # quantized (not bit-equal), yet close


def test_export_int8_dynamic_through_the_cli(tmp_path):
    """`hf-fer export --quantize int8-dynamic`: model_int8.onnx with the linear layers in dynamic int8, checked by
    the export's parity gate, and OnnxClassifier runs it (the int8 file when present)."""
    import subprocess
    import sys

    from hf_fer.onnx import OnnxClassifier

    model, processor = vt_nr_tiny_model(), vt_nr_tiny_processor()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    run = subprocess.run([sys.executable, "-m", "hf_fer.cli", "export", "--model", str(tmp_path / "model"), "--format", "onnx",
                          "--quantize", "int8-dynamic", "--min-agreement", "0", "--num-parity-images", "8",
                          "--output", str(tmp_path / "onnx")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    report = json.loads((tmp_path / "onnx" / REPORT_FILE).read_text())
    assert report["quantization"]["method"] == "onnxruntime.quantization.quantize_dynamic"
    assert report["parity"]["int8"]["num_images"] == 8
    ops = Counter(node.op_type for node in onnx.load(str(tmp_path / "onnx" / "model_int8.onnx")).graph.node)
    assert ops["MatMulInteger"] >= 2 * _blocks("vt_nr", model) and ops["QuantizeLinear"] == 0  # dynamic, not QDQ

    channels, height, width = report["input"]["shape"][1:]
    pixel_values = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()
    classifier = OnnxClassifier(tmp_path / "onnx")
    assert classifier.precision == "int8"
    got = classifier.session.run(None, {"pixel_values": pixel_values.numpy()})[0]
    assert 0 < np.abs(got - expected).max() < 0.1 * np.ptp(expected)

    bad = subprocess.run([sys.executable, "-m", "hf_fer.cli", "export", "--model", str(tmp_path / "model"), "--format", "torch-export",
                          "--quantize", "int8-dynamic", "--output", str(tmp_path / "pt2")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "int8-dynamic" in bad.stderr + bad.stdout


def test_export_int8_mixed_quantizes_convolutions_and_linear_layers(tmp_path):
    """`--quantize int8-mixed` (POSTER V2's fast path): the convolutions in static QDQ int8 (calibrated) and the
    linear layers' MatMuls in dynamic int8, in one model_int8.onnx behind the parity gate; OnnxClassifier runs it."""
    from hf_fer.onnx import OnnxClassifier

    model = poster_v2_tiny_model()
    result = export_model(model, tmp_path / "onnx", image_processor=PosterV2ImageProcessor(size={"height": 64, "width": 64}),
                          quantize="int8-mixed", num_parity_images=8, num_calibration_images=16, min_agreement=0.0)
    report = json.loads((result.output_dir / REPORT_FILE).read_text())
    assert report["passed"] and report["quantization"]["quant_format"] == "QDQ"
    assert report["quantization"]["dynamic_matmuls"]["method"] == "onnxruntime.quantization.quantize_dynamic"
    graph = onnx.load(str(result.files["int8"])).graph
    ops = Counter(node.op_type for node in graph.node)
    weights = {init.name: init.data_type for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    # static part: convolutions fed by DequantizeLinear of int8 weights (QDQ); dynamic part: the linear layers
    int8_weight_convs = [node for node in convs if any(
        producer.op_type == "DequantizeLinear" and weights.get(producer.input[0]) == onnx.TensorProto.INT8
        for producer in graph.node if producer.output[0] == node.input[1])]
    assert len(int8_weight_convs) >= len(convs) // 2 and ops["QuantizeLinear"] > 0
    assert ops["DynamicQuantizeLinear"] > 0 and ops["MatMulInteger"] >= 2 * _blocks("poster_v2", model)
    assert report["parity"]["int8"]["num_images"] == 8

    pixel_values = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()
    classifier = OnnxClassifier(result.output_dir)
    assert classifier.precision == "int8"
    got = classifier.session.run(None, {"pixel_values": pixel_values.numpy()})[0]
    error = np.abs(got - expected).max()
    print(f"\nposter_v2 int8-mixed: {ops['MatMulInteger']} dynamic int8 MatMuls, {len(int8_weight_convs)} of {len(convs)} "
          f"convolutions in int8, max |logit diff| {error:.3g} (logit spread {np.ptp(expected):.3g})")
    assert 0 < error < 0.2 * np.ptp(expected)

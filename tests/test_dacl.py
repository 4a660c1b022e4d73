"""DACL: exact upstream conversion, the sparse center loss and its center rule, and transformers integration.

References are upstream outputs in ``tests/fixtures/parity/dacl/io.safetensors`` (upstream ``models/resnet.py``
and ``loss.py``): logits, pooled features, attention weights, and the center-loss value and gradients for
fixed centers and labels. Integration tests use a tiny config (1 block per stage, 64-px input, narrow CE-unit).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torchvision import transforms

import harness
import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.labels import get_label_names, id2label
from hf_fer.models.dacl import DaclConfig, DaclForImageClassification, DaclImageProcessor, DaclSparseCenterLoss
from hf_fer.converters.convert_dacl_original import rename_key

FIXTURE = "dacl"
ATOL = 1e-4  # CPU float32 on both sides; measured max differences are ~2e-6


def dataparallel_container(state_dict):
    """What upstream ``main.py`` saved: the ``nn.DataParallel`` state dict (``module.`` keys) and the epoch."""
    return {"epoch": 17, "model_state_dict": {"module." + key: value for key, value in state_dict.items()}}


def tiny_config(**overrides) -> DaclConfig:
    values = dict(backbone_depths=[1, 1, 1, 1], image_size=64, attention_hidden_sizes=[32, 16, 8],
                  id2label=id2label("affectnet-7"), label2id={n: i for i, n in enumerate(get_label_names("affectnet-7"))})
    values.update(overrides)
    return DaclConfig(**values)


def tiny_processor() -> DaclImageProcessor:
    return DaclImageProcessor(size={"shortest_edge": 73}, crop_size={"height": 64, "width": 64})


def synthetic_batch(num_images: int, seed: int = 0):
    from hf_fer.data.synthetic import synthetic_arrays

    images, labels, _ = synthetic_arrays(num_images, image_size=80, seed=seed, label_space="affectnet-7")
    return tiny_processor()(list(images), return_tensors="pt")["pixel_values"], torch.as_tensor(labels)


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_fer"] = None  # `import hf_fer` fails: only the remote code can build the model
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoImageProcessor, AutoModelForImageClassification
    folder, inputs, outputs = sys.argv[1:4]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert type(processor).__name__ == "DaclImageProcessor" and processor.crop_size["height"] == 224, processor
    with torch.no_grad():
        out = model(pixel_values=load_file(inputs)["pixel_values"], output_attention_weights=True)
    save_file({"logits": out.logits, "features": out.features, "attention_weights": out.attention_weights,
               "centers": model.center_loss.centers.contiguous()}, outputs)
    print("REMOTE_OK")
    """
)


def outputs_in_fresh_python(folder, pixel_values, tmp_path) -> dict[str, torch.Tensor]:
    """Load ``folder`` with ``trust_remote_code=True`` where ``hf_fer`` cannot be imported; return its outputs."""
    code_files = sorted(p.name for p in folder.glob("*.py"))
    assert "modeling_dacl.py" in code_files and "image_processing_dacl.py" in code_files, code_files
    for source in folder.glob("*.py"):
        # "# Copied from hf_fer.models..." markers are comments for utils/check_copies.py, not imports
        code = "\n".join(line for line in source.read_text().splitlines() if not line.lstrip().startswith("# Copied from hf_fer.models."))
        assert "hf_fer" not in code.replace("hf_fer_", ""), f"{source.name} mentions hf_fer"
    inputs, outputs = tmp_path / "inputs.safetensors", tmp_path / "outputs.safetensors"
    save_file({"pixel_values": pixel_values.contiguous()}, str(inputs))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", _REMOTE_SCRIPT, str(folder), str(inputs), str(outputs)],
                            capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0 and "REMOTE_OK" in result.stdout, f"{result.stdout}\n{result.stderr[-4000:]}"
    return load_file(str(outputs))


# ------------------------------------------------------------------------------------------------ parity


def test_parity_dataparallel_checkpoint(tmp_path):
    """DataParallel container → CLI → AutoModel and remote code: logits, features and attention match upstream."""
    model, outputs, fixture_io = harness.run_parity(FIXTURE, "dacl", dataparallel_container, tmp_path, atol=ATOL, remote_code=False,
                                                     cli_args=("--dataset", "affectnet-7"))
    assert isinstance(model, DaclForImageClassification)
    assert model.config.id2label == id2label("affectnet-7")
    assert outputs.attention_weights is None and model.config.compute_attention_at_inference is False  # lean by default
    with torch.no_grad():
        outputs = model(pixel_values=fixture_io["pixel_values"], output_attention_weights=True)
    harness.assert_close(outputs.logits, fixture_io["logits"], atol=ATOL)
    harness.assert_close(outputs.features, fixture_io["features"], atol=ATOL, what="features")
    harness.assert_close(outputs.attention_weights, fixture_io["attention_weights"], atol=ATOL, what="attention weights")

    remote = outputs_in_fresh_python(tmp_path / "converted", fixture_io["pixel_values"], tmp_path)
    for key in ("logits", "features", "attention_weights"):
        harness.assert_close(remote[key], fixture_io[key], atol=ATOL, what=f"remote-code {key}")
    torch.testing.assert_close(remote["centers"], model.center_loss.centers)  # the centers travel with the weights

    # The model's own training loss: CE + 0.01 · L_SC, with upstream's centers and labels.
    model.center_loss.centers.copy_(fixture_io["center_loss_centers"])
    labels = fixture_io["center_loss_labels"]
    with torch.no_grad():
        out = model(pixel_values=fixture_io["pixel_values"], labels=labels)
    expected_ce = F.cross_entropy(fixture_io["logits"], labels)
    torch.testing.assert_close(out.center_loss, fixture_io["center_loss_value"][0], atol=1e-2, rtol=1e-5)
    torch.testing.assert_close(out.loss, expected_ce + 0.01 * fixture_io["center_loss_value"][0], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(model.center_loss.centers, fixture_io["center_loss_centers"])  # eval: no update


def test_parity_unprefixed_state_dict(tmp_path):
    """A bare state dict without ``module.`` converts too (library path: safe loader + converter, no CLI round trip)."""
    from hf_fer.conversion import load_upstream_checkpoint
    from hf_fer.converters.convert_dacl_original import convert

    checkpoint = tmp_path / "bare.pth"
    torch.save(harness.load_fixture_state_dict(FIXTURE), checkpoint)
    state_dict = load_upstream_checkpoint(checkpoint)
    assert state_dict.container_key is None and state_dict.stripped_prefix is None
    model, report = convert(state_dict, num_labels=None, id2label=id2label("raf-db"), options=None)
    assert len(report.loaded) == 145 and not report.unexpected and not report.missing
    fixture_io = harness.load_fixture_io(FIXTURE)
    with torch.no_grad():
        out = model(pixel_values=fixture_io["pixel_values"])
    harness.assert_close(out.logits, fixture_io["logits"], atol=ATOL)
    assert model.config.id2label == id2label("raf-db")


def test_key_map_follows_spec():
    assert rename_key("layer2.0.downsample.1.running_mean") == "backbone.layer2.0.downsample.1.running_mean"
    assert rename_key("attention.0.weight") == "attention.encoder.0.dense.weight"
    assert rename_key("attention.4.running_var") == "attention.encoder.1.norm.running_var"
    assert rename_key("attention.7.num_batches_tracked") == "attention.encoder.2.norm.num_batches_tracked"
    assert rename_key("attention.2.weight") is None  # ReLU slot: never has parameters
    assert rename_key("attention_heads.bias") == "attention.heads.bias"
    assert rename_key("fc.weight") == "classifier.weight"
    assert rename_key("centers") is None


# ------------------------------------------------------------------------------------ center loss


def test_sparse_center_loss_and_center_rule_match_upstream():
    """L_SC, its feature/attention gradients (autograd) and upstream's center gradient and SGD step (lr 0.5)."""
    fixture_io = harness.load_fixture_io(FIXTURE)
    centers, labels = fixture_io["center_loss_centers"], fixture_io["center_loss_labels"]
    criterion = DaclSparseCenterLoss(num_classes=7, feature_dim=512)
    criterion.centers.copy_(centers)
    features = fixture_io["features"].clone().requires_grad_(True)
    attention = fixture_io["attention_weights"].clone().requires_grad_(True)

    value = criterion(features, attention, labels)
    torch.testing.assert_close(value.reshape(1), fixture_io["center_loss_value"], atol=1e-3, rtol=1e-6)
    (0.01 * value).backward()
    torch.testing.assert_close(features.grad, fixture_io["center_loss_grad_features"], atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(attention.grad, fixture_io["center_loss_grad_attention"], atol=1e-7, rtol=1e-5)

    center_grad = criterion.center_gradient(features.detach(), attention.detach(), labels)
    torch.testing.assert_close(center_grad, fixture_io["center_loss_grad_centers"], atol=1e-6, rtol=1e-5)
    criterion.update_centers(features, attention, labels, lr=0.5)
    torch.testing.assert_close(criterion.centers, centers - 0.5 * fixture_io["center_loss_grad_centers"], atol=1e-6, rtol=1e-6)
    untouched = [c for c in range(7) if c not in labels.tolist()]
    assert torch.equal(criterion.centers[untouched], centers[untouched])


def test_training_forward_moves_centers_by_upstream_rule_not_by_optimizer():
    torch.manual_seed(0)
    model = DaclForImageClassification(tiny_config())
    assert "center_loss.centers" not in dict(model.named_parameters())  # never seen by an optimizer
    assert "center_loss.centers" in model.state_dict()  # but saved with the model
    torch.testing.assert_close(model.center_loss.centers.std(), torch.tensor((2 / 7) ** 0.5), atol=0.05, rtol=0)

    pixel_values, labels = synthetic_batch(6)
    labels[:3] = 2  # class 2 three times: the count normalisation (1 + n_j) matters
    before = model.center_loss.centers.clone()
    model.train()
    out = model(pixel_values=pixel_values, labels=labels)
    # Hand computation of upstream's step: c_j += 0.5 · Σ_{i: y_i = j} A_i ⊙ (f_i − c_j) / (1 + n_j).
    expected = before.clone()
    for j in range(7):
        rows = (labels == j).nonzero().flatten().tolist()
        if rows:
            total = sum(out.attention_weights[i].detach() * (out.features[i].detach() - before[j]) for i in rows)
            expected[j] = before[j] + 0.5 * total / (1 + len(rows))
    torch.testing.assert_close(model.center_loss.centers, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.loss, out.classification_loss + 0.01 * out.center_loss)

    # The CE loss never reaches the attention branch; the center loss is its only signal.
    out.classification_loss.backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in model.attention.parameters())
    (0.01 * out.center_loss).backward()
    assert model.attention.heads.weight.grad.abs().sum() > 0

    model.eval()
    frozen = model.center_loss.centers.clone()
    model(pixel_values=pixel_values, labels=labels)
    assert torch.equal(model.center_loss.centers, frozen)  # evaluation never moves the centers


def test_compiled_training_steps_match_eager_and_move_the_centers_the_same_way():
    """Under torch.compile (e.g. Trainer(torch_compile=True)) the forward graph may keep the centers buffer for its
    backward; the in-place center step then broke backward ("modified by an inplace operation"). Two compiled
    training steps now give eager's losses and centers, and its gradients up to compiled batch-norm rounding (a
    4-image batch in training mode amplifies it to about 3 % of a layer's largest gradient, with or without the
    center step)."""
    torch.manual_seed(0)
    eager = DaclForImageClassification(tiny_config()).train()
    compiled_model = DaclForImageClassification(tiny_config()).train()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model)
    pixel_values, labels = synthetic_batch(4)
    initial = eager.center_loss.centers.clone()
    losses = {}
    for key, model in (("eager", eager), ("compiled", compiled)):
        for _ in range(2):
            output = model(pixel_values=pixel_values, labels=labels)
            output.loss.backward()
            losses.setdefault(key, []).append(output.loss.item())
    assert losses["compiled"] == pytest.approx(losses["eager"], abs=1e-5)
    torch.testing.assert_close(compiled_model.center_loss.centers, eager.center_loss.centers, atol=1e-4, rtol=1e-4)
    assert (eager.center_loss.centers - initial).abs().max() > 1e-3  # the centers did move
    for (name, expected), got in zip(eager.named_parameters(), compiled_model.parameters()):
        assert (got.grad - expected.grad).abs().max() <= 0.06 * expected.grad.abs().max() + 1e-6, name


def test_estimate_centers_is_attention_weighted_mean():
    torch.manual_seed(0)
    model = DaclForImageClassification(tiny_config()).eval()
    pixel_values, labels = synthetic_batch(8)
    untouched = [c for c in range(7) if c not in labels.tolist()]
    before = model.center_loss.centers.clone()
    model.estimate_centers([{"pixel_values": pixel_values[:5], "labels": labels[:5]},
                            {"pixel_values": pixel_values[5:], "label": labels[5:]}])
    with torch.no_grad():
        out = model(pixel_values=pixel_values, output_attention_weights=True)
    for j in labels.unique().tolist():
        rows = labels == j
        expected = (out.attention_weights[rows] * out.features[rows]).sum(0) / out.attention_weights[rows].sum(0)
        torch.testing.assert_close(model.center_loss.centers[j], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.center_loss.centers[untouched], before[untouched])


# -------------------------------------------------------------------------------------- refusals


def _convert(state_dict, tmp_path, *args):
    checkpoint = tmp_path / "bad.pth"
    torch.save(dataparallel_container(state_dict), checkpoint)
    return harness.convert_with_cli("dacl", checkpoint, tmp_path / "out", ["--dataset", "raf-db", *args])


def _small_upstream_state_dict():
    """Upstream key names (from the fixture's entry list) with the tiny config's shapes: fast to build."""
    ours = DaclForImageClassification(tiny_config()).state_dict()
    upstream_names = [name for name, _, _ in harness.load_fixture_meta(FIXTURE)["entries"]]
    return {name: ours[rename_key(name)] for name in upstream_names if rename_key(name) in ours}


def test_refuses_checkpoints_that_do_not_fit(tmp_path):
    state_dict = _small_upstream_state_dict()  # tiny shapes: attention.0 is 2048-wide, the config expects 25088
    with pytest.raises(ValueError, match=r"attention.0.weight: checkpoint \(32, 2048\) vs expected \(32, 25088\)"):
        _convert(state_dict, tmp_path)
    with pytest.raises(ValueError, match="not a DACL checkpoint: no 'attention_heads.weight'"):
        _convert({k: v for k, v in state_dict.items() if not k.startswith("attention_heads")}, tmp_path)
    renamed = dict(state_dict)
    renamed["attention.9.weight"] = renamed.pop("attention.6.weight")
    with pytest.raises(ValueError, match=r"unexpected keys \(\d+\): \[[^]]*'attention.9.weight'\]"):
        _convert(renamed, tmp_path, "--image-size", "64")


# ---------------------------------------------------------------------------------------- sizes


def test_parameter_count_and_flops_match_spec():
    """Spec §12: 103,042,311 parameters (+ 3,584 center values, a buffer); torch.utils.flop_counter (2 FLOPs per
    MAC), 224 px, batch 1: 3,810,827,264 with the attention branch, 3,627,129,856 without it (the logits need only
    the trunk and the classifier). Built on the meta device: no time spent on random initialisation."""
    from torch.utils.flop_counter import FlopCounterMode

    totals = []
    with torch.device("meta"):
        model = DaclForImageClassification(DaclConfig()).eval()
        for with_attention in (True, False):
            model.config.compute_attention_at_inference = with_attention
            with FlopCounterMode(display=False) as counter:
                model(pixel_values=torch.zeros(1, 3, 224, 224))
            totals.append(counter.get_total_flops())
    total = sum(p.numel() for p in model.parameters())
    parts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    centers = model.center_loss.centers.numel()
    print(f"DACL parameters: {total:,} {parts} + {centers:,} center values (buffer); "
          f"FLOPs {totals[0]:,} (without the attention branch {totals[1]:,})")
    assert total == 103_042_311
    assert parts["backbone"] == 11_176_512 and parts["attention"] == 91_795_648 + 66_560
    assert centers == 3_584
    assert totals == [3_810_827_264, 3_627_129_856]


def test_input_errors_and_inference_without_attention():
    model = DaclForImageClassification(tiny_config())
    pixel_values, labels = synthetic_batch(2)
    model.train()
    with pytest.raises(ValueError, match="at least 2 images"):
        model(pixel_values=pixel_values[:1], labels=labels[:1])
    with pytest.raises(ValueError, match="integer class labels"):
        model(pixel_values=pixel_values, labels=labels.float())
    model.eval()
    with pytest.raises(ValueError, match="expects 2×2"):
        model(pixel_values=torch.zeros(1, 3, 128, 128), output_attention_weights=True)
    assert model(pixel_values=torch.zeros(1, 3, 128, 128)).logits.shape == (1, 7)  # the logits need no fixed size
    with torch.no_grad():
        full = model(pixel_values=pixel_values, output_attention_weights=True)
        lean = model(pixel_values=pixel_values)
    assert lean.attention_weights is None and torch.equal(lean.logits, full.logits)


def count_attention_calls(model) -> list[int]:
    """Batch sizes of every call of the attention network, recorded by a forward hook on the real module."""
    calls = []
    model.attention.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    return calls


def test_attention_network_runs_at_inference_only_when_asked():
    """Eval forwards without labels skip the attention MLP (the logits do not need it) unless the config or the
    forward asks; training forwards and forwards with labels always run it (the center loss needs it)."""
    assert DaclConfig().compute_attention_at_inference is False
    torch.manual_seed(0)
    model = DaclForImageClassification(tiny_config()).eval()
    calls = count_attention_calls(model)
    pixel_values, labels = synthetic_batch(3)
    with torch.no_grad():
        lean = model(pixel_values=pixel_values)
        assert calls == [] and lean.attention_weights is None
        asked = model(pixel_values=pixel_values, output_attention_weights=True)
        assert calls == [3] and asked.attention_weights.shape == (3, 512)
        model.config.compute_attention_at_inference = True
        by_config = model(pixel_values=pixel_values)
        not_now = model(pixel_values=pixel_values, output_attention_weights=False)
        assert calls == [3, 3] and not_now.attention_weights is None
        model.config.compute_attention_at_inference = False
        model(pixel_values=pixel_values, labels=labels)  # evaluation loss needs L_SC
        assert calls == [3, 3, 3]
    assert torch.equal(lean.logits, asked.logits) and torch.equal(lean.logits, by_config.logits)
    model.train()
    out = model(pixel_values=pixel_values, labels=labels)
    model(pixel_values=pixel_values)  # training without labels (e.g. BatchNorm statistics) still runs it
    assert calls == [3, 3, 3, 3, 3] and out.attention_weights is not None


def test_load_backbone_weights_from_torchvision_names():
    from torchvision.models import resnet18

    reference = resnet18(weights=None, num_classes=1000)
    model = DaclForImageClassification(tiny_config(backbone_depths=[2, 2, 2, 2]))
    assert model.load_backbone_weights(reference.state_dict()) == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.backbone.layer4[0].downsample[0].weight, reference.layer4[0].downsample[0].weight)
    with pytest.raises(ValueError, match="missing"):
        model.load_backbone_weights({"conv1.weight": reference.conv1.weight})


# ------------------------------------------------------------------------------------- processor


def test_image_processor_matches_torchvision_eval_transform():
    """Processor vs upstream's eval transform in torchvision: Resize(256), CenterCrop(224), ToTensor, Normalize.

    Same bilinear (antialiased) filter on both sides; PIL rounds to uint8 in fixed point, the tensor kernel
    rounds a float result, so single pixels may differ by one grey level. Tolerance: one grey level per pixel
    (1/255/std in normalised units) and a mean difference below 0.01 grey levels.
    """
    from PIL import Image

    mean, std = (0.5752, 0.4495, 0.4012), (0.2086, 0.1911, 0.1827)
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])
    processor = DaclImageProcessor()
    face = harness.synthetic_face(100)
    for image in (face, face.resize((300, 240), Image.BICUBIC), face.resize((640, 480), Image.BICUBIC)):
        ours = processor(image, return_tensors="pt")["pixel_values"][0]
        expected = reference(image)
        assert ours.shape == expected.shape == (3, 224, 224)
        grey_levels = (ours - expected).abs() * torch.tensor(std)[:, None, None] * 255
        assert grey_levels.max() <= 1.0 + 1e-3, grey_levels.max()
        assert grey_levels.mean() < 0.01, grey_levels.mean()


# ------------------------------------------------------------------------------------ integration


def test_save_load_and_pipeline(tmp_path):
    torch.manual_seed(0)
    model = DaclForImageClassification(tiny_config()).eval()
    pixel_values, _ = synthetic_batch(3)
    model.center_loss.centers.normal_(generator=torch.Generator().manual_seed(3))
    harness.check_save_load_roundtrip(model, pixel_values, tmp_path)
    from transformers import AutoModelForImageClassification

    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "roundtrip")
    assert torch.equal(reloaded.center_loss.centers, model.center_loss.centers)  # not re-initialised on load
    # Remote code (no hf_fer importable) is exercised on the converted upstream model in
    # test_parity_dataparallel_checkpoint, with the features, attention weights, centers and image processor.
    predictions = harness.check_pipeline(model, tiny_processor(), tmp_path)
    assert {p["label"] for p in predictions} == set(get_label_names("affectnet-7"))


def test_trainer_and_loss_decreases(tmp_path):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = DaclForImageClassification(tiny_config())
    pixel_values, labels = synthetic_batch(8)
    dataset = [{"pixel_values": p, "labels": int(y)} for p, y in zip(pixel_values, labels)]
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                             report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0)
    centers = model.center_loss.centers.clone()
    result = Trainer(model=model, args=args, train_dataset=dataset).train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert not torch.equal(model.center_loss.centers, centers)  # moved by the center rule during Trainer steps

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    losses = []
    for _ in range(4):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_hidden_states_and_tuple_output():
    model = DaclForImageClassification(tiny_config()).eval()
    pixel_values, labels = synthetic_batch(2)
    with torch.no_grad():
        out = model(pixel_values=pixel_values, output_hidden_states=True, output_attention_weights=True)
        # the output object's to_tuple() order (ModelOutput field order, None fields dropped)
        loss, logits, hidden_states, features, attention, ce_loss, center_loss = model(
            pixel_values=pixel_values, labels=labels, output_hidden_states=True, return_dict=False)
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == [(64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert torch.equal(logits, out.logits) and torch.equal(features, out.features) and loss.ndim == 0
    assert out.attention_weights.shape == (2, 512) and ((out.attention_weights > 0) & (out.attention_weights < 1)).all()


@pytest.mark.parametrize("name, benchmark", [("rafdb", "raf-db"), ("affectnet7", "affectnet-7")])
def test_shipped_model_configs_load(name, benchmark):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(harness.REPO / "modeling_configs" / "dacl" / f"{name}.json")
    assert isinstance(config, DaclConfig) and config.id2label == id2label(benchmark)
    assert config.attention_hidden_sizes == [3584, 512, 64] and config.center_lr == 0.5 and config.center_loss_weight == 0.01
    assert config.compute_attention_at_inference is False


# ------------------------------------------------------------------------------ FER2013 report ablations


def test_center_loss_on_a_hand_computed_example():
    """Two 2-d features of class 0, center c0 = (0, 1): differences (1, 1) and (3, 4), squares 1+1+9+16 = 27.
    Uniform weights give the classic center loss 27 / (2·2) = 6.75; weights ((.5, 1), (1, 0)) give
    (0.5 + 1 + 9 + 0) / 4 = 2.625. Classic center update (α = 0.5, n_0 = 2): c0 + 0.5·((1, 1) + (3, 4)) / 3."""
    criterion = DaclSparseCenterLoss(num_classes=2, feature_dim=2)
    criterion.centers.copy_(torch.tensor([[0.0, 1.0], [7.0, 7.0]]))
    features, labels = torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.tensor([0, 0])
    assert criterion(features, torch.ones(2, 2), labels).item() == 6.75
    assert criterion(features, torch.tensor([[0.5, 1.0], [1.0, 0.0]]), labels).item() == 2.625
    criterion.update_centers(features, torch.ones(2, 2), labels, lr=0.5)
    torch.testing.assert_close(criterion.centers, torch.tensor([[2 / 3, 1 + 5 / 6], [7.0, 7.0]]))


@pytest.mark.parametrize("mode", ["learned", "uniform"])
def test_center_loss_attention_switch_changes_the_loss_as_computed_by_hand(mode):
    """``center_loss_attention="uniform"`` (plain center loss) vs DACL's learned weights, and λ = 0 (softmax only),
    in a training forward: loss and center step recomputed here with explicit loops over samples and classes."""
    torch.manual_seed(0)
    model = DaclForImageClassification(tiny_config(center_loss_attention=mode)).train()
    calls = count_attention_calls(model)
    pixel_values, labels = synthetic_batch(4)
    labels[:2] = 1
    before = model.center_loss.centers.clone()
    out = model(pixel_values=pixel_values, labels=labels)
    features, logits = out.features.detach(), out.logits.detach()
    weights = torch.ones(4, 512) if mode == "uniform" else out.attention_weights.detach()
    assert calls == ([] if mode == "uniform" else [4])  # the plain center loss never runs the attention network
    assert torch.equal(out.attention_weights, weights)
    center = sum(float((weights[i] * (features[i] - before[labels[i]]) ** 2).sum()) for i in range(4)) / (2 * 4)
    cross_entropy = -sum(float(torch.log_softmax(logits[i], 0)[labels[i]]) for i in range(4)) / 4
    assert out.center_loss.item() == pytest.approx(center, rel=1e-5)
    assert out.loss.item() == pytest.approx(cross_entropy + 0.01 * center, rel=1e-5)
    expected = before.clone()
    for j in range(7):
        rows = [i for i in range(4) if labels[i] == j]
        if rows:
            expected[j] += 0.5 * sum(weights[i] * (features[i] - before[j]) for i in rows) / (1 + len(rows))
    torch.testing.assert_close(model.center_loss.centers, expected, atol=1e-5, rtol=1e-5)

    model.config.center_loss_weight = 0.0  # softmax only: the loss is the cross-entropy alone
    out = model(pixel_values=pixel_values, labels=labels)
    assert out.loss.item() == pytest.approx(-sum(float(torch.log_softmax(out.logits[i].detach(), 0)[labels[i]]) for i in range(4)) / 4,
                                            rel=1e-6)
    with pytest.raises(ValueError, match="center_loss_attention must be one of"):
        tiny_config(center_loss_attention="equal")

"""ARM: exact upstream conversion, the batch-coupled vs batch-independent affinity, and transformers integration.

Parity references are the upstream outputs in ``tests/fixtures/parity/arm/io.safetensors`` (computed by the
upstream ``ResNet18_ARM___RAF`` code): ``logits`` for the batch of two images, ``logits_per_image`` for each
image run alone. Integration tests use a tiny config (1 block per stage, 64-px input) to stay fast.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms

import harness
import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.labels import get_label_names, id2label
from hf_fer.models.arm import ArmConfig, ArmForImageClassification, ArmImageProcessor
from hf_fer.converters.convert_arm_original import rename_key

FIXTURE = "arm"
ATOL = 1e-4  # CPU float32 on both sides; the measured max difference is ~5e-6


def released_container(state_dict):
    """What upstream ``train_raf-db.py`` saved: bare keys, iteration and Adam state alongside."""
    optimizer_state = {
        "state": {0: {"step": torch.tensor(59.0), "exp_avg": torch.zeros(1), "exp_avg_sq": torch.zeros(1)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4, "amsgrad": False, "params": [0]}],
    }
    return {"iter": 59, "model_state_dict": state_dict, "optimizer_state_dict": optimizer_state}


def ddp_container(state_dict):
    """The deleted DDP training script: same container, every key prefixed with ``module.``."""
    return released_container({"module." + key: value for key, value in state_dict.items()})


def tiny_config(**overrides) -> ArmConfig:
    """1 block per stage, 64 px → 2×2 trunk map → 2×32×32 shuffled → 8×8/4 de-albino → 7×7 = 49 features."""
    values = dict(backbone_depths=[1, 1, 1, 1], image_size=64, de_albino_kernel_size=8, de_albino_stride=4,
                  id2label=id2label("raf-db"), label2id={n: i for i, n in enumerate(get_label_names("raf-db"))})
    values.update(overrides)
    return ArmConfig(**values)


def tiny_processor() -> ArmImageProcessor:
    return ArmImageProcessor(size={"height": 64, "width": 64})


def synthetic_batch(num_images: int, image_size: int = 64, seed: int = 0):
    from hf_fer.data.synthetic import synthetic_arrays

    images, labels, _ = synthetic_arrays(num_images, image_size=image_size, seed=seed, label_space="raf-db")
    pixel_values = tiny_processor()(list(images), return_tensors="pt")["pixel_values"]
    return pixel_values, torch.as_tensor(labels)


# ------------------------------------------------------------------------------------------------ parity


def test_parity_released_checkpoint(tmp_path):
    """Upstream container → CLI → AutoModel (and remote code) reproduces upstream's batch-coupled logits."""
    model, outputs, fixture_io = harness.run_parity(FIXTURE, "arm", released_container, tmp_path, atol=ATOL, cli_args=("--dataset", "raf-db"))
    assert isinstance(model, ArmForImageClassification)
    assert model.config.affinity_mode == "batch"
    assert model.config.id2label == id2label("raf-db")
    torch.testing.assert_close(model.arm.alpha.detach(), fixture_io["alpha"])
    # Each image alone: upstream's output changes (g is then the image's own map) and so does ours, identically.
    with torch.no_grad():
        alone = torch.cat([model(pixel_values=image[None]).logits for image in fixture_io["pixel_values"]])
    harness.assert_close(alone, fixture_io["logits_per_image"], atol=ATOL, what="single-image logits")
    assert (fixture_io["logits"] - fixture_io["logits_per_image"]).abs().max() > 1e-2  # the coupling is real


def test_parity_ddp_checkpoint(tmp_path):
    """Checkpoints from upstream's DDP script carry ``module.`` prefixes."""
    harness.run_parity(FIXTURE, "arm", ddp_container, tmp_path, atol=ATOL, remote_code=False, cli_args=("--dataset", "raf-db"))


def test_parity_bare_state_dict(tmp_path):
    harness.run_parity(FIXTURE, "arm", lambda sd: dict(sd), tmp_path, atol=ATOL, remote_code=False, cli_args=("--dataset", "raf-db"))


def test_key_map_follows_spec():
    assert rename_key("features.0.weight") == "backbone.conv1.weight"
    assert rename_key("features.1.running_var") == "backbone.bn1.running_var"
    assert rename_key("features.4.1.conv2.weight") == "backbone.layer1.1.conv2.weight"
    assert rename_key("features.7.0.downsample.1.bias") == "backbone.layer4.0.downsample.1.bias"
    assert rename_key("features.2.weight") is None  # ReLU: no parameters upstream
    assert rename_key("fc.bias") == "classifier.bias"
    assert rename_key("arm.alpha") == "arm.alpha"
    assert rename_key("element_attention_x.weight") is None


# --------------------------------------------------------------------------------------- refusals


def _convert(state_dict, tmp_path, *args):
    checkpoint = tmp_path / "bad.pth"
    torch.save(released_container(state_dict), checkpoint)
    return harness.convert_with_cli("arm", checkpoint, tmp_path / "out", ["--dataset", "raf-db", *args])


def test_refuses_stale_key_names(tmp_path):
    """The first released file used old module names (upstream issue #3): refuse and list them."""
    state_dict = harness.load_fixture_state_dict(FIXTURE)
    state_dict["element_attention_x.weight"] = state_dict.pop("arm.de_albino.weight")
    with pytest.raises(ValueError, match="arm.de_albino.weight"):
        _convert(state_dict, tmp_path)
    state_dict = harness.load_fixture_state_dict(FIXTURE)
    state_dict["element_attention_x.weight"] = torch.zeros(3)
    del state_dict["arm.bn.running_var"]
    with pytest.raises(ValueError, match=r"(?s)unexpected keys \(1\): \['element_attention_x.weight'\].*missing keys \(1\): \['arm.bn.running_var'\]"):
        _convert(state_dict, tmp_path)


def test_refuses_shape_mismatch(tmp_path):
    state_dict = harness.load_fixture_state_dict(FIXTURE)
    state_dict["features.4.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(ValueError, match=r"features.4.0.conv1.weight: checkpoint \(64, 64, 1, 1\) vs expected \(64, 64, 3, 3\)"):
        _convert(state_dict, tmp_path)
    state_dict = harness.load_fixture_state_dict(FIXTURE)
    with pytest.raises(ValueError, match="--num-labels 8 but the checkpoint's fc.weight has 7 classes"):
        _convert(state_dict, tmp_path, "--num-labels", "8", "--id2label", "a,b,c,d,e,f,g,h")
    with pytest.raises(ValueError, match="fc.weight has 121 inputs but this configuration gives"):
        _convert(state_dict, tmp_path, "--de-albino-stride", "4")


# ------------------------------------------------------------------------------ affinity modes


def test_calibration_makes_single_images_reproduce_the_batch_logits():
    """Calibrating on a set of images makes each of them, run alone, give upstream's logits for the whole set.

    The calibrated map is the mean of the per-image maps, i.e. exactly upstream's batch mean ``g`` for that set,
    so the fixture's batch-of-2 ``logits`` (an independent upstream computation) is the expected answer.
    """
    state_dict = harness.load_fixture_state_dict(FIXTURE)
    from hf_fer.converters.convert_arm_original import convert

    model, _ = convert(state_dict, num_labels=None, id2label=None, options=None)
    fixture_io = harness.load_fixture_io(FIXTURE)
    pixel_values = fixture_io["pixel_values"]
    model.calibrate_affinity([pixel_values[:1], {"pixel_values": pixel_values[1:]}])
    assert model.config.affinity_mode == "running" and int(model.arm.affinity_num_batches_tracked) == 2
    with torch.no_grad():
        alone = torch.cat([model(pixel_values=image[None]).logits for image in pixel_values])
        together = model(pixel_values=pixel_values).logits
    harness.assert_close(alone, fixture_io["logits"], atol=ATOL, what="calibrated single-image logits")
    harness.assert_close(together, fixture_io["logits"], atol=ATOL, what="calibrated batch logits")


def test_running_mode_is_batch_independent():
    """In "running" mode an image gets the same logits alone and inside any batch; in "batch" mode it does not."""
    torch.manual_seed(0)
    model = ArmForImageClassification(tiny_config(alpha_init=1.0))
    pixel_values, _ = synthetic_batch(6)
    model.train()
    with torch.no_grad():
        model(pixel_values=pixel_values)  # one training forward learns a running estimate
    assert int(model.arm.affinity_num_batches_tracked) == 1
    model.eval()
    others = torch.randn(5, 3, 64, 64) * 2
    with torch.no_grad():
        alone = model(pixel_values=pixel_values[:1]).logits
        for batch in (pixel_values, torch.cat([others, pixel_values[:1]]), torch.cat([pixel_values[:1], others[:1]])):
            position = 0 if batch[0].equal(pixel_values[0]) else batch.shape[0] - 1
            torch.testing.assert_close(model(pixel_values=batch).logits[position : position + 1], alone, atol=1e-5, rtol=0)
        model.set_affinity_mode("batch")
        coupled = model(pixel_values=torch.cat([others, pixel_values[:1]])).logits[-1:]
    assert (coupled - alone).abs().max() > 1e-3


def test_running_estimate_training_update():
    """Training in "running" mode uses the batch mean (as upstream) and moves the estimate by ``momentum``.

    The expected batch map is recomputed here with functional ops from the spec: pixel shuffle, one shared
    conv kernel on each channel, training-mode batch norm, mean over batch and channels.
    """
    torch.manual_seed(0)
    model = ArmForImageClassification(tiny_config(affinity_momentum=0.25))
    pixel_values, _ = synthetic_batch(4)
    model.arm.affinity_running_mean.fill_(1.0)
    model.train()
    with torch.no_grad():
        trunk = model.backbone(pixel_values)
        shuffled = F.pixel_shuffle(trunk, 16)
        maps = torch.stack([F.conv2d(shuffled[:, c : c + 1], model.arm.de_albino.weight, stride=4)[:, 0] for c in range(2)], 1)
        maps = F.batch_norm(maps, None, None, model.arm.bn.weight, model.arm.bn.bias, training=True, eps=1e-5)
        batch_map = maps.mean(dim=(0, 1))
        model(pixel_values=pixel_values)
    torch.testing.assert_close(model.arm.affinity_running_mean, 0.75 * torch.ones(7, 7) + 0.25 * batch_map, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- sizes


def test_parameter_count_and_flops_match_spec():
    """Spec §11: 11,178,395 parameters; torch.utils.flop_counter (2 FLOPs per MAC), 224 px, batch 1: 3,627,619,998.

    Built on the meta device: shapes and FLOPs without spending time on random initialisation.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = ArmForImageClassification(ArmConfig(affinity_mode="batch")).eval()  # the upstream model
        with FlopCounterMode(display=False) as counter:
            model(pixel_values=torch.zeros(1, 3, 224, 224))
    total = sum(p.numel() for p in model.parameters())
    trunk = sum(p.numel() for p in model.backbone.parameters())
    print(f"ARM parameters: {total:,} (trunk {trunk:,}, arm {sum(p.numel() for p in model.arm.parameters()):,}, "
          f"classifier {sum(p.numel() for p in model.classifier.parameters()):,}); FLOPs {counter.get_total_flops():,}")
    assert total == 11_178_395
    assert trunk == 11_176_512
    assert model.config.classifier_in_features == 121
    assert counter.get_total_flops() == 3_627_619_998


def test_config_validation_errors():
    with pytest.raises(ValueError, match="affinity_mode"):
        ArmConfig(affinity_mode="per_batch")
    with pytest.raises(ValueError, match="classifier_in_features 100 does not match"):
        ArmConfig(classifier_in_features=100)
    model = ArmForImageClassification(tiny_config())
    with pytest.raises(ValueError, match="expects 49"):
        model(pixel_values=torch.zeros(1, 3, 96, 96))
    with pytest.raises(ValueError, match="pixel_values must be"):
        model(pixel_values=torch.zeros(1, 1, 64, 64))


def test_load_backbone_weights_from_torchvision_names():
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    model = ArmForImageClassification(ArmConfig())
    ignored = model.load_backbone_weights({"module." + k: v for k, v in reference.state_dict().items()})
    assert ignored == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.backbone.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    with pytest.raises(ValueError, match="missing"):
        model.load_backbone_weights({k: v for k, v in reference.state_dict().items() if not k.startswith("layer4.")})


# ------------------------------------------------------------------------------------- processor


def test_image_processor_matches_torchvision_eval_transform():
    """Processor vs the upstream eval transform written with torchvision (Resize((224, 224)), ToTensor, Normalize).

    Both resize with a bilinear (antialiased) filter; PIL rounds to uint8 with fixed-point arithmetic where the
    tensor kernel rounds a float result, so single pixels may differ by one grey level. Tolerance: one grey level
    (1/255/std in normalised units) per pixel, and a mean difference below 0.01 grey levels.
    """
    from PIL import Image

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    reference = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(mean, std)])
    processor = ArmImageProcessor()
    face = harness.synthetic_face(100)
    for image in (face, face.resize((300, 240), Image.BICUBIC), face.resize((57, 90), Image.BICUBIC)):
        ours = processor(image, return_tensors="pt")["pixel_values"][0]
        expected = reference(image)
        assert ours.shape == expected.shape == (3, 224, 224)
        grey_levels = (ours - expected).abs() * torch.tensor(std)[:, None, None] * 255
        assert grey_levels.max() <= 1.0 + 1e-3, grey_levels.max()
        assert grey_levels.mean() < 0.01, grey_levels.mean()


# ------------------------------------------------------------------------------------ integration


def test_save_load_and_pipeline(tmp_path):
    torch.manual_seed(0)
    model = ArmForImageClassification(tiny_config())
    pixel_values, _ = synthetic_batch(3)
    model.train()
    with torch.no_grad():
        model(pixel_values=pixel_values)
    model.eval()
    harness.check_save_load_roundtrip(model, pixel_values, tmp_path)
    from transformers import AutoConfig, AutoModelForImageClassification

    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "roundtrip")
    assert AutoConfig.from_pretrained(tmp_path / "roundtrip").affinity_mode == "running"
    torch.testing.assert_close(reloaded.arm.affinity_running_mean, model.arm.affinity_running_mean, atol=0, rtol=0)
    assert int(reloaded.arm.affinity_num_batches_tracked) == 1
    # Remote code (no hf_fer importable) is exercised on the converted upstream model in test_parity_released_checkpoint.
    predictions = harness.check_pipeline(model, tiny_processor(), tmp_path)
    assert {p["label"] for p in predictions} == set(get_label_names("raf-db"))


def test_trainer_and_loss_decreases(tmp_path):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = ArmForImageClassification(tiny_config())
    pixel_values, labels = synthetic_batch(8)
    dataset = [{"pixel_values": p, "labels": int(y)} for p, y in zip(pixel_values, labels)]
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
                             report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0)
    result = Trainer(model=model, args=args, train_dataset=dataset).train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(4):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert model.arm.alpha.grad is not None  # alpha is learned


def test_hidden_states_and_tuple_output():
    model = ArmForImageClassification(tiny_config()).eval()
    pixel_values, labels = synthetic_batch(2)
    with torch.no_grad():
        out = model(pixel_values=pixel_values, output_hidden_states=True)
        as_tuple = model(pixel_values=pixel_values, labels=labels, return_dict=False)
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == [(64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert as_tuple[0].ndim == 0 and torch.equal(as_tuple[1], out.logits)


def test_shipped_model_config_loads():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(harness.REPO / "modeling_configs" / "arm" / "rafdb.json")
    assert isinstance(config, ArmConfig) and config.affinity_mode == "batch"  # the released (converted) checkpoint
    assert config.id2label == id2label("raf-db") and config.classifier_in_features == 121

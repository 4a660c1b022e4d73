"""DMUE: config, the objective on batches upstream cannot handle, quirk flags, converter layouts and errors.

Upstream parity lives in ``test_dmue_parity.py`` (deployed model) and ``test_dmue_multibranch.py`` (training
model); transformers integration in ``test_dmue_integration.py``. Here references are hand computations (ramp
values from the spec, the documented missing-class rules re-derived with explicit loops, momentum updates).
The network is ResNet-18 whatever the config, so speed comes from 4 classes, small images (32-64 px) and
small batches.
"""
from __future__ import annotations

import argparse
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import harness
import hf_fer  # noqa: F401  (registers the Auto classes)
from hf_fer.labels import get_label_names, id2label
from hf_fer.models.dmue import DmueConfig, DmueForImageClassification, dmue_ramp_weights
from hf_fer.converters.convert_dmue_original import INFERENCE_WEIGHTS, TRAINING_SNAPSHOT, convert, rename_key


def affectnet_config(**overrides) -> DmueConfig:
    values = dict(id2label=id2label("affectnet-8"))
    values.update(overrides)
    return DmueConfig(**values)


def training_model(num_labels: int = 4, **overrides) -> DmueForImageClassification:
    """A multi-branch model; 4 classes (5 stage-4 copies) keep unit tests fast."""
    torch.manual_seed(0)
    names = get_label_names("affectnet-8")[:num_labels]
    return DmueForImageClassification(DmueConfig(id2label=dict(enumerate(names)), use_aux_branches=True, **overrides))


@pytest.fixture(scope="module")
def eval_model() -> DmueForImageClassification:
    """One 4-class multi-branch model in eval mode, shared by the tests that only run forward passes."""
    return training_model().eval()


def small_batch(labels, image_size: int = 64, seed: int = 0):
    """Random images; 64 px leaves a 2x2 stage-4 map, so one-sample subsets still have batch statistics."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(len(labels), 3, image_size, image_size, generator=generator), torch.tensor(labels)


# ------------------------------------------------------------------------------------------ config / structure


def test_config_defaults_are_upstream_and_validated():
    config = DmueConfig()
    assert (config.num_labels, config.backbone, config.hidden_size, config.last_stride) == (8, "resnet18", 512, 2)
    assert (config.stem_relu, config.stem_pool, config.use_bnneck, config.classifier_bias) == (False, "max2", True, False)
    assert (config.sharpen_temperature, config.soft_loss_weight, config.sp_loss_weight, config.ramp_epochs) == (1.2, 0.5, 1000.0, 6)
    assert config.problem_type == "single_label_classification"
    assert config.num_aux_branches == 0 and DmueConfig(use_aux_branches=True, num_labels=7).num_aux_branches == 7
    reloaded = DmueConfig.from_dict(affectnet_config(use_aux_branches=True, train_uncertainty_head=False).to_dict())
    assert reloaded.use_aux_branches and not reloaded.train_uncertainty_head and reloaded.id2label == id2label("affectnet-8")
    for name, multibranch in (("affectnet8", False), ("affectnet8_multibranch", True)):
        shipped = DmueConfig.from_json_file(str(harness.REPO / "modeling_configs" / "dmue" / f"{name}.json"))
        assert shipped.use_aux_branches is multibranch and shipped.id2label == id2label("affectnet-8")
    with pytest.raises(ValueError, match="resnet50_ibn"):
        DmueConfig(backbone="resnet50_ibn")
    with pytest.raises(ValueError, match="stem_pool"):
        DmueConfig(stem_pool="avg")
    with pytest.raises(ValueError, match=r"backbone_depths must list 4 positive block counts, got \[2, 2, 2\]"):
        DmueConfig(backbone_depths=[2, 2, 2])
    with pytest.raises(ValueError, match="at least 2 classes"):
        DmueForImageClassification(DmueConfig(num_labels=1, use_aux_branches=True, problem_type="regression"))


def test_trunk_is_torchvision_resnet18_with_dmue_stem_and_paper_cost():
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    model = DmueForImageClassification(DmueConfig()).eval()
    assert isinstance(model.resnet, torchvision.models.ResNet)
    assert isinstance(model.resnet.relu, torch.nn.Identity)  # no stem ReLU
    assert (model.resnet.maxpool.kernel_size, model.resnet.maxpool.stride, model.resnet.maxpool.padding) == (2, 2, 0)
    assert model.classifier.bias is None and isinstance(model.neck, torch.nn.BatchNorm1d)
    assert model.num_parameters() == 11_181_632  # spec §2 (stem+layer1-3 2,782,784; layer4 8,393,728; 4,096; 1,024)
    assert sum(p.numel() for p in model.resnet.layer4.parameters()) == 8_393_728
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixel_values=torch.zeros(1, 3, 224, 224))
    assert abs(counter.get_total_flops() / 1e9 - 3.627) < 0.001  # spec §14


def test_lighter_trunk_keeps_the_layout_and_shrinks_every_branch(tmp_path):
    """``backbone_depths`` (quick CPU recipes) changes block counts only: same names, one block per stage."""
    config = DmueConfig(num_labels=7, use_aux_branches=True, backbone_depths=[1, 1, 1, 1])
    model = DmueForImageClassification(config)
    assert [len(getattr(model.resnet, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert all(len(branch) == 1 for branch in model.aux_branches)
    # A BasicBlock stage-4 of one block: 3x3 256->512, 3x3 512->512, 1x1 downsample + three BNs.
    block4 = 256 * 512 * 9 + 512 * 512 * 9 + 256 * 512 + 3 * 2 * 512
    assert sum(p.numel() for p in model.aux_branches[0].parameters()) == block4
    output = model(pixel_values=torch.randn(14, 3, 64, 64), labels=torch.arange(14) % 7)
    assert torch.isfinite(output.loss) and len(output.aux_logits) == 7
    model.save_pretrained(tmp_path, target_branch_only=True)
    reloaded = DmueForImageClassification.from_pretrained(tmp_path)
    assert reloaded.config.backbone_depths == [1, 1, 1, 1] and reloaded.aux_branches is None


def test_ramp_weights_match_upstream_examples():
    # spec §4: up(0) = 0.0067, up(3) = 0.2865, up(5) = 0.8703, up(6) = 1; down(10) = 0.8521, down(20) = 0.6126, down(35) = 0.5033
    for epoch, up in ((0, 0.0067), (3, 0.2865), (5, 0.8703), (6, 1.0), (30, 1.0)):
        assert abs(dmue_ramp_weights(epoch, 6)[0] - up) < 5e-5, epoch
    for epoch, down in ((0, 1.0), (5, 1.0), (6, 1.0), (10, 0.8521), (20, 0.6126), (35, 0.5033)):
        assert abs(dmue_ramp_weights(epoch, 6)[1] - down) < 5e-5, epoch
    with pytest.raises(ValueError, match="epoch"):
        DmueForImageClassification(DmueConfig()).set_epoch(-1)


# ----------------------------------------------------------------------------------------------- the objective


def test_latent_distribution_is_sharpened_and_widened_by_hand(eval_model):
    latent_logits = torch.tensor([[0.0, math.log(2.0), 0.0]])  # softmax over the 3 other classes: 1/4, 2/4, 1/4
    widened = eval_model._latent_distribution(latent_logits, excluded=1)
    powered = [(1 / 4) ** (1 / 1.2), (2 / 4) ** (1 / 1.2), (1 / 4) ** (1 / 1.2)]
    expected = [p / sum(powered) for p in powered]
    expected.insert(1, 0.0)  # the sample's own class
    torch.testing.assert_close(widened, torch.tensor([expected]), atol=1e-7, rtol=0)


def reference_score(model, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The documented rule written with loops: mean cosine similarity to each *present* class (self included),
    min-max over the present classes, 0 for absent classes, then [statistics, one-hot] -> MLP -> sigmoid."""
    num_labels = model.num_labels
    rows = []
    for i in range(len(labels)):
        means = {}
        for c in range(num_labels):
            members = [j for j in range(len(labels)) if labels[j] == c]
            if members:
                means[c] = sum(F.cosine_similarity(pooled[i], pooled[j], dim=0, eps=0) for j in members) / len(members)
        low, high = min(means.values()), max(means.values())
        statistics = [((means[c] - low) / (high - low) if high > low else 0.0) if c in means else 0.0 for c in range(num_labels)]
        rows.append(torch.tensor([float(s) for s in statistics] + F.one_hot(labels[i], num_labels).tolist(), dtype=torch.float32))
    return torch.sigmoid(model.uncertainty_head(torch.stack(rows)))


def test_missing_classes_give_finite_terms_in_train_and_eval_mode():
    """Upstream produces NaN when a class is missing from the batch; we skip the per-class terms without samples."""
    model = training_model()
    pixel_values, labels = small_batch([0, 0, 3, 1, 3])  # class 2 absent; class 1 has a single sample
    model.eval()
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, labels=labels, epoch=7, output_hidden_states=True)
    for name in ("loss", "loss_ce", "loss_soft", "loss_aux", "loss_sp", "uncertainty_score", "weighted_logits", "soft_targets"):
        assert torch.isfinite(getattr(outputs, name)).all(), name
    pooled = outputs.hidden_states[-1].mean(dim=(2, 3))
    with torch.no_grad():
        torch.testing.assert_close(outputs.uncertainty_score, reference_score(model, pooled, labels), atol=2e-5, rtol=0)
    for c in range(4):
        assert outputs.aux_logits[c].shape == ((labels != c).sum().item(), 3)
        assert outputs.latent_logits[c].shape[0] == (labels == c).sum().item()
    # every branch has samples here (no class covers the whole batch): the averages run over all 4 branches
    expected_aux = torch.stack([F.cross_entropy(outputs.aux_logits[c], outputs.aux_targets[c]) for c in range(4)]).mean()
    torch.testing.assert_close(outputs.loss_aux, expected_aux)
    # soft targets: a distribution over the other classes for every sample, 0 at its own class
    torch.testing.assert_close(outputs.soft_targets.sum(dim=1), torch.ones(5))
    assert torch.all(outputs.soft_targets[torch.arange(5), labels] == 0)

    model.train()  # batch statistics, dropout, one-sample subsets through the BN neck
    outputs = model(pixel_values=pixel_values, labels=labels, epoch=7)
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert model.aux_branches[2][0].conv1.weight.grad.abs().sum() > 0  # branch of an absent class still trains


def test_one_image_branches_on_1x1_maps_train_with_running_statistics():
    """At <= 32 px the stage-4 maps are 1x1, and a class branch given one image used to fail inside BatchNorm
    ("Expected more than 1 value per channel"), or not, depending on the labels drawn. Such a call now uses the
    branch's running statistics (as the neck does for one sample): here by hand, against the branch in eval mode."""
    model = training_model(dropout_prob=0.0).train()
    pixel_values, labels = small_batch([0, 0, 3, 1, 3], image_size=32)  # class 1 alone: branch 1's latent call
    outputs = model(pixel_values=pixel_values, labels=labels, epoch=7)
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    assert model.aux_branches[1][0].conv1.weight.grad.abs().sum() > 0
    assert all(module.training for module in model.modules())  # the eval switch is undone
    shared_map = model._shared_trunk(pixel_values, output_hidden_states=False)[0][labels == 1]
    branch = model.aux_branches[1]
    with torch.no_grad():
        got = model._run_branch(branch, shared_map)
        branch.eval()
        expected = branch(shared_map)
        branch.train()
    torch.testing.assert_close(got, expected)


def test_single_class_batch_skips_that_branch(eval_model):
    model = eval_model
    pixel_values, labels = small_batch([2, 2, 2], image_size=32)
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, labels=labels, epoch=0)
    assert outputs.aux_logits[2].shape == (0, 3) and outputs.aux_gram[2].shape == (0, 0)
    assert all(outputs.aux_logits[c].shape == (3, 3) for c in range(4) if c != 2)
    expected_aux = torch.stack([F.cross_entropy(outputs.aux_logits[c], outputs.aux_targets[c]) for c in range(4) if c != 2]).mean()
    torch.testing.assert_close(outputs.loss_aux, expected_aux)
    assert torch.isfinite(outputs.loss)
    # one class present: the rescaled similarity statistics are all 0 (upstream: 0/0 = NaN)
    statistics = torch.cat([torch.zeros(3, 4), F.one_hot(labels, 4).float()], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(outputs.uncertainty_score, torch.sigmoid(model.uncertainty_head(statistics)))


def test_epoch_state_drives_the_ramps(eval_model):
    model = eval_model
    pixel_values, labels = small_batch([0, 1, 2, 3, 0, 1], image_size=32)
    assert model.epoch == 0.0  # upstream starts at epoch 0
    try:
        with torch.no_grad():
            at_start = model(pixel_values=pixel_values, labels=labels)
            model.set_epoch(20)
            later = model(pixel_values=pixel_values, labels=labels)
            explicit = model(pixel_values=pixel_values, labels=labels, epoch=0)
    finally:
        model.set_epoch(0)
    up0, down0 = math.exp(-5.0), 1.0
    up20, down20 = 1.0, math.exp(-((1 - 6 / 20) ** 2))
    target_terms = at_start.loss_ce + 0.5 * at_start.loss_soft + 1000.0 * at_start.loss_sp
    torch.testing.assert_close(at_start.loss, up0 * target_terms + down0 * at_start.loss_aux)
    torch.testing.assert_close(later.loss, up20 * target_terms + down20 * at_start.loss_aux)
    torch.testing.assert_close(explicit.loss, at_start.loss)
    assert later.ramp_up_weight.item() == 1.0 and abs(later.ramp_down_weight.item() - down20) < 1e-6


def test_neck_running_statistics_come_from_the_target_branch_only():
    pixel_values, labels = small_batch([0, 1, 2, 3, 0, 1, 2, 3], image_size=32)  # every subset has >= 2 samples
    model = training_model(dropout_prob=0.0).train()
    outputs = model(pixel_values=pixel_values, labels=labels, output_hidden_states=True)
    pooled = outputs.hidden_states[-1].mean(dim=(2, 3)).detach()
    torch.testing.assert_close(model.neck.running_mean, 0.1 * pooled.mean(dim=0))  # momentum 0.1 from zeros
    assert model.neck.num_batches_tracked.item() == 1

    upstream_like = training_model(dropout_prob=0.0, neck_stats_from_all_branches=True).train()
    upstream_like(pixel_values=pixel_values, labels=labels)
    assert upstream_like.neck.num_batches_tracked.item() == 1 + 4 + 4  # target + 4 auxiliary + 4 latent calls


def test_trainable_flags_and_frozen_neck_bias(tmp_path):
    model = training_model(train_uncertainty_head=False, train_neck_weight=False)
    assert not any(p.requires_grad for p in model.uncertainty_head.parameters())
    assert not model.neck.weight.requires_grad and not model.neck.bias.requires_grad
    default = training_model()
    assert all(p.requires_grad for p in default.uncertainty_head.parameters()) and default.neck.weight.requires_grad
    assert not default.neck.bias.requires_grad  # BNNeck: bias never learned

    pixel_values, labels = small_batch([0, 1, 2, 3])
    model.train()
    model(pixel_values=pixel_values, labels=labels, epoch=10).loss_ce.backward()
    assert model.uncertainty_head[0].weight.grad is None
    assert model.resnet.layer4[0].conv1.weight.grad.abs().sum() > 0  # the frozen head still passes gradients

    from transformers import AutoModelForImageClassification

    model.save_pretrained(tmp_path / "frozen")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "frozen")
    assert not any(p.requires_grad for p in reloaded.uncertainty_head.parameters()) and not reloaded.neck.bias.requires_grad


def test_deployed_model_returns_cross_entropy_and_checks_inputs():
    model = DmueForImageClassification(affectnet_config()).eval()
    pixel_values, labels = small_batch([0, 7, 3])
    outputs = model(pixel_values=pixel_values, labels=labels)
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, labels))
    assert outputs.loss_aux is None and outputs.uncertainty_score is None
    loss, logits = model(pixel_values=pixel_values, labels=labels, return_dict=False)
    assert torch.equal(logits, outputs.logits)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\]"):
        model(pixel_values=pixel_values, labels=torch.tensor([0, 8, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \[3\]"):
        model(pixel_values=pixel_values, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\]"):
        model(pixel_values=pixel_values[:, :1])


# ------------------------------------------------------------------------------------------------ converter


def upstream_snapshot(num_labels: int = 3) -> OrderedDict:
    """A small upstream-layout training snapshot (keys as upstream's multi-branch Backbone names them)."""
    reference = DmueForImageClassification(DmueConfig(num_labels=num_labels, use_aux_branches=True))
    renamed = OrderedDict()
    for key, value in reference.state_dict().items():
        key = key.replace("resnet.layer4.", f"base.layer4_{num_labels}.").replace("resnet.", "base.")
        key = key.replace("aux_branches.", "base.layer4_").replace("aux_classifiers.", "classifiers.")
        key = key.replace("classifier.", f"classifiers.{num_labels}.").replace("uncertainty_head.", "project_w.").replace("neck.", "bottleneck.")
        renamed[key] = value.clone()
    return renamed


def options(**values) -> argparse.Namespace:
    return argparse.Namespace(**{"keep_aux_branches": False, "last_stride": 2, **values})


def test_rename_key_follows_spec():
    assert rename_key("base.layer4_8.0.conv1.weight", TRAINING_SNAPSHOT, 8) == ("resnet.layer4.0.conv1.weight", False)
    assert rename_key("base.layer4_3.1.bn2.running_var", TRAINING_SNAPSHOT, 8) == ("aux_branches.3.1.bn2.running_var", True)
    assert rename_key("classifiers.8.weight", TRAINING_SNAPSHOT, 8) == ("classifier.weight", False)
    assert rename_key("classifiers.0.weight", TRAINING_SNAPSHOT, 8) == ("aux_classifiers.0.weight", True)
    assert rename_key("classifiers.0.weight", INFERENCE_WEIGHTS, 0) == ("classifier.weight", False)
    assert rename_key("project_w.1.weight", TRAINING_SNAPSHOT, 8) == ("uncertainty_head.1.weight", True)
    assert rename_key("bottleneck.running_mean", INFERENCE_WEIGHTS, 0) == ("neck.running_mean", False)
    assert rename_key("base.layer2.0.downsample.1.weight", INFERENCE_WEIGHTS, 0) == ("resnet.layer2.0.downsample.1.weight", False)


def test_converter_both_layouts_and_errors():
    snapshot = upstream_snapshot(3)
    deployed, report = convert(snapshot, num_labels=None, id2label={0: "a", 1: "b", 2: "c"}, options=options())
    assert not deployed.config.use_aux_branches and len(report.loaded) == 126
    assert len(report.dropped) == len(snapshot) - 126 == 3 * 30 + 3 + 5  # 3 stage-4 copies, 3 aux classifiers, project_w
    assert all(k.startswith(("base.layer4_0", "base.layer4_1", "base.layer4_2.", "classifiers.0", "classifiers.1", "classifiers.2", "project_w"))
               for k in report.dropped)
    assert torch.equal(deployed.classifier.weight, snapshot["classifiers.3.weight"])
    training, report = convert(snapshot, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, options=options(keep_aux_branches=True))
    assert training.config.use_aux_branches and not report.dropped and not report.missing
    assert torch.equal(training.aux_branches[1][0].conv1.weight, snapshot["base.layer4_1.0.conv1.weight"])

    with pytest.raises(ValueError, match="--num-labels 7 but the checkpoint's classifier classifiers.3.weight has 3"):
        convert(snapshot, num_labels=7, id2label=None, options=options())
    with pytest.raises(ValueError, match="pass --dataset or --id2label"):
        convert(snapshot, num_labels=None, id2label=None, options=options())
    extra = OrderedDict(snapshot, **{"base.something_new.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected keys: base.something_new.weight"):
        convert(extra, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, options=options())
    broken = OrderedDict(snapshot)
    broken["base.layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(ValueError, match=r"base.layer1.0.conv1.weight -> resnet.layer1.0.conv1.weight: expected \[64, 64, 3, 3\], got \[64, 64, 1, 1\]"):
        convert(broken, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, options=options())

    inference = OrderedDict((k, v) for k, v in snapshot.items() if not k.startswith(("base.layer4_0", "base.layer4_1", "base.layer4_2.", "classifiers.0", "classifiers.1", "classifiers.2", "project_w")))
    inference = OrderedDict((k.replace("base.layer4_3.", "base.layer4.").replace("classifiers.3.", "classifiers.0."), v) for k, v in inference.items())
    with pytest.raises(ValueError, match="--keep-aux-branches needs a multi-branch training snapshot"):
        convert(inference, num_labels=None, id2label={0: "a", 1: "b", 2: "c"}, options=options(keep_aux_branches=True))
    with pytest.raises(ValueError, match="not a DMUE checkpoint"):
        convert({"conv1.weight": torch.zeros(1)}, num_labels=None, id2label=None, options=options())


def test_msceleb_pretrained_trunk_starts_the_training_model():
    """Upstream's training start: feat_net.* into the trunk, feat_net.layer4 copied into every branch, fresh heads."""
    import torchvision

    trunk = torchvision.models.resnet18(num_classes=10).state_dict()
    checkpoint = {"feat_net." + k: v for k, v in trunk.items() if not k.startswith("fc.")}
    checkpoint["loss_layer.weight"] = torch.randn(512, 10)  # the MV-softmax identity head
    names = {0: "a", 1: "b", 2: "c"}
    model, report = convert(checkpoint, num_labels=None, id2label=names, options=options(keep_aux_branches=True))
    assert model.config.use_aux_branches and report.dropped == ["loss_layer.weight"] and not report.unexpected
    assert torch.equal(model.resnet.conv1.weight, trunk["conv1.weight"])
    for branch in (model.resnet.layer4, *model.aux_branches):
        assert torch.equal(branch[1].bn2.running_var, trunk["layer4.1.bn2.running_var"])
    assert set(report.missing) == {k for k in model.state_dict() if k.startswith(("classifier.", "aux_classifiers.", "uncertainty_head.", "neck."))}
    assert 0.0008 < model.classifier.weight.std().item() < 0.0012  # upstream init N(0, 0.001)
    with pytest.raises(ValueError, match="no expression classifier"):
        convert(checkpoint, num_labels=None, id2label=None, options=options())

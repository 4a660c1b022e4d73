"""ARM: a ResNet-18 whose last feature map is "amended" by de-albino and affinity (Shi & Zhu, arXiv 2103.10189).

Data flow for a 224×224 input (B images)::

    ResNet-18 trunk (torchvision)      B×512×7×7
    pixel shuffle ×16 ("arrangement")   B×2×112×112
    de-albino: one 32×32/8 kernel, shared by both channels, no padding → B×2×11×11
    BatchNorm2d(2)                      z: B×2×11×11
    per-sample map m_b = mean_c z[b]    B×1×11×11
    affinity map  g = mean_{b,c} z      11×11, shared by the batch (or a running estimate, see below)
    m_b + alpha·g, flattened            B×121 → dropout → Linear → logits

Upstream computes ``g`` over the images of the *current forward call*, in eval as well as in training, so a
prediction depends on the other images in the batch (``affinity_mode="batch"``, kept for exact conversion).
``affinity_mode="running"`` replaces ``g`` at eval with a running estimate learned in training (like
BatchNorm's running statistics), so one image always gives one answer; :meth:`ArmForImageClassification.calibrate_affinity`
estimates it from data for converted checkpoints, which carry none.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput
from transformers.utils import can_return_tuple
from transformers.utils import logging

from .configuration_arm import ArmConfig

logger = logging.get_logger(__name__)

TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def build_resnet_trunk(depths: list[int]) -> nn.Sequential:
    """A torchvision BasicBlock ResNet without its pooling and classifier, keeping torchvision's parameter names."""
    resnet = ResNet(BasicBlock, list(depths))
    return nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in TRUNK_CHILDREN))


class ArmAmendModule(nn.Module):
    """De-albino convolution, BatchNorm and the affinity term (upstream ``Amend_raf``)."""

    def __init__(self, config: ArmConfig):
        super().__init__()
        self.config = config  # affinity_mode / affinity_momentum are read at every forward, so switching is live
        # Registered before the conv so that the state-dict order matches upstream (``arm.alpha`` first).
        self.alpha = nn.Parameter(torch.full((1,), float(config.alpha_init)))
        self.de_albino = nn.Conv2d(
            1, 1, kernel_size=config.de_albino_kernel_size, stride=config.de_albino_stride,
            padding=config.de_albino_padding, bias=config.de_albino_bias,
        )
        self.bn = nn.BatchNorm2d(config.arm_channels, eps=config.arm_bn_eps, momentum=config.arm_bn_momentum)
        side = config.affinity_map_size
        # Running estimate of the batch-shared affinity map, used at eval in "running" mode.
        self.register_buffer("affinity_running_mean", torch.zeros(side, side))
        self.register_buffer("affinity_num_batches_tracked", torch.zeros((), dtype=torch.long))

    def de_albino_maps(self, shuffled: torch.Tensor) -> torch.Tensor:
        """The same single-channel kernel on every channel, then BatchNorm: B×C×S×S → B×C×s×s."""
        batch_size, channels, height, width = shuffled.shape
        maps = self.de_albino(shuffled.reshape(batch_size * channels, 1, height, width))
        maps = maps.reshape(batch_size, channels, *maps.shape[-2:])
        return self.bn(maps)

    def shared_map(self, maps: torch.Tensor) -> torch.Tensor:
        """The affinity map ``g`` added (times alpha) to every sample."""
        if self.config.affinity_mode == "batch":
            return maps.mean(dim=(0, 1))
        if self.training:
            batch_map = maps.mean(dim=(0, 1))
            with torch.no_grad():
                self.affinity_running_mean.lerp_(batch_map.detach().to(self.affinity_running_mean.dtype), self.config.affinity_momentum)
                self.affinity_num_batches_tracked.add_(1)
            return batch_map
        if not torch.compiler.is_compiling() and int(self.affinity_num_batches_tracked) == 0:
            logger.warning_once(
                "ARM is in affinity_mode='running' but its running affinity map was never estimated (all zeros): "
                "train the model or call model.calibrate_affinity(...) first."
            )
        return self.affinity_running_mean.to(maps.dtype)

    def forward(self, shuffled: torch.Tensor) -> torch.Tensor:
        maps = self.de_albino_maps(shuffled)
        per_sample = maps.mean(dim=1, keepdim=True)
        return per_sample + self.alpha * self.shared_map(maps)


class ArmPreTrainedModel(PreTrainedModel):
    config_class = ArmConfig
    # The head is flat (checkpoint keys predate ArmModel): ArmModel shares its attribute names instead of being
    # stored under a prefix, so either class loads the other's checkpoint key for key, and `base_model` is the model.
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["BasicBlock"]  # torchvision's residual block: its shortcut must stay on one device

    def _init_weights(self, module: nn.Module) -> None:
        """torchvision's ResNet init for the trunk, PyTorch defaults for the head (as upstream), alpha = alpha_init."""
        if isinstance(module, nn.Conv2d):
            if module.in_channels == 1:  # the de-albino kernel keeps PyTorch's default init upstream
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            else:
                init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight.shape[1])
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.BatchNorm2d):
            super()._init_weights(module)  # transformers\' norm init: weight 1, bias 0, statistics reset
        elif isinstance(module, ArmAmendModule):
            init.constant_(module.alpha, self.config.alpha_init)
            init.zeros_(module.affinity_running_mean)
            init.zeros_(module.affinity_num_batches_tracked)

    def _check_input(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(f"pixel_values must be B×{self.config.num_channels}×H×W, got shape {tuple(pixel_values.shape)}")

    def amended_features(self, pixel_values: torch.Tensor, output_hidden_states: bool = False):
        """Trunk → pixel shuffle → ARM; returns (B×121 features, trunk map, hidden states or None)."""
        self._check_input(pixel_values)
        hidden_states = [] if output_hidden_states else None
        hidden = pixel_values
        for name, layer in self.backbone.named_children():
            hidden = layer(hidden)
            if hidden_states is not None and name in ("maxpool", "layer1", "layer2", "layer3", "layer4"):
                hidden_states.append(hidden)
        side = self.config.shuffled_map_size // self.config.pixel_shuffle_factor
        if tuple(hidden.shape[-2:]) != (side, side):
            raise ValueError(
                f"input of {tuple(pixel_values.shape[-2:])} pixels gives a {tuple(hidden.shape[-2:])} trunk map; ARM's classifier "
                f"expects {self.config.classifier_in_features} features, i.e. a {side}×{side} map (image_size "
                f"{self.config.image_size}); resize the images"
            )
        shuffled = F.pixel_shuffle(hidden, self.config.pixel_shuffle_factor)
        amended = self.arm(shuffled).flatten(1)
        return amended, hidden, (tuple(hidden_states) if hidden_states is not None else None)


class ArmModel(ArmPreTrainedModel):
    """ARM without its classifier: the ResNet trunk and the Amend module (``AutoModel``; image-feature-extraction).

    Same attribute names as :class:`ArmForImageClassification`, whose checkpoints it loads (the classifier
    is left out). ``pooler_output`` is the B×121 amended representation the classifier reads.
    """

    def __init__(self, config: ArmConfig):
        super().__init__(config)
        self.backbone = build_resnet_trunk(config.backbone_depths)
        self.arm = ArmAmendModule(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        features, feature_map, hidden_states = self.amended_features(pixel_values, output_hidden_states=bool(output_hidden_states))
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=feature_map, pooler_output=features, hidden_states=hidden_states
        )


class ArmForImageClassification(ArmPreTrainedModel):
    """ARM classifier; ``forward`` returns an ``ImageClassifierOutput`` with the cross-entropy loss when given labels."""

    def __init__(self, config: ArmConfig):
        super().__init__(config)
        self.backbone = build_resnet_trunk(config.backbone_depths)
        self.arm = ArmAmendModule(config)
        self.dropout = nn.Dropout(config.drop_rate)
        self.classifier = nn.Linear(config.classifier_in_features, config.num_labels)
        self.post_init()

    def set_affinity_mode(self, mode: str) -> None:
        """Switch between upstream ``"batch"`` coupling and the batch-independent ``"running"`` estimate (saved in the config)."""
        if mode not in ("batch", "running"):
            raise ValueError(f"affinity mode must be 'batch' or 'running', got {mode!r}")
        self.config.affinity_mode = mode

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        r"""
        In ``affinity_mode="batch"`` (converted upstream checkpoints) the logits of an image depend on the other
        images of ``pixel_values``; in ``"running"`` mode they do not (outside training).
        """
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        features, _, hidden_states = self.amended_features(pixel_values, output_hidden_states=bool(output_hidden_states))
        logits = self.classifier(self.dropout(features))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    @torch.no_grad()
    def calibrate_affinity(self, batches: Iterable[torch.Tensor | Mapping], max_batches: int | None = None) -> torch.Tensor:
        """Estimate the affinity map from data and switch to batch-independent ``"running"`` mode.

        The estimate is the mean, over every image seen, of its per-sample map ``mean_c z`` in eval mode: the
        expected value of upstream's batch mean ``g``. It is exact: running a calibrated model on the calibration
        images one at a time gives the logits upstream gives for all of them in one batch. ``batches`` yields
        pixel-value tensors or dicts with ``"pixel_values"`` (e.g. a DataLoader of image-processor outputs).
        Returns the estimated map.
        """
        was_training = self.training
        self.eval()
        total, count = None, 0
        for index, batch in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            pixel_values = batch["pixel_values"] if isinstance(batch, Mapping) else batch
            pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
            self._check_input(pixel_values)
            shuffled = F.pixel_shuffle(self.backbone(pixel_values), self.config.pixel_shuffle_factor)
            per_sample = self.arm.de_albino_maps(shuffled).mean(dim=1).double()
            total = per_sample.sum(dim=0) if total is None else total + per_sample.sum(dim=0)
            count += per_sample.shape[0]
        if count == 0:
            raise ValueError("calibrate_affinity got no images")
        estimate = (total / count).to(self.arm.affinity_running_mean.dtype)
        self.arm.affinity_running_mean.copy_(estimate)
        self.arm.affinity_num_batches_tracked.fill_(count)
        self.set_affinity_mode("running")
        self.train(was_training)
        return estimate

    def load_backbone_weights(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Load torchvision-named ResNet weights into the trunk, strictly (ImageNet ``resnet18``, MS-Celeb-1M ``resnet18_msceleb.pth``...).

        ``module.`` prefixes are stripped and the 1000-way ``fc.*`` head is ignored; every trunk tensor must be
        present with the right shape (a ``strict=False`` load would silently load nothing). Call after
        construction (``post_init`` re-initialises weights). Returns the ignored keys.
        """
        cleaned = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
        ignored = [k for k in cleaned if k.startswith("fc.")]
        trunk = {k: v for k, v in cleaned.items() if not k.startswith("fc.")}
        expected = self.backbone.state_dict()
        missing = [k for k in expected if k not in trunk and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in trunk if k not in expected]
        mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                      for k, v in trunk.items() if k in expected and v.shape != expected[k].shape]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"backbone weights do not fit the ResNet trunk: missing {missing}, unexpected {unexpected}, "
                f"shape mismatches {mismatched}"
            )
        self.backbone.load_state_dict(trunk, strict=False)
        return ignored


__all__ = ["ArmPreTrainedModel", "ArmModel", "ArmForImageClassification", "ArmAmendModule"]

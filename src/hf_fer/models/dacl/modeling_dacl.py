"""DACL: a ResNet-18 classifier trained with an attention-weighted ("sparse") center loss (Farzaneh & Qi, WACV 2021).

Data flow for a 224×224 input (B images)::

    ResNet-18 trunk (torchvision)                       X: B×512×7×7
    global average pool → f: B×512 → Linear             logits (the only thing inference needs)
    flatten X (NCHW) → CE-unit: FC-BN-ReLU 25088→3584,
        FC-BN-ReLU 3584→512, FC-BN-tanh 512→64           B×64
    heads: Linear 64→1024, pairs (2j, 2j+1), softmax,
        keep index 1                                    attention weights A: B×512 in (0, 1)

Training loss = CE(logits, y) + λ·L_SC with L_SC = Σ_i Σ_j A_ij (f_ij − c_{y_i j})² / (2B). The class centers
``c`` are a buffer of the model (saved with it, unlike upstream), moved by upstream's own rule, not by the
optimizer: ``c_j ← c_j + center_lr · Σ_{i: y_i = j} A_i ⊙ (f_i − c_j) / (1 + n_j)`` after every training
forward with labels. The attention branch learns only from L_SC; the logits never depend on it.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput
from transformers.utils import can_return_tuple

from .configuration_dacl import DaclConfig

TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


# Copied from hf_fer.models.arm.modeling_arm.build_resnet_trunk
def build_resnet_trunk(depths: list[int]) -> nn.Sequential:
    """A torchvision BasicBlock ResNet without its pooling and classifier, keeping torchvision's parameter names."""
    resnet = ResNet(BasicBlock, list(depths))
    return nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in TRUNK_CHILDREN))


@dataclass
class DaclImageClassifierOutput(ImageClassifierOutput):
    """``ImageClassifierOutput`` plus DACL's intermediates.

    Args:
        features: pooled trunk features ``f`` (B×512), the vectors the center loss pulls to the class centers.
        attention_weights: per-dimension weights ``A`` (B×512) of the center loss (``None`` when not computed).
        classification_loss: the cross-entropy part of ``loss``.
        center_loss: the sparse center loss ``L_SC`` (before the λ weight).
    """

    features: torch.FloatTensor | None = None
    attention_weights: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    center_loss: torch.FloatTensor | None = None


def _is_single_label(config: DaclConfig, labels: torch.Tensor) -> bool:
    """``config.problem_type``, or transformers' rule when unset: integer labels with num_labels > 1 are single-label."""
    if config.problem_type is not None:
        return config.problem_type == "single_label_classification"
    return config.num_labels > 1 and not labels.dtype.is_floating_point and labels.dtype != torch.bool


class DaclEncodingLayer(nn.Module):
    """One CE-unit layer: Linear → BatchNorm1d → activation."""

    def __init__(self, in_features: int, out_features: int, activation: nn.Module, eps: float, momentum: float):
        super().__init__()
        self.dense = nn.Linear(in_features, out_features)
        self.norm = nn.BatchNorm1d(out_features, eps=eps, momentum=momentum)
        self.activation = activation

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.dense(hidden)))


class DaclAttentionNetwork(nn.Module):
    """Context encoding unit over the flattened trunk map, then one two-way softmax head per feature dimension."""

    def __init__(self, config: DaclConfig):
        super().__init__()
        sizes = [config.hidden_size * config.feature_map_size**2, *config.attention_hidden_sizes]
        last = len(sizes) - 2
        self.encoder = nn.ModuleList(
            DaclEncodingLayer(sizes[i], sizes[i + 1], nn.Tanh() if i == last else nn.ReLU(), config.bn_eps, config.bn_momentum)
            for i in range(len(sizes) - 1)
        )
        self.num_heads = config.num_attention_heads
        self.heads = nn.Linear(sizes[-1], 2 * config.num_attention_heads)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        hidden = feature_map.flatten(1)  # NCHW order: index 49·c + 7·h + w for a 7×7 map
        if self.training and hidden.shape[0] < 2:
            raise ValueError("DACL's attention network uses BatchNorm1d: training needs at least 2 images per batch, got 1")
        for layer in self.encoder:
            hidden = layer(hidden)
        # Head j owns the interleaved outputs (2j, 2j+1); its weight is the probability of the second one.
        head_logits = self.heads(hidden).view(hidden.shape[0], self.num_heads, 2)
        return head_logits.softmax(dim=-1)[..., 1].contiguous()


def _gather_from_all_processes(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor's rows from every process (uneven batch sizes allowed); identity without DDP.

    Upstream trained with ``nn.DataParallel``, so its center update saw the whole batch; gathering keeps the
    per-class counts ``n_j`` (and the update) identical on every rank under DDP/Accelerate.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    world_size = dist.get_world_size()
    local_size = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    dist.all_gather(sizes, local_size)
    sizes = [int(s) for s in sizes]
    gathered = []
    for tensor in tensors:
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(parts, padded.contiguous())
        gathered.append(torch.cat([part[:size] for part, size in zip(parts, sizes)]))
    return tuple(gathered)


class DaclSparseCenterLoss(nn.Module):
    """Attention-weighted center loss with class centers held as a (saved) buffer and upstream's update rule."""

    def __init__(self, num_classes: int, feature_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("centers", torch.zeros(num_classes, feature_dim))

    def check_labels(self, labels: torch.Tensor, batch_size: int) -> None:
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1 or labels.shape[0] != batch_size:
            raise ValueError(
                f"DACL's center loss needs integer class labels of shape [{batch_size}], got dtype {labels.dtype} "
                f"shape {tuple(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}, got {sorted(set(labels.tolist()))}")

    def forward(self, features: torch.Tensor, attention_weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L_SC = Σ_i Σ_j A_ij (f_ij − c_{y_i j})² / (2·batch). Gradients reach ``features`` and ``attention_weights``."""
        self.check_labels(labels, features.shape[0])
        centers = self.centers[labels].to(features.dtype)
        return (attention_weights * (features - centers).pow(2)).sum() / (2 * features.shape[0])

    @torch.no_grad()
    def center_gradient(self, features: torch.Tensor, attention_weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Upstream's (non-autograd) center gradient: ``−Σ_{i: y_i = j} A_i ⊙ (f_i − c_j) / (1 + n_j)``.

        It ignores λ and the batch size on purpose (upstream behaviour); classes absent from the batch get 0.
        """
        self.check_labels(labels, features.shape[0])
        weighted = attention_weights.float() * (features.float() - self.centers[labels].float())
        summed = torch.zeros_like(self.centers, dtype=torch.float32).index_add_(0, labels, weighted)
        counts = torch.bincount(labels, minlength=self.num_classes).float() + 1
        return -(summed / counts[:, None])

    @torch.no_grad()
    def update_centers(self, features: torch.Tensor, attention_weights: torch.Tensor, labels: torch.Tensor, lr: float) -> None:
        """One step of upstream's center SGD (lr ``center_lr``, no momentum, no decay), over all processes' samples."""
        features, attention_weights, labels = _gather_from_all_processes(features.detach(), attention_weights.detach(), labels)
        step = (lr * self.center_gradient(features, attention_weights, labels)).to(self.centers.dtype)
        if torch.compiler.is_compiling():
            # A compiled forward may keep the centers buffer itself for its backward pass (to recompute f − c); an
            # in-place step would invalidate it ("modified by an inplace operation"). A new tensor leaves it intact.
            self.centers = self.centers - step
        else:
            self.centers.sub_(step)


class DaclPreTrainedModel(PreTrainedModel):
    config_class = DaclConfig
    # The head is flat (checkpoint keys predate DaclModel): DaclModel shares its attribute names instead of being
    # stored under a prefix, so either class loads the other's checkpoint key for key, and `base_model` is the model.
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["BasicBlock"]  # torchvision's residual block: its shortcut must stay on one device

    def _init_weights(self, module: nn.Module) -> None:
        """Upstream init: torchvision's for the trunk, Kaiming-normal (fan_in) FCs with zero bias in the attention
        branch, PyTorch's default Linear for the classifier, centers N(0, 2/num_classes)."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if module is getattr(self, "classifier", None):
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                bound = 1 / math.sqrt(module.weight.shape[1])
                init.uniform_(module.bias, -bound, bound)
            else:
                init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            super()._init_weights(module)  # transformers\' norm init: weight 1, bias 0, statistics reset
        elif isinstance(module, DaclSparseCenterLoss):
            # Upstream: kaiming_normal_ on the transposed [dim, classes] view, i.e. fan_in = num_classes.
            init.normal_(module.centers, mean=0.0, std=math.sqrt(2.0 / module.num_classes))

    def trunk(self, pixel_values: torch.Tensor, output_hidden_states: bool = False):
        """ResNet trunk → (B×512×h×w map, stage outputs or ``None``)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(f"pixel_values must be B×{self.config.num_channels}×H×W, got shape {tuple(pixel_values.shape)}")
        hidden_states = [] if output_hidden_states else None
        hidden = pixel_values
        for name, layer in self.backbone.named_children():
            hidden = layer(hidden)
            if hidden_states is not None and name in ("maxpool", "layer1", "layer2", "layer3", "layer4"):
                hidden_states.append(hidden)
        return hidden, (tuple(hidden_states) if hidden_states is not None else None)


class DaclModel(DaclPreTrainedModel):
    """DACL's ResNet trunk without the classifier, attention branch or centers (``AutoModel``; image-feature-extraction).

    Same attribute names as :class:`DaclForImageClassification`, whose checkpoints it loads (the training-only
    parts are left out). ``pooler_output`` is the pooled B×512 feature ``f`` the classifier and center loss read.
    """

    def __init__(self, config: DaclConfig):
        super().__init__(config)
        self.backbone = build_resnet_trunk(config.backbone_depths)
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        feature_map, hidden_states = self.trunk(pixel_values, output_hidden_states=bool(output_hidden_states))
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=feature_map, pooler_output=F.adaptive_avg_pool2d(feature_map, 1).flatten(1),
            hidden_states=hidden_states,
        )


class DaclForImageClassification(DaclPreTrainedModel):
    """DACL classifier. With ``labels`` the loss is CE + λ·L_SC and, in training mode, the centers take one step."""

    def __init__(self, config: DaclConfig):
        super().__init__(config)
        self.backbone = build_resnet_trunk(config.backbone_depths)
        self.attention = DaclAttentionNetwork(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.center_loss = DaclSparseCenterLoss(config.num_labels, config.hidden_size)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attention_weights: bool | None = None,
        **kwargs,
    ) -> DaclImageClassifierOutput:
        """``output_attention_weights`` (default ``config.compute_attention_at_inference``) runs the attention branch
        in an eval forward without labels; it always runs in training and whenever ``labels`` are given.

        Loss by ``config.problem_type`` (inferred from the labels as in transformers when unset):
        ``single_label_classification`` is DACL's CE + λ·L_SC (and the center step in training);
        ``multi_label_classification`` / ``regression`` are transformers' BCE-with-logits / MSE on the logits
        only: the center loss pulls each image to *one* class center, which these targets do not define.
        """
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        feature_map, hidden_states = self.trunk(pixel_values, output_hidden_states=bool(output_hidden_states))
        features = F.adaptive_avg_pool2d(feature_map, 1).flatten(1)
        logits = self.classifier(features)

        single_label = labels is not None and _is_single_label(self.config, labels)
        if single_label:
            labels = labels.to(logits.device)
            self.center_loss.check_labels(labels, logits.shape[0])
        if output_attention_weights is None:
            output_attention_weights = self.config.compute_attention_at_inference
        attention_weights = None
        if single_label or self.training or output_attention_weights:
            attention_weights = self.center_loss_weights(feature_map, features)

        loss = classification_loss = center_loss = None
        if single_label:
            classification_loss = F.cross_entropy(logits, labels)
            center_loss = self.center_loss(features, attention_weights, labels)
            loss = classification_loss + self.config.center_loss_weight * center_loss
            if self.training and self.config.center_lr > 0:
                self.center_loss.update_centers(features, attention_weights, labels, self.config.center_lr)
        elif labels is not None:
            loss = self.loss_function(labels, logits, self.config)

        return DaclImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=hidden_states, features=features,
            attention_weights=attention_weights, classification_loss=classification_loss, center_loss=center_loss,
        )

    def center_loss_weights(self, feature_map: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Per-dimension center-loss weights: the attention network's, or all ones (plain center loss ablation)."""
        if self.config.center_loss_attention == "uniform":
            return torch.ones_like(features)
        expected = self.config.feature_map_size
        if tuple(feature_map.shape[-2:]) != (expected, expected):
            raise ValueError(
                f"a {tuple(feature_map.shape[-2:])} trunk map reaches the attention network, which expects {expected}×{expected} "
                f"(image_size {self.config.image_size}); resize the images"
            )
        return self.attention(feature_map)

    @torch.no_grad()
    def estimate_centers(self, batches: Iterable[Mapping], max_batches: int | None = None) -> torch.Tensor:
        """Set each class center to the attention-weighted mean of its features (the L_SC minimiser) over ``batches``.

        Useful for converted upstream checkpoints, which carry no centers. ``batches`` yields dicts with
        ``"pixel_values"`` and ``"labels"`` (or ``"label"``). Classes never seen keep their center. Returns the centers.
        """
        was_training = self.training
        self.eval()
        weighted_sum = torch.zeros_like(self.center_loss.centers, dtype=torch.float64)
        weight_total = torch.zeros_like(weighted_sum)
        for index, batch in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            labels = batch["labels"] if "labels" in batch else batch["label"]
            labels = torch.as_tensor(labels, device=self.device)
            feature_map, _ = self.trunk(batch["pixel_values"].to(device=self.device, dtype=self.dtype))
            features = F.adaptive_avg_pool2d(feature_map, 1).flatten(1).double()
            weights = self.center_loss_weights(feature_map, features).double()
            self.center_loss.check_labels(labels, features.shape[0])
            weighted_sum.index_add_(0, labels, weights * features)
            weight_total.index_add_(0, labels, weights)
        seen = weight_total > 0
        centers = self.center_loss.centers
        centers[seen] = (weighted_sum[seen] / weight_total[seen]).to(centers.dtype)
        self.train(was_training)
        return centers.clone()

    # Copied from hf_fer.models.arm.modeling_arm.ArmForImageClassification.load_backbone_weights
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


__all__ = [
    "DaclPreTrainedModel", "DaclModel", "DaclForImageClassification", "DaclImageClassifierOutput", "DaclAttentionNetwork",
    "DaclSparseCenterLoss",
]

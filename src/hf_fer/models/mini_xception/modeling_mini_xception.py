"""mini-Xception: a 57k-parameter fully convolutional FER network (Arriaga et al., arXiv 1710.07557).

Data flow for a 64×64 grayscale input (B images), written from the layer graph of the Keras file::

    stem: 2 × [3×3 conv "valid", no bias → BatchNorm → ReLU]                       B×8×60×60
    4 modules (16, 32, 64, 128 filters), each:
        main:     separable 3×3 → BN → ReLU → separable 3×3 → BN → max-pool 3×3/2 "same"
        shortcut: 1×1 conv stride 2 ("same" = no padding for a 1×1 kernel) → BN
        output:   main + shortcut                                                  30 → 15 → 8 → 4
    classifier: 3×3 conv "same" with bias, one map per class → global average pool  B×7 = logits

Keras semantics kept exactly: ``SeparableConv2D`` is a depthwise conv (one 3×3 filter per channel) followed by
a 1×1 pointwise conv, with no bias and no non-linearity in between; BatchNorm epsilon 1e-3; "same" max-pooling
pads TensorFlow's way, i.e. the odd extra pixel goes to the bottom/right and padded cells never win the max. The
logits are the pooled class maps before Keras' final softmax, so ``softmax(logits)`` is the original output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput
from transformers.utils import can_return_tuple

from .configuration_mini_xception import MiniXceptionConfig


def keras_same_max_pool(hidden: torch.Tensor, pool_size: int, stride: int) -> torch.Tensor:
    """``MaxPooling2D(padding="same")``: output side ``ceil(n / stride)``, padding split floor before / ceil after."""
    pads: list[int] = []
    for size in (hidden.shape[-1], hidden.shape[-2]):  # F.pad order: width first
        out = (size + stride - 1) // stride
        total = max((out - 1) * stride + pool_size - size, 0)
        pads += [total // 2, total - total // 2]
    hidden = F.pad(hidden, pads, value=float("-inf"))
    return F.max_pool2d(hidden, pool_size, stride)


class MiniXceptionConvNorm(nn.Module):
    """Convolution without bias, then BatchNorm with Keras' epsilon."""

    def __init__(self, config: MiniXceptionConfig, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int | str = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(hidden))


class MiniXceptionSeparableConvNorm(nn.Module):
    """Keras ``SeparableConv2D(padding="same", use_bias=False)`` then BatchNorm."""

    def __init__(self, config: MiniXceptionConfig, in_channels: int, out_channels: int):
        super().__init__()
        # stride 1: PyTorch's "same" pads like TensorFlow (the extra pixel of an even kernel after, not before)
        self.depthwise = nn.Conv2d(in_channels, in_channels, config.kernel_size, padding="same", groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pointwise(self.depthwise(hidden)))


class MiniXceptionModule(nn.Module):
    """One residual module: two separable convs and a strided max-pool, plus a strided 1×1 shortcut."""

    def __init__(self, config: MiniXceptionConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.pool_size = config.pool_size
        self.separable1 = MiniXceptionSeparableConvNorm(config, in_channels, out_channels)
        self.separable2 = MiniXceptionSeparableConvNorm(config, out_channels, out_channels)
        # A 1×1 kernel with stride 2 needs no padding under Keras "same" for any input size.
        self.shortcut = MiniXceptionConvNorm(config, in_channels, out_channels, 1, stride=2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        main = self.separable2(F.relu(self.separable1(hidden)))
        return keras_same_max_pool(main, self.pool_size, 2) + self.shortcut(hidden)


class MiniXceptionPreTrainedModel(PreTrainedModel):
    config_class = MiniXceptionConfig
    # The head is flat (the shipped checkpoint's keys predate MiniXceptionModel): the base model shares its attribute
    # names instead of being stored under a prefix, so either class loads the other's checkpoint key for key.
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["MiniXceptionModule"]  # main path and shortcut are summed: one device

    def _init_weights(self, module: nn.Module) -> None:
        """Keras' defaults: Glorot-uniform kernels, zero biases, BatchNorm gamma 1 / beta 0 / statistics 0 and 1."""
        if isinstance(module, nn.Conv2d):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            super()._init_weights(module)  # transformers\' norm init: weight 1, bias 0, statistics reset


def _build_trunk(model: nn.Module, config: MiniXceptionConfig) -> int:
    """Give ``model`` the ``stem`` and ``blocks`` of mini-Xception; returns the trunk's output width."""
    channels = [config.num_channels, *config.stem_channels]
    model.stem = nn.ModuleList(
        MiniXceptionConvNorm(config, channels[i], channels[i + 1], config.kernel_size) for i in range(len(config.stem_channels))
    )
    blocks, in_channels = [], config.stem_channels[-1]
    for out_channels in config.block_channels:
        blocks.append(MiniXceptionModule(config, in_channels, out_channels))
        in_channels = out_channels
    model.blocks = nn.ModuleList(blocks)
    return in_channels


def _run_trunk(model: nn.Module, pixel_values: torch.Tensor, output_hidden_states: bool):
    """Stem and residual modules: (last map, per-stage maps or ``None``)."""
    config = model.config
    if pixel_values.ndim != 4 or pixel_values.shape[1] != config.num_channels:
        raise ValueError(
            f"pixel_values must be B×{config.num_channels}×H×W (grayscale: use MiniXceptionImageProcessor), "
            f"got shape {tuple(pixel_values.shape)}"
        )
    hidden_states = [] if output_hidden_states else None
    hidden = pixel_values
    for layer in model.stem:
        hidden = F.relu(layer(hidden))
    if hidden_states is not None:
        hidden_states.append(hidden)
    for block in model.blocks:
        hidden = block(hidden)
        if hidden_states is not None:
            hidden_states.append(hidden)
    return hidden, (tuple(hidden_states) if hidden_states is not None else None)


class MiniXceptionModel(MiniXceptionPreTrainedModel):
    """mini-Xception without its class-map classifier (``AutoModel``; image-feature-extraction).

    Same attribute names as :class:`MiniXceptionForImageClassification`, whose checkpoints it loads.
    ``pooler_output`` is the global average of the last module's map.
    """

    def __init__(self, config: MiniXceptionConfig):
        super().__init__(config)
        _build_trunk(self, config)
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden, hidden_states = _run_trunk(self, pixel_values, bool(output_hidden_states))
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden, pooler_output=hidden.mean(dim=(2, 3)), hidden_states=hidden_states
        )


class MiniXceptionForImageClassification(MiniXceptionPreTrainedModel):
    """mini-Xception classifier; ``forward`` returns an ``ImageClassifierOutput`` (cross-entropy loss with labels)."""

    def __init__(self, config: MiniXceptionConfig):
        super().__init__(config)
        in_channels = _build_trunk(self, config)
        self.classifier = nn.Conv2d(in_channels, config.num_labels, config.kernel_size, padding="same", bias=True)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        r"""``pixel_values``: B×1×64×64 grayscale in [-1, 1] (``MiniXceptionImageProcessor``)."""
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden, hidden_states = _run_trunk(self, pixel_values, bool(output_hidden_states))
        logits = self.classifier(hidden).mean(dim=(2, 3))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)


__all__ = ["MiniXceptionPreTrainedModel", "MiniXceptionModel", "MiniXceptionForImageClassification"]

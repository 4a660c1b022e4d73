"""Neural Resizer: a learned image downscaler (Talebi & Milanfar, "Learning to Resize Images for Computer
Vision Tasks", 2021) that VT-NR puts between the face image and a vision transformer.

Plain resizing throws away detail the classifier might need; the resizer keeps a bilinear resize as an
image-level skip and learns a residual correction from full-resolution features. It has weights and is
trained with the backbone, so it belongs in the model, not in the image processor. It knows nothing
about the backbone or the classes: put it in front of any model that wants smaller images.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_MODES_WITH_ALIGN_CORNERS = ("linear", "bilinear", "bicubic", "trilinear")


def _leaky_relu(hidden_states: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """LeakyReLU in place on a fresh conv/BatchNorm output (their backward never reads their own output).

    In-place saves a full-resolution copy per call (10x faster at batch 32 on CPU); autograd supports the
    in-place form only for a non-negative slope, so a negative one falls back to out-of-place.
    """
    return F.leaky_relu(hidden_states, negative_slope, inplace=negative_slope >= 0)


def _add(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh + other``, in place on ``fresh`` (a conv/BatchNorm output) when that changes neither dtype nor shape
    (under autocast a bf16 conv output plus an fp32 skip must still promote to fp32, as out of place)."""
    if fresh.dtype == other.dtype and fresh.shape == other.shape:
        return fresh.add_(other)
    return fresh + other


class ResizerResidualBlock(nn.Module):
    """conv → BN → LeakyReLU → conv → BN, plus the block input (no activation after the sum)."""

    def __init__(self, channels: int, negative_slope: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(channels)
        self.negative_slope = negative_slope

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        hidden_states = _leaky_relu(self.norm1(self.conv1(hidden_states)), self.negative_slope)
        return _add(self.norm2(self.conv2(hidden_states)), residual)


class NeuralResizer(nn.Module):
    """Learned resizer: ``[B, C, H, W] → [B, C, h, w]``.

    Forward (``down`` = ``F.interpolate`` with ``scale_factor`` or ``output_size``)::

        features = BN(lrelu(conv1x1(lrelu(conv7x7(x)))))      # full resolution
        low      = down(features)
        out      = conv7x7(BN(conv3x3(res_blocks(low))) + low) + down(x)

    Args:
        num_channels: image channels (in and out).
        hidden_channels: feature channels (``n``; VT-NR: 16).
        num_res_blocks: residual blocks at the low resolution (``r``; VT-NR: 1).
        scale_factor: resize factor handed to ``F.interpolate``. VT-NR uses 0.584 for 384 → 224: the factor
            itself (not 224/384) positions the samples, exactly like upstream.
        output_size: alternatively a fixed output size ``int`` or ``(h, w)``; give one of the two.
        negative_slope: LeakyReLU slope.
        interpolation: ``F.interpolate`` mode of both skips (align_corners=False, no antialias).
    """

    def __init__(
        self,
        num_channels: int = 3,
        hidden_channels: int = 16,
        num_res_blocks: int = 1,
        scale_factor: float | None = 0.584,
        output_size: int | tuple[int, int] | None = None,
        negative_slope: float = 0.2,
        interpolation: str = "bilinear",
    ):
        super().__init__()
        if (scale_factor is None) == (output_size is None):
            raise ValueError(f"give exactly one of scale_factor ({scale_factor}) and output_size ({output_size})")
        self.scale_factor = scale_factor
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else output_size
        self.negative_slope = negative_slope
        self.interpolation = interpolation

        self.stem_conv = nn.Conv2d(num_channels, hidden_channels, 7, padding=3)
        self.stem_pointwise = nn.Conv2d(hidden_channels, hidden_channels, 1)
        self.stem_norm = nn.BatchNorm2d(hidden_channels)
        self.res_blocks = nn.ModuleList(ResizerResidualBlock(hidden_channels, negative_slope) for _ in range(num_res_blocks))
        self.post_conv = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1)
        self.post_norm = nn.BatchNorm2d(hidden_channels)
        self.out_conv = nn.Conv2d(hidden_channels, num_channels, 7, padding=3)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """The plain (non-learned) resize used by both skip connections."""
        align_corners = False if self.interpolation in _MODES_WITH_ALIGN_CORNERS else None
        if self.output_size is not None:
            return F.interpolate(images, size=self.output_size, mode=self.interpolation, align_corners=align_corners)
        return F.interpolate(images, scale_factor=self.scale_factor, mode=self.interpolation, align_corners=align_corners)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # In-place activations and sums only ever overwrite fresh conv/BatchNorm outputs, which no backward reads.
        image_skip = self.resize(pixel_values)
        features = _leaky_relu(self.stem_conv(pixel_values), self.negative_slope)
        features = self.stem_norm(_leaky_relu(self.stem_pointwise(features), self.negative_slope))
        feature_skip = self.resize(features)
        hidden_states = feature_skip
        for block in self.res_blocks:
            hidden_states = block(hidden_states)
        hidden_states = _add(self.post_norm(self.post_conv(hidden_states)), feature_skip)
        return _add(self.out_conv(hidden_states), image_skip)

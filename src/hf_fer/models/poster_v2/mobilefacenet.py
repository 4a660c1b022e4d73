"""The landmark branch of POSTER V2: the feature extractor of a MobileFaceNet 68-point landmark regressor.

POSTER V2 loads a pretrained MobileFaceNet landmark network, freezes it and reads three of its
intermediate maps (28x28, 14x14 and 7x7 for a 112x112 input). Only the layers that produce those maps
are built here; the network's landmark-regression head is computed and discarded upstream, so it is
left out (the converter drops its weights).
"""
from __future__ import annotations

import torch
from torch import nn


class ConvNormActivation(nn.Sequential):
    """Convolution (no bias) -> BatchNorm -> optional per-channel PReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.norm = nn.BatchNorm2d(out_channels)
        if activation:
            self.activation = nn.PReLU(out_channels)


class InvertedBottleneck(nn.Module):
    """1x1 expansion -> 3x3 depthwise (carries the stride) -> 1x1 linear projection, optional residual."""

    def __init__(self, in_channels: int, expansion_channels: int, out_channels: int, stride: int, residual: bool):
        super().__init__()
        if residual and (stride != 1 or in_channels != out_channels):
            raise ValueError("a residual bottleneck needs stride 1 and equal input/output widths")
        self.residual = residual
        self.expand = ConvNormActivation(in_channels, expansion_channels)
        self.depthwise = ConvNormActivation(
            expansion_channels, expansion_channels, kernel_size=3, stride=stride, groups=expansion_channels
        )
        self.project = ConvNormActivation(expansion_channels, out_channels, activation=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.project(self.depthwise(self.expand(hidden_states)))
        return hidden_states + output if self.residual else output


def _landmark_stage(in_channels: int, out_channels: int, downsample_expansion: int, block_expansion: int, depth: int) -> nn.Sequential:
    """A strided bottleneck (no residual) followed by `depth` residual bottlenecks."""
    blocks = [InvertedBottleneck(in_channels, downsample_expansion, out_channels, stride=2, residual=False)]
    blocks += [InvertedBottleneck(out_channels, block_expansion, out_channels, stride=1, residual=True) for _ in range(depth)]
    return nn.Sequential(*blocks)


class MobileFaceNetLandmarkBackbone(nn.Module):
    """Returns the three landmark maps POSTER V2 uses as cross-attention queries.

    For a 112x112 input: 64x28x28, 128x14x14 and (after `final_expansion`) 512x7x7.
    """

    def __init__(
        self,
        num_channels: int = 3,
        stem_channels: int = 64,
        stage_channels=(64, 128, 128),
        downsample_expansions=(128, 256, 512),
        block_expansions=(128, 256, 256),
        stage_depths=(4, 6, 2),
        output_channels: int = 512,
        frozen: bool = True,
        freeze_batchnorm: bool = False,
    ):
        super().__init__()
        self.frozen = frozen
        self.freeze_batchnorm = freeze_batchnorm
        self.stem = ConvNormActivation(num_channels, stem_channels, kernel_size=3, stride=2)
        self.stem_depthwise = ConvNormActivation(stem_channels, stem_channels, kernel_size=3, groups=stem_channels)
        in_channels = stem_channels
        stages = []
        for out_channels, down_expansion, expansion, depth in zip(
            stage_channels, downsample_expansions, block_expansions, stage_depths
        ):
            stages.append(_landmark_stage(in_channels, out_channels, down_expansion, expansion, depth))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.final_expansion = ConvNormActivation(in_channels, output_channels)
        if frozen:
            self.requires_grad_(False)

    def train(self, mode: bool = True):
        """Switch train/eval mode, keeping the frozen parts frozen.

        `frozen` weights never require gradients: this is re-asserted here because `from_pretrained` replaces
        the parameters (with `requires_grad=True`) and then calls `eval()`; `Trainer` calls `train()`. With
        `freeze_batchnorm`, BatchNorm layers stay in eval mode (stored statistics, never updated); without it
        they follow `mode` as upstream (batch statistics and running-statistics updates in training).
        """
        super().train(mode)
        if self.frozen:
            self.requires_grad_(False)
        if self.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden_states = self.stem_depthwise(self.stem(pixel_values))
        first = self.stages[0](hidden_states)
        second = self.stages[1](first)
        third = self.final_expansion(self.stages[2](second))
        return first, second, third

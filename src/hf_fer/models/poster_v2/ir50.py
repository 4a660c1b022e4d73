"""The image branch of POSTER V2: the first three stages of an ArcFace-style IR-50 (improved residual) network.

POSTER V2 reads the outputs of stages 1-3 (64x56x56, 128x28x28, 256x14x14 for a 112x112 input). The
standard fourth stage does not exist in POSTER V2 and the embedding head upstream keeps is never run, so
neither is built here.
"""
from __future__ import annotations

import torch
from torch import nn


class IRUnit(nn.Module):
    """Improved residual unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (strided) -> BN, plus a shortcut.

    There is no activation after the sum. The shortcut subsamples (a parameter-free 1x1 max-pool) when
    the width is unchanged, and is a strided 1x1 convolution + BN otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.activation = nn.PReLU(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        if in_channels == out_channels:
            # upstream uses MaxPool2d(1, stride) here: plain subsampling, an identity for stride 1
            self.shortcut = nn.MaxPool2d(kernel_size=1, stride=stride) if stride > 1 else nn.Identity()
        else:
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))
            self.shortcut.add_module("norm", nn.BatchNorm2d(out_channels))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = self.norm2(self.conv2(self.activation(self.conv1(self.norm1(hidden_states)))))
        return residual + self.shortcut(hidden_states)


class IR50Backbone(nn.Module):
    """Stem + three IR stages; returns the output of every stage."""

    def __init__(self, num_channels: int = 3, stem_channels: int = 64, stage_channels=(64, 128, 256), stage_depths=(3, 4, 14)):
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(num_channels, stem_channels, 3, padding=1, bias=False))
        self.stem.add_module("norm", nn.BatchNorm2d(stem_channels))
        self.stem.add_module("activation", nn.PReLU(stem_channels))
        stages = []
        in_channels = stem_channels
        for out_channels, depth in zip(stage_channels, stage_depths):
            units = [IRUnit(in_channels, out_channels, stride=2)]
            units += [IRUnit(out_channels, out_channels, stride=1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden_states = self.stem(pixel_values)
        outputs = []
        for stage in self.stages:
            hidden_states = stage(hidden_states)
            outputs.append(hidden_states)
        return tuple(outputs)

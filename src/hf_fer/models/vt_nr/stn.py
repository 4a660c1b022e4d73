"""Spatial transformer network (Jaderberg et al., 2015) as used by VT-NR: learn one affine warp per image.

A small CNN looks at the image, a two-layer regressor predicts a 2×3 affine matrix, and the image is
resampled through it. The regressor's last layer starts at the identity transform, so an untrained STN
passes images through unchanged. The regressor's input width is fixed by the image size at
construction, which is why this module only accepts one input size and says so clearly.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# theta of the identity warp, flattened row-major: [[1, 0, 0], [0, 1, 0]].
IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def localization_output_size(image_size: int, kernel_sizes: list[int] | tuple[int, ...]) -> int:
    """Side of the localisation net's output: each stage is a valid convolution then a 2×2 max-pool."""
    size = image_size
    for kernel_size in kernel_sizes:
        size = (size - (kernel_size - 1)) // 2
    if size < 1:
        raise ValueError(f"image_size {image_size} is too small for the STN localisation kernels {list(kernel_sizes)}")
    return size


class AffineRegressor(nn.Linear):
    """The STN's last layer, ``hidden → 6``: initialised to output the identity transform for any input."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, 6)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        self.bias.copy_(torch.tensor(IDENTITY_AFFINE))


class SpatialTransformerNetwork(nn.Module):
    """Predicts an affine matrix ``theta [B, 2, 3]`` from the image and warps the image with it (same size).

    Args:
        image_size: the only accepted input side (the regressor's input width depends on it).
        num_channels: image channels.
        conv_channels: output channels of the localisation convolutions.
        conv_kernel_sizes: their kernel sizes (no padding, each followed by 2×2 max-pool and ReLU).
        hidden_size: width of the regressor's hidden layer.

    Sampling uses ``align_corners=True`` and zero padding, on whatever tensor it is given (VT-NR warps the
    already-normalised image, so outside pixels become 0, i.e. the dataset's mean colour).
    """

    def __init__(
        self,
        image_size: int = 384,
        num_channels: int = 3,
        conv_channels: list[int] | tuple[int, ...] = (8, 10),
        conv_kernel_sizes: list[int] | tuple[int, ...] = (7, 5),
        hidden_size: int = 32,
    ):
        super().__init__()
        self.image_size = image_size
        self.num_channels = num_channels
        convs = []
        in_channels = num_channels
        for out_channels, kernel_size in zip(conv_channels, conv_kernel_sizes):
            convs.append(nn.Conv2d(in_channels, out_channels, kernel_size))
            in_channels = out_channels
        self.localization_convs = nn.ModuleList(convs)
        self.pool = nn.MaxPool2d(2, stride=2)
        side = localization_output_size(image_size, conv_kernel_sizes)
        self.localization_fc = nn.Linear(in_channels * side * side, hidden_size)
        self.theta_fc = AffineRegressor(hidden_size)

    def check_input(self, pixel_values: torch.Tensor) -> None:
        expected = (self.num_channels, self.image_size, self.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"the STN needs pixel_values of shape [batch, {expected[0]}, {expected[1]}, {expected[2]}] (its regressor "
                f"width is fixed by image_size={self.image_size}), got {list(pixel_values.shape)}; preprocess images with "
                f"the model's image processor, which resizes them to {self.image_size}x{self.image_size}"
            )

    def predict_theta(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The affine matrices ``[B, 2, 3]`` (normalised coordinates, as ``F.affine_grid`` expects)."""
        self.check_input(pixel_values)
        features = pixel_values
        for conv in self.localization_convs:
            features = F.relu(self.pool(conv(features)))
        hidden = F.relu(self.localization_fc(features.flatten(1)))
        return self.theta_fc(hidden).view(-1, 2, 3)

    @staticmethod
    def warp(pixel_values: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Resample ``pixel_values`` through the affine matrices ``theta`` (bilinear, zero padding, same size)."""
        grid = F.affine_grid(theta, list(pixel_values.shape), align_corners=True)
        return F.grid_sample(pixel_values, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(warped image [B, C, H, W], theta [B, 2, 3])``."""
        theta = self.predict_theta(pixel_values)
        return self.warp(pixel_values, theta), theta

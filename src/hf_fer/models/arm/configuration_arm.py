"""Configuration of ARM, the Amend Representation Module network (Shi & Zhu, arXiv 2103.10189)."""
from __future__ import annotations

from transformers import PretrainedConfig

AFFINITY_MODES = ("batch", "running")


def resnet_output_size(image_size: int, num_stages: int = 4) -> int:
    """Side of the last feature map of a torchvision ResNet for a square ``image_size`` input.

    Stem: 7×7/2 conv (pad 3) then 3×3/2 max-pool (pad 1); stages 2-4 each halve with a 3×3/2 conv (pad 1).
    Every one of these maps ``n`` to ``floor((n - 1) / 2) + 1``.
    """
    size = image_size
    for _ in range(2 + num_stages - 1):
        size = (size - 1) // 2 + 1
    return size


class ArmConfig(PretrainedConfig):
    r"""Configuration of [`ArmForImageClassification`].

    Defaults reproduce the released RAF-DB model (upstream class ``ResNet18_ARM___RAF``): a torchvision
    ResNet-18 trunk, a 16× pixel shuffle turning the 512×7×7 map into 2×112×112, one shared 32×32/8
    "de-albino" kernel, BatchNorm2d(2), and the "affinity" term ``alpha × (map shared over the batch)``.

    Args:
        num_channels: input channels (the torchvision trunk takes RGB).
        backbone_depths: BasicBlocks per ResNet stage (``[2, 2, 2, 2]`` is ResNet-18).
        hidden_size: channels of the last ResNet stage (512 for torchvision BasicBlock ResNets).
        image_size: square input side the classifier is sized for (193-224 all give a 7×7 trunk map).
        pixel_shuffle_factor: upscale factor of the "arrangement" pixel shuffle.
        de_albino_kernel_size / de_albino_stride / de_albino_padding / de_albino_bias: the single shared
            de-albino convolution applied to every shuffled channel.
        arm_bn_eps / arm_bn_momentum: the BatchNorm2d over the de-albino maps.
        alpha_init: initial value of the learned affinity weight ``alpha``.
        affinity_mode: ``"batch"`` is upstream: the shared map is the mean over the images *in the
            current forward call*, so an image's prediction depends on its neighbours (even in eval).
            ``"running"`` uses the batch mean only in training and a running estimate of it at eval,
            so one image always gives one answer. Converted upstream checkpoints load in ``"batch"`` mode
            (they carry no running estimate); see ``ArmForImageClassification.calibrate_affinity``. In
            ``"batch"`` mode a single image (e.g. a pipeline call) gets ``(1 + alpha)`` times its own map.
        affinity_momentum: momentum of the running estimate update in training (like BatchNorm's).
        drop_rate: dropout before the classifier (upstream default 0). Upstream builds its dropout inside
            ``forward``, so it would also fire at eval; ours is a regular ``nn.Dropout`` (inactive at eval).
        classifier_in_features: derived from the sizes above; given only to double-check a saved config.
    """

    model_type = "arm"

    def __init__(
        self,
        num_channels: int = 3,
        backbone_depths: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        hidden_size: int = 512,
        image_size: int = 224,
        pixel_shuffle_factor: int = 16,
        de_albino_kernel_size: int = 32,
        de_albino_stride: int = 8,
        de_albino_padding: int = 0,
        de_albino_bias: bool = False,
        arm_bn_eps: float = 1e-5,
        arm_bn_momentum: float = 0.1,
        alpha_init: float = 1.0,
        affinity_mode: str = "running",
        affinity_momentum: float = 0.1,
        drop_rate: float = 0.0,
        classifier_in_features: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("problem_type", "single_label_classification")
        if "id2label" not in kwargs:
            kwargs.setdefault("num_labels", 7)
        super().__init__(**kwargs)
        if num_channels != 3:
            raise ValueError(f"num_channels must be 3 (the torchvision ResNet trunk takes RGB), got {num_channels}")
        if hidden_size != 512:
            raise ValueError(f"hidden_size must be 512 (the last stage width of a torchvision BasicBlock ResNet), got {hidden_size}")
        if len(backbone_depths) != 4 or any(int(d) < 1 for d in backbone_depths):
            raise ValueError(f"backbone_depths must list 4 positive block counts, got {list(backbone_depths)}")
        if affinity_mode not in AFFINITY_MODES:
            raise ValueError(f"affinity_mode must be one of {AFFINITY_MODES}, got {affinity_mode!r}")
        if hidden_size % (pixel_shuffle_factor**2) != 0:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by pixel_shuffle_factor² = {pixel_shuffle_factor ** 2}"
            )
        self.num_channels = num_channels
        self.backbone_depths = [int(d) for d in backbone_depths]
        self.hidden_size = hidden_size
        self.image_size = image_size
        self.pixel_shuffle_factor = pixel_shuffle_factor
        self.de_albino_kernel_size = de_albino_kernel_size
        self.de_albino_stride = de_albino_stride
        self.de_albino_padding = de_albino_padding
        self.de_albino_bias = de_albino_bias
        self.arm_bn_eps = arm_bn_eps
        self.arm_bn_momentum = arm_bn_momentum
        self.alpha_init = alpha_init
        self.affinity_mode = affinity_mode
        self.affinity_momentum = affinity_momentum
        self.drop_rate = drop_rate

        side = self.affinity_map_size
        if side < 1:
            raise ValueError(
                f"image_size {image_size} is too small: the {self.shuffled_map_size}-pixel shuffled map is smaller than "
                f"the de-albino kernel ({de_albino_kernel_size})"
            )
        if classifier_in_features is not None and classifier_in_features != side * side:
            raise ValueError(
                f"classifier_in_features {classifier_in_features} does not match the sizes in this config "
                f"(image_size {image_size} → {side}×{side} affinity map = {side * side} features)"
            )
        self.classifier_in_features = side * side

    @property
    def arm_channels(self) -> int:
        """Channels after the pixel shuffle (2 for 512 channels and factor 16)."""
        return self.hidden_size // self.pixel_shuffle_factor**2

    @property
    def shuffled_map_size(self) -> int:
        return resnet_output_size(self.image_size) * self.pixel_shuffle_factor

    @property
    def affinity_map_size(self) -> int:
        """Side of the de-albino output map (11 for the upstream sizes)."""
        padded = self.shuffled_map_size + 2 * self.de_albino_padding
        return (padded - self.de_albino_kernel_size) // self.de_albino_stride + 1


__all__ = ["ArmConfig"]

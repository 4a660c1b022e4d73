"""Configuration of DACL, Deep Attentive Center Loss (Farzaneh & Qi, WACV 2021)."""
from __future__ import annotations

from transformers import PretrainedConfig


def resnet_output_size(image_size: int, num_stages: int = 4) -> int:
    """Side of the last feature map of a torchvision ResNet for a square ``image_size`` input.

    Stem: 7×7/2 conv (pad 3) then 3×3/2 max-pool (pad 1); stages 2-4 each halve with a 3×3/2 conv (pad 1).
    Every one of these maps ``n`` to ``floor((n - 1) / 2) + 1``.
    """
    size = image_size
    for _ in range(2 + num_stages - 1):
        size = (size - 1) // 2 + 1
    return size


CENTER_LOSS_ATTENTION = ("learned", "uniform")


class DaclConfig(PretrainedConfig):
    r"""Configuration of [`DaclForImageClassification`].

    Defaults are upstream's (``models/resnet.py`` + ``workspace.py``): a torchvision ResNet-18 trunk whose pooled
    512-d features feed the classifier, and an attention network (the "CE-unit" FC-BN-ReLU, FC-BN-ReLU,
    FC-BN-tanh over the *flattened* 512×7×7 map, then 512 two-way heads) whose per-dimension weights only
    enter the sparse center loss.

    Args:
        num_channels: input channels (the torchvision trunk takes RGB).
        backbone_depths: BasicBlocks per ResNet stage (``[2, 2, 2, 2]`` is ResNet-18).
        hidden_size: pooled feature size = center dimension (512 for BasicBlock ResNets).
        image_size: square input side; the first attention FC is sized for its ``feature_map_size``² map.
        attention_hidden_sizes: output widths of the three CE-unit layers.
        num_attention_heads: two-logit heads, one per feature dimension (must equal ``hidden_size``).
        bn_eps / bn_momentum: the CE-unit's BatchNorm1d layers.
        center_loss_weight: λ in ``loss = CE + λ·L_SC``; 0 trains with softmax (cross-entropy) only.
        center_loss_attention: ``"learned"`` (DACL: the attention network weighs each feature dimension) or
            ``"uniform"`` (every weight 1: the plain center loss of Wen et al. with the same center update, the
            ablation of the FER2013 report; the attention network is then never run and gets no gradient, so
            multi-process training needs ``find_unused_parameters``).
        center_lr: rate of upstream's center update ``c_j ← c_j + lr·Σ_{i:y_i=j} a_i⊙(f_i − c_j)/(1 + n_j)``,
            applied in training forwards with labels (the centers are a buffer, outside any optimizer).
            0 freezes the centers.
        compute_attention_at_inference: run the attention branch in eval forwards without labels (its weights are
            returned as ``attention_weights``). Off by default: the logits never depend on it, and its 25,088×3,584
            first layer (~360 MB) costs ~30 % of batch-1 CPU time. A forward can still ask for it with
            ``output_attention_weights=True``; training forwards and forwards with labels always compute it.
        feature_map_size: derived from ``image_size``; given only to double-check a saved config.
    """

    model_type = "dacl"
    # Trainer.predict/evaluate collect only the logits, not the training intermediates.
    keys_to_ignore_at_inference = ["features", "attention_weights", "classification_loss", "center_loss"]

    def __init__(
        self,
        num_channels: int = 3,
        backbone_depths: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        hidden_size: int = 512,
        image_size: int = 224,
        attention_hidden_sizes: list[int] | tuple[int, ...] = (3584, 512, 64),
        num_attention_heads: int = 512,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        center_loss_weight: float = 0.01,
        center_loss_attention: str = "learned",
        center_lr: float = 0.5,
        compute_attention_at_inference: bool = False,
        feature_map_size: int | None = None,
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
        if num_attention_heads != hidden_size:
            raise ValueError(f"num_attention_heads ({num_attention_heads}) must equal hidden_size ({hidden_size}): one head per feature")
        if len(attention_hidden_sizes) < 1:
            raise ValueError("attention_hidden_sizes must list at least one layer width")
        if center_loss_attention not in CENTER_LOSS_ATTENTION:
            raise ValueError(f"center_loss_attention must be one of {CENTER_LOSS_ATTENTION}, got {center_loss_attention!r}")
        derived = resnet_output_size(image_size)
        if feature_map_size is not None and feature_map_size != derived:
            raise ValueError(f"feature_map_size {feature_map_size} does not match image_size {image_size} (gives {derived})")
        self.num_channels = num_channels
        self.backbone_depths = [int(d) for d in backbone_depths]
        self.hidden_size = hidden_size
        self.image_size = image_size
        self.feature_map_size = derived
        self.attention_hidden_sizes = [int(s) for s in attention_hidden_sizes]
        self.num_attention_heads = num_attention_heads
        self.bn_eps = bn_eps
        self.bn_momentum = bn_momentum
        self.center_loss_weight = center_loss_weight
        self.center_loss_attention = center_loss_attention
        self.center_lr = center_lr
        self.compute_attention_at_inference = compute_attention_at_inference


__all__ = ["DaclConfig"]

"""Configuration of POSTER V2 (POSTER++), Mao et al., arXiv 2301.12149."""
from __future__ import annotations

from collections.abc import Sequence

from transformers import PretrainedConfig


def _stride2_size(size: int) -> int:
    """Output size of a 3x3 convolution with stride 2 and padding 1."""
    return (size - 1) // 2 + 1


class PosterV2Config(PretrainedConfig):
    r"""
    Configuration of [`PosterV2ForImageClassification`]. The defaults reproduce the published model
    (IR-50 image branch, frozen MobileFaceNet landmark branch, three-scale window cross-attention,
    a 2-block ViT, SE gate and linear head): 43,753,941 parameters for 7 classes.

    The same class serves the 7-class (RAF-DB, AffectNet-7, CAER-S) and 8-class (AffectNet-8)
    checkpoints through `num_labels`.

    Args:
        num_channels: input channels.
        image_size: side of the image the processor produces (224 upstream). The model itself accepts
            any size: it resamples its input to `internal_size` first.
        internal_size: side both backbones see. Upstream nearest-resamples every input to 112x112 with
            PyTorch's legacy `"nearest"` mode (for a 224 input: every second pixel).
        landmark_stem_channels: MobileFaceNet stem width.
        landmark_stage_channels: output width of the three landmark stages (28x28, 14x14, 7x7 maps).
        landmark_downsample_expansions: expansion width of the strided bottleneck opening each stage.
        landmark_block_expansions: expansion width of the residual bottlenecks of each stage.
        landmark_stage_depths: number of residual bottlenecks per stage.
        landmark_output_channels: width of the final 1x1 landmark convolution (before the projection to
            the third cross-attention width).
        freeze_landmark_backbone: upstream freezes the pretrained landmark network (`requires_grad=False`).
        freeze_landmark_batchnorm: `False` (upstream): in training the frozen landmark network's BatchNorm
            layers still normalise with batch statistics and update their running statistics (upstream never
            puts it in eval mode). `True`: they always use, and never change, their stored statistics.
        ir_stem_channels: IR-50 stem width.
        ir_stage_channels: IR-50 stage widths; also the widths of the three cross-attention scales.
        ir_stage_depths: IR units per IR-50 stage (only the first three stages of IR-50 exist).
        cross_attention_heads: attention heads per scale.
        window_size: attention window per scale; it must equal the feature-map side (one window covers the
            whole map), so it is fixed by `internal_size`.
        cross_attention_qkv_bias: bias of the key/value projection.
        cross_attention_qk_scale: attention scale, `None` = head_dim ** -0.5.
        cross_attention_dropout: dropout on the attention probabilities.
        cross_attention_output_dropout: dropout after the attention output projection.
        cross_attention_mlp_ratio: MLP width / feature width after the cross-attention.
        cross_attention_mlp_dropout: dropout inside that MLP.
        cross_attention_drop_path: stochastic-depth rate of each scale.
        layer_scale_init_value: initial value of the layer-scale vectors.
        cross_attention_layer_norm_eps: epsilon of the cross-attention LayerNorms.
        hidden_size: token width of the fusion ViT.
        num_hidden_layers: ViT blocks.
        num_attention_heads: ViT attention heads.
        intermediate_size: ViT MLP width.
        hidden_act: activation of every MLP.
        qkv_bias: bias of the ViT query/key/value projection.
        layer_norm_eps: epsilon of the ViT LayerNorms.
        hidden_dropout_prob: dropout after the embeddings and in the ViT MLP/projections.
        attention_probs_dropout_prob: ViT attention dropout.
        drop_path_rate: ViT stochastic-depth rate (linearly increasing over the blocks).
        initializer_range: std of the truncated normal init of the class token, position embeddings and
            relative-position tables.
        linear_initializer_range: std of the truncated normal init of the ViT, SE-gate and classifier
            linear layers.
    """

    model_type = "poster_v2"

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int = 224,
        internal_size: int = 112,
        landmark_stem_channels: int = 64,
        landmark_stage_channels: Sequence[int] = (64, 128, 128),
        landmark_downsample_expansions: Sequence[int] = (128, 256, 512),
        landmark_block_expansions: Sequence[int] = (128, 256, 256),
        landmark_stage_depths: Sequence[int] = (4, 6, 2),
        landmark_output_channels: int = 512,
        freeze_landmark_backbone: bool = True,
        freeze_landmark_batchnorm: bool = False,
        ir_stem_channels: int = 64,
        ir_stage_channels: Sequence[int] = (64, 128, 256),
        ir_stage_depths: Sequence[int] = (3, 4, 14),
        cross_attention_heads: Sequence[int] = (2, 4, 8),
        window_size: Sequence[int] | None = None,
        cross_attention_qkv_bias: bool = True,
        cross_attention_qk_scale: float | None = None,
        cross_attention_dropout: float = 0.0,
        cross_attention_output_dropout: float = 0.0,
        cross_attention_mlp_ratio: float = 4.0,
        cross_attention_mlp_dropout: float = 0.0,
        cross_attention_drop_path: Sequence[float] = (0.0, 0.125, 0.25),
        layer_scale_init_value: float = 1e-5,
        cross_attention_layer_norm_eps: float = 1e-5,
        hidden_size: int = 768,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 8,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        initializer_range: float = 0.02,
        linear_initializer_range: float = 0.01,
        **kwargs,
    ):
        if "num_labels" not in kwargs and kwargs.get("id2label") is None:
            kwargs["num_labels"] = 7  # the upstream default (RAF-DB, AffectNet-7, CAER-S)
        kwargs.setdefault("problem_type", "single_label_classification")
        super().__init__(**kwargs)
        self.num_channels = num_channels
        self.image_size = image_size
        self.internal_size = internal_size
        self.landmark_stem_channels = landmark_stem_channels
        self.landmark_stage_channels = list(landmark_stage_channels)
        self.landmark_downsample_expansions = list(landmark_downsample_expansions)
        self.landmark_block_expansions = list(landmark_block_expansions)
        self.landmark_stage_depths = list(landmark_stage_depths)
        self.landmark_output_channels = landmark_output_channels
        self.freeze_landmark_backbone = freeze_landmark_backbone
        self.freeze_landmark_batchnorm = freeze_landmark_batchnorm
        self.ir_stem_channels = ir_stem_channels
        self.ir_stage_channels = list(ir_stage_channels)
        self.ir_stage_depths = list(ir_stage_depths)
        self.cross_attention_heads = list(cross_attention_heads)
        self.window_size = list(window_size) if window_size is not None else self.feature_map_sizes
        self.cross_attention_qkv_bias = cross_attention_qkv_bias
        self.cross_attention_qk_scale = cross_attention_qk_scale
        self.cross_attention_dropout = cross_attention_dropout
        self.cross_attention_output_dropout = cross_attention_output_dropout
        self.cross_attention_mlp_ratio = cross_attention_mlp_ratio
        self.cross_attention_mlp_dropout = cross_attention_mlp_dropout
        self.cross_attention_drop_path = list(cross_attention_drop_path)
        self.layer_scale_init_value = layer_scale_init_value
        self.cross_attention_layer_norm_eps = cross_attention_layer_norm_eps
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.qkv_bias = qkv_bias
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.linear_initializer_range = linear_initializer_range
        self._validate_poster_v2()

    @property
    def feature_map_sizes(self) -> list[int]:
        """Sides of the three cross-attention maps: internal_size/4, /8, /16 (28, 14, 7 upstream)."""
        size = _stride2_size(_stride2_size(self.internal_size))
        return [size, _stride2_size(size), _stride2_size(_stride2_size(size))]

    @property
    def num_patches_per_scale(self) -> int:
        """Tokens each scale contributes to the ViT (7x7 = 49 upstream)."""
        side = _stride2_size(self.feature_map_sizes[1])
        return side * side

    def _validate_poster_v2(self) -> None:
        per_scale = {
            "landmark_stage_channels": self.landmark_stage_channels,
            "landmark_downsample_expansions": self.landmark_downsample_expansions,
            "landmark_block_expansions": self.landmark_block_expansions,
            "landmark_stage_depths": self.landmark_stage_depths,
            "ir_stage_channels": self.ir_stage_channels,
            "ir_stage_depths": self.ir_stage_depths,
            "cross_attention_heads": self.cross_attention_heads,
            "window_size": self.window_size,
            "cross_attention_drop_path": self.cross_attention_drop_path,
        }
        for name, values in per_scale.items():
            if len(values) != 3:
                raise ValueError(f"PosterV2Config.{name} needs one value per scale (3), got {values}")
        if self.landmark_stage_channels[:2] != self.ir_stage_channels[:2]:
            raise ValueError(
                "the landmark maps are the queries of the first two cross-attention scales, so "
                f"landmark_stage_channels[:2] must equal ir_stage_channels[:2]; got {self.landmark_stage_channels[:2]} "
                f"vs {self.ir_stage_channels[:2]}"
            )
        for dim, heads in zip(self.ir_stage_channels, self.cross_attention_heads):
            if dim % heads:
                raise ValueError(f"cross-attention width {dim} is not divisible by {heads} heads")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.window_size != self.feature_map_sizes:
            raise ValueError(
                f"window_size must equal the cross-attention map sizes {self.feature_map_sizes} for internal_size "
                f"{self.internal_size} (one window covers the whole map), got {self.window_size}"
            )

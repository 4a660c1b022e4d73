"""POSTER V2 (POSTER++): "A simpler and stronger facial expression recognition network", Mao et al. 2023.

Data flow (upstream shapes for a 224x224 input; see `PosterV2Model.forward`):

1. the image is nearest-resampled to 112x112 (PyTorch's legacy "nearest": for 224, every second pixel);
2. a frozen MobileFaceNet landmark network gives three landmark maps (28, 14, 7 pixels a side) and the
   first three IR-50 stages give three image maps, brought to the same sides by strided 3x3 convs;
3. at each scale the image features attend to the landmark features (landmarks are the queries, one
   attention window covers the whole map, Swin-style relative-position bias), then a layer-scaled MLP;
4. the three fused maps become 3 x 49 tokens of width 768, a class token is prepended and a 2-block ViT
   mixes them;
5. the normalised class token goes through a sigmoid squeeze-excitation gate and a linear classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple

from .configuration_poster_v2 import PosterV2Config
from .ir50 import IR50Backbone
from .mobilefacenet import MobileFaceNetLandmarkBackbone


def legacy_nearest_resize(pixel_values: torch.Tensor, size: int) -> torch.Tensor:
    """Upstream's input resampling: `F.interpolate(mode="nearest")`, source index = floor(dst * in / out).

    Bilinear or "nearest-exact" resampling changes the logits by up to ~1.4: keep this exact mode.
    """
    if pixel_values.shape[-2:] == (size, size):
        return pixel_values
    return F.interpolate(pixel_values, size=(size, size), mode="nearest")


def relative_position_index(window_size: int) -> torch.Tensor:
    """Swin-style index into the (2w-1)^2 relative-position table for every (query, key) token pair."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention returning its weights (transformers' eager convention: output is [B, N, heads, d])."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def attention_function(config: PosterV2Config, output_attentions: bool):
    """``config._attn_implementation``'s kernel (SDPA by default); the eager path whenever weights are asked for."""
    if output_attentions:
        return eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


# ---------------------------------------------------------------------------------------------------------
# Cross-attention between image and landmark features (one per scale)
# ---------------------------------------------------------------------------------------------------------


class PosterV2Mlp(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class PosterV2WindowCrossAttention(nn.Module):
    """Landmark tokens (used as they are, no projection) attend to image tokens (projected to keys/values).

    The window equals the whole feature map, so this is global attention with a learned relative-position
    bias, which is passed to `scaled_dot_product_attention` as an additive mask.
    """

    def __init__(self, config: PosterV2Config, dim: int, num_heads: int, window_size: int, qkv_bias: bool,
                 qk_scale: float | None, attention_dropout: float, output_dropout: float):
        super().__init__()
        self.config = config
        self.is_causal = False
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.key_value = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # output channels: [keys | values]
        self.attention_dropout = attention_dropout
        self.output = nn.Linear(dim, dim)
        self.output_dropout = nn.Dropout(output_dropout)

    def relative_position_bias(self) -> torch.Tensor:
        num_tokens = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(num_tokens, num_tokens, self.num_heads).permute(2, 0, 1).unsqueeze(0)

    def forward(
        self, image_tokens: torch.Tensor, landmark_tokens: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_tokens, dim = image_tokens.shape
        if num_tokens != self.window_size**2 or landmark_tokens.shape != image_tokens.shape:
            raise ValueError(
                f"cross-attention expects {self.window_size}x{self.window_size} image and landmark maps of width {dim}; "
                f"got image tokens {tuple(image_tokens.shape)} and landmark tokens {tuple(landmark_tokens.shape)}"
            )
        key_value = self.key_value(image_tokens).view(batch_size, num_tokens, 2, self.num_heads, self.head_dim)
        key, value = key_value.permute(2, 0, 3, 1, 4).unbind(0)
        # The landmark tokens arrive as a transposed view of an NCHW map; a contiguous query lets SDPA use its fused
        # kernel instead of the math fallback (4x faster at batch 32 on CPU, same values).
        query = landmark_tokens.reshape(batch_size, num_tokens, self.num_heads, self.head_dim).transpose(1, 2).contiguous()
        context, weights = attention_function(self.config, output_attentions)(
            self, query, key, value, self.relative_position_bias().to(query.dtype),
            dropout=self.attention_dropout if self.training else 0.0, scaling=self.scale,
        )
        context = context.reshape(batch_size, num_tokens, dim)
        return self.output_dropout(self.output(context)), weights


class PosterV2CrossAttentionLayer(nn.Module):
    """One scale: LayerNorm'd image features attend to the landmark features, then a layer-scaled MLP.

    As upstream, the first residual starts from the *normalised* image features.
    """

    def __init__(self, config: PosterV2Config, scale: int):
        super().__init__()
        dim = config.ir_stage_channels[scale]
        eps = config.cross_attention_layer_norm_eps
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.attention = PosterV2WindowCrossAttention(
            config,
            dim,
            config.cross_attention_heads[scale],
            config.window_size[scale],
            qkv_bias=config.cross_attention_qkv_bias,
            qk_scale=config.cross_attention_qk_scale,
            attention_dropout=config.cross_attention_dropout,
            output_dropout=config.cross_attention_output_dropout,
        )
        self.layer_scale_attention = nn.Parameter(torch.full((dim,), float(config.layer_scale_init_value)))
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)
        self.mlp = PosterV2Mlp(dim, int(dim * config.cross_attention_mlp_ratio), config.hidden_act, config.cross_attention_mlp_dropout)
        self.layer_scale_mlp = nn.Parameter(torch.full((dim,), float(config.layer_scale_init_value)))
        drop_path = config.cross_attention_drop_path[scale]
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()

    def forward(
        self, image_features: torch.Tensor, landmark_features: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, dim, height, width = image_features.shape
        hidden_states = self.layernorm_before(image_features.flatten(2).transpose(1, 2))
        landmark_tokens = landmark_features.flatten(2).transpose(1, 2)
        attention_output, weights = self.attention(hidden_states, landmark_tokens, output_attentions)
        hidden_states = hidden_states + self.drop_path(self.layer_scale_attention * attention_output)
        hidden_states = hidden_states + self.drop_path(self.layer_scale_mlp * self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states.transpose(1, 2).reshape(batch_size, dim, height, width), weights


# ---------------------------------------------------------------------------------------------------------
# Token embedding and the fusion ViT
# ---------------------------------------------------------------------------------------------------------


class PosterV2Embeddings(nn.Module):
    """The three fused maps -> 3 x (7x7) tokens in the order [fine, middle, coarse], after a class token."""

    def __init__(self, config: PosterV2Config):
        super().__init__()
        fine, middle, coarse = config.ir_stage_channels
        hidden = config.hidden_size
        self.fine_projection = nn.Sequential(
            nn.Conv2d(fine, hidden, 3, stride=2, padding=1), nn.Conv2d(hidden, hidden, 3, stride=2, padding=1)
        )
        self.middle_projection = nn.Conv2d(middle, hidden, 3, stride=2, padding=1)
        self.coarse_projection = nn.Conv2d(coarse, hidden, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + 3 * config.num_patches_per_scale, hidden))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, fine: torch.Tensor, middle: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        tokens = [
            projection(features).flatten(2).transpose(1, 2)
            for projection, features in (
                (self.fine_projection, fine), (self.middle_projection, middle), (self.coarse_projection, coarse)
            )
        ]
        cls_tokens = self.cls_token.expand(fine.shape[0], -1, -1)
        embeddings = torch.cat([cls_tokens, *tokens], dim=1) + self.position_embeddings
        return self.dropout(embeddings)


class PosterV2SelfAttention(nn.Module):
    def __init__(self, config: PosterV2Config):
        super().__init__()
        self.config = config
        self.is_causal = False
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)  # [queries | keys | values]
        self.attention_dropout = config.attention_probs_dropout_prob
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_tokens, hidden_size = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        context, weights = attention_function(self.config, output_attentions)(
            self, query, key, value, None,
            dropout=self.attention_dropout if self.training else 0.0, scaling=self.head_dim**-0.5,
        )
        context = context.reshape(batch_size, num_tokens, hidden_size)
        return self.output_dropout(self.output(context)), weights


class PosterV2Layer(GradientCheckpointingLayer):
    """Pre-norm transformer block (recomputed in backward under gradient checkpointing; same parameter names)."""

    def __init__(self, config: PosterV2Config, drop_path: float):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = PosterV2SelfAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = PosterV2Mlp(config.hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout_prob)
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, weights = self.attention(self.layernorm_before(hidden_states), output_attentions)
        hidden_states = hidden_states + self.drop_path(attention_output)
        return hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states))), weights


class PosterV2SqueezeExcitationGate(nn.Module):
    """Gates the pooled features channel-wise: z * sigmoid(W2 relu(W1 z))."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * torch.sigmoid(self.fc2(F.relu(self.fc1(hidden_states))))


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------


class PosterV2PreTrainedModel(PreTrainedModel):
    config_class = PosterV2Config
    config: PosterV2Config
    base_model_prefix = "poster_v2"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["PosterV2Layer", "PosterV2CrossAttentionLayer", "IRUnit", "InvertedBottleneck"]
    # Both attentions go through transformers' attention interface (`attn_implementation`): SDPA by default,
    # eager when attention weights are requested. No flash/flex: the cross-attention needs its additive bias.
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Upstream's initialisation (pretrained backbones aside, which `convert` loads separately).

        PyTorch defaults for convolutions, linears and norms everywhere, except in what upstream calls its
        ViT (the transformer blocks, SE gate and classifier): truncated-normal linears (std 0.01), zero biases.
        Class token, position embeddings and relative-position tables: truncated normal (std 0.02);
        layer scales: `layer_scale_init_value`.
        """
        config = self.config
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            # torch's own reset_parameters(): kaiming-uniform(a=sqrt(5)) weights, uniform(+-1/sqrt(fan_in)) biases
            init.kaiming_uniform_(module.weight, a=5**0.5)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1 / fan_in**0.5 if fan_in > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            super()._init_weights(module)  # transformers' norm init: weight 1, bias 0, statistics reset
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)

        if isinstance(module, nn.Linear) and any(module is linear for linear in self._vit_linears()):
            init.trunc_normal_(module.weight, std=config.linear_initializer_range)
            init.zeros_(module.bias)

        if isinstance(module, PosterV2Embeddings):
            init.trunc_normal_(module.cls_token, std=config.initializer_range)
            init.trunc_normal_(module.position_embeddings, std=config.initializer_range)
        elif isinstance(module, PosterV2WindowCrossAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=config.initializer_range)
            init.copy_(module.relative_position_index, relative_position_index(module.window_size))
        elif isinstance(module, PosterV2CrossAttentionLayer):
            init.constant_(module.layer_scale_attention, config.layer_scale_init_value)
            init.constant_(module.layer_scale_mlp, config.layer_scale_init_value)


    def _vit_linears(self) -> list[nn.Linear]:
        """The linears upstream initialises with `linear_initializer_range`: the ViT blocks, SE gate and classifier.

        Recognised from the linear itself: for remote code, transformers' `initialize_weights` marks modules
        without parameters of their own (a ViT block, the whole classification model) as initialised without
        calling `_init_weights` on them, so an init keyed on those containers never runs.
        """
        containers = [module for module in self.modules() if isinstance(module, (PosterV2Layer, PosterV2SqueezeExcitationGate))]
        linears = [child for container in containers for child in container.modules() if isinstance(child, nn.Linear)]
        if isinstance(self, PosterV2ForImageClassification):
            linears.append(self.classifier)
        return linears


class PosterV2Model(PosterV2PreTrainedModel):
    """Everything up to the normalised class token (the input of the SE gate and classifier)."""

    def __init__(self, config: PosterV2Config):
        super().__init__(config)
        self.landmark_backbone = MobileFaceNetLandmarkBackbone(
            num_channels=config.num_channels,
            stem_channels=config.landmark_stem_channels,
            stage_channels=config.landmark_stage_channels,
            downsample_expansions=config.landmark_downsample_expansions,
            block_expansions=config.landmark_block_expansions,
            stage_depths=config.landmark_stage_depths,
            output_channels=config.landmark_output_channels,
            frozen=config.freeze_landmark_backbone,
            freeze_batchnorm=config.freeze_landmark_batchnorm,
        )
        self.landmark_projection = nn.Conv2d(config.landmark_output_channels, config.ir_stage_channels[2], 3, padding=1)
        self.image_backbone = IR50Backbone(
            num_channels=config.num_channels,
            stem_channels=config.ir_stem_channels,
            stage_channels=config.ir_stage_channels,
            stage_depths=config.ir_stage_depths,
        )
        # strided convs bringing the image maps to the landmark maps' sides (56->28, 28->14, 14->7)
        self.image_downsamplers = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1) for channels in config.ir_stage_channels
        )
        self.cross_attention = nn.ModuleList(PosterV2CrossAttentionLayer(config, scale) for scale in range(3))
        self.embeddings = PosterV2Embeddings(config)
        drop_path_rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers, device="cpu").tolist()
        self.encoder = nn.ModuleList(PosterV2Layer(config, rate) for rate in drop_path_rates)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        r"""
        ``attentions``: the fusion ViT's self-attention weights, one `(batch, heads, tokens, tokens)` per layer;
        ``cross_attentions``: the three scales' landmark→image weights, `(batch, heads, side², side²)`.
        """
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must be (batch, {self.config.num_channels}, height, width); got {tuple(pixel_values.shape)}"
            )
        pixel_values = legacy_nearest_resize(pixel_values, self.config.internal_size)

        landmark_maps = list(self.landmark_backbone(pixel_values))
        landmark_maps[2] = self.landmark_projection(landmark_maps[2])
        image_maps = self.image_backbone(pixel_values)

        fused_maps, cross_attentions = [], ()
        for layer, downsample, image_map, landmark_map in zip(
            self.cross_attention, self.image_downsamplers, image_maps, landmark_maps
        ):
            fused, weights = layer(downsample(image_map), landmark_map, output_attentions)
            fused_maps.append(fused)
            cross_attentions += (weights,)
        hidden_states = self.embeddings(*fused_maps)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.encoder:
            hidden_states, weights = layer(hidden_states, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        sequence_output = self.layernorm(hidden_states)
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=sequence_output, pooler_output=sequence_output[:, 0], hidden_states=all_hidden_states,
            attentions=all_attentions, cross_attentions=cross_attentions if output_attentions else None,
        )


class PosterV2ForImageClassification(PosterV2PreTrainedModel):
    """POSTER V2 with its SE-gated linear classifier; returns raw logits (and the cross-entropy loss with `labels`)."""

    def __init__(self, config: PosterV2Config):
        super().__init__(config)
        self.poster_v2 = PosterV2Model(config)
        self.se_gate = PosterV2SqueezeExcitationGate(config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        outputs = self.poster_v2(
            pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions, return_dict=True
        )
        logits = self.classifier(self.se_gate(outputs.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


__all__ = ["PosterV2PreTrainedModel", "PosterV2Model", "PosterV2ForImageClassification"]

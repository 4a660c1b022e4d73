"""VT-NR: a spatial transformer and a learned Neural Resizer in front of a transformers vision backbone.

``pixel_values [B, 3, 384, 384] → STN (affine warp) → NeuralResizer (→ 224) → backbone (Swin-B by default,
any transformers ViT/DeiT/Swin works) → pooled features → MLP head → logits``, trained with F-PDLS.
Re-implemented from the paper and the facts in the project's spec (upstream has no licence).
"""
from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import can_return_tuple
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from .configuration_vt_nr import VtNrConfig, build_backbone_config
from .loss_vt_nr import prior_label_smoothing_loss
from .neural_resizer import NeuralResizer
from .stn import IDENTITY_AFFINE, AffineRegressor, SpatialTransformerNetwork

# Entries of a Hub backbone config that describe *its* classification task, not the encoder.
_BACKBONE_TASK_KEYS = ("id2label", "label2id", "num_labels", "problem_type", "architectures", "_name_or_path", "transformers_version")


@dataclass
class VtNrImageClassifierOutput(ImageClassifierOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*): the configured loss (F-PDLS by default) when `labels` are given.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): classification scores (before softmax).
    hidden_states, attentions: the backbone's, when requested.
    stn_theta (`torch.FloatTensor` of shape `(batch_size, 2, 3)`, *optional*): affine matrices predicted by the STN.
    stn_output (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`, *optional*): the warped images.
    resizer_output (`torch.FloatTensor`, *optional*): the resizer's output, i.e. the backbone's input.
    pooled_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`, *optional*): the head's input.

    The four intermediates are returned only with `output_intermediates=True` (they would otherwise be
    collected as "predictions" by `Trainer` during evaluation).
    """

    stn_theta: torch.FloatTensor | None = None
    stn_output: torch.FloatTensor | None = None
    resizer_output: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None


class VtNrClassificationHead(nn.Module):
    """Linear → BatchNorm1d → ReLU → Dropout → Linear (upstream's replacement of the Swin head)."""

    def __init__(self, input_size: int, hidden_size: int, dropout: float, num_labels: int):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.norm = nn.BatchNorm1d(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden_states = F.relu(self.norm(self.dense(features)))
        return self.classifier(self.dropout(hidden_states))


def _backbone_init_kwargs(backbone_config) -> dict:
    """Our model pools the tokens itself, so ask for the base model without its pooler when it has one
    (a ViT "pooler" is a dense + tanh layer whose weights would sit unused)."""
    model_class = MODEL_MAPPING.get(type(backbone_config), None)
    if model_class is None:
        raise ValueError(f"no transformers base model is registered for backbone model_type {backbone_config.model_type!r}")
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters else {}


def backbone_feature_size(backbone_config) -> int:
    """Width of the backbone's last hidden state: ``hidden_size`` (Swin, ViT, DeiT...) or the last of the
    per-stage widths (``hidden_sizes``: LeViT, PVT-v2...; ``embed_dim`` lists: CvT)."""
    size = getattr(backbone_config, "hidden_size", None)
    if isinstance(size, int):
        return size
    for name in ("hidden_sizes", "embed_dim"):
        sizes = getattr(backbone_config, name, None)
        if isinstance(sizes, (list, tuple)) and sizes:
            return int(sizes[-1])
    raise ValueError(
        f"cannot tell the feature width of backbone model_type {backbone_config.model_type!r}: its config has no "
        "hidden_size, hidden_sizes or embed_dim list"
    )


def build_backbone(backbone_config) -> PreTrainedModel:
    """The transformers base model (``AutoModel``) of ``backbone_config``, randomly initialised."""
    return AutoModel.from_config(backbone_config, **_backbone_init_kwargs(backbone_config))


def _resolve_pooling(backbone: nn.Module, pooling: str) -> str:
    if pooling != "auto":
        return pooling
    has_cls_token = getattr(getattr(backbone, "embeddings", None), "cls_token", None) is not None
    return "cls" if has_cls_token else "mean"


def _build_trunk(model: nn.Module, config: VtNrConfig) -> None:
    """Give ``model`` VT-NR's ``stn``, ``resizer``, ``backbone`` and ``pooling`` (shared by the base and head models)."""
    model.stn = (
        SpatialTransformerNetwork(
            image_size=config.image_size,
            num_channels=config.num_channels,
            conv_channels=config.stn_conv_channels,
            conv_kernel_sizes=config.stn_conv_kernel_sizes,
            hidden_size=config.stn_hidden_size,
        )
        if config.use_stn else None
    )
    model.resizer = (
        NeuralResizer(
            num_channels=config.num_channels,
            hidden_channels=config.resizer_channels,
            num_res_blocks=config.resizer_num_res_blocks,
            scale_factor=config.resizer_scale_factor,
            negative_slope=config.resizer_negative_slope,
            interpolation=config.resizer_interpolation,
        )
        if config.use_resizer else None
    )
    model.backbone = build_backbone(config.backbone_config)
    model.pooling = _resolve_pooling(model.backbone, config.backbone_pooling)


class VtNrPreTrainedModel(PreTrainedModel):
    config_class = VtNrConfig
    # The head is flat (checkpoint keys predate VtNrModel): VtNrModel shares its attribute names instead of being
    # stored under a prefix, so either class loads the other's checkpoint key for key, and `base_model` is the model.
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # The backbone (a transformers PreTrainedModel) contributes its own no-split blocks.
    _no_split_modules = ["SpatialTransformerNetwork", "NeuralResizer"]
    supports_gradient_checkpointing = True
    # VT-NR's own modules have no attention; the backbone (its own PreTrainedModel) checks what it supports.
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default init for the STN, resizer and head (upstream trained from it); the STN starts at identity.

        The backbone is a transformers model: its own ``_init_weights`` handles it (``initialize_weights``
        dispatches sub-models to their own method). ``reset_parameters`` goes through ``torch.nn.init``,
        which transformers guards so loaded weights are never overwritten.
        """
        if isinstance(module, AffineRegressor):
            init.zeros_(module.weight)
            init.copy_(module.bias, torch.tensor(IDENTITY_AFFINE))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            super()._init_weights(module)  # transformers\' norm init: weight 1, bias 0, statistics reset

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        """Fail early, naming the expected size, instead of with a shape error deep inside the STN/backbone."""
        size = self.config.image_size
        expected = [self.config.num_channels, size, size]
        if pixel_values.dim() != 4 or list(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"VtNrForImageClassification expects pixel_values of shape [batch, {expected[0]}, {size}, {size}] "
                f"(config.image_size={size}: the STN's regressor width is fixed by it), got {list(pixel_values.shape)}. "
                f"Preprocess images with VtNrImageProcessor (it resizes to {size}x{size}); the model then resizes "
                f"to {self.config.backbone_input_size}x{self.config.backbone_input_size} itself with its Neural Resizer."
            )

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """Token features ``[B, N, C]`` → one vector ``[B, C]`` (class token, or mean over tokens like timm's Swin).

        Backbones whose last hidden state is a feature map ``[B, C, H, W]`` (PVT-v2, CvT...) are averaged over space.
        """
        if last_hidden_state.dim() == 4:
            if self.pooling == "cls":
                raise ValueError("backbone_pooling 'cls' needs token outputs [B, N, C]; this backbone returns a feature map")
            return last_hidden_state.mean(dim=(2, 3))
        if self.pooling == "cls":
            return last_hidden_state[:, 0]
        return last_hidden_state.mean(dim=1)

    def _features(self, pixel_values: torch.Tensor, output_hidden_states, output_attentions):
        """STN → resizer → backbone → pooling: (backbone outputs, pooled features, theta, warped images, backbone input)."""
        self.check_pixel_values(pixel_values)
        pixel_values = pixel_values.to(self.dtype)
        theta = None
        images = pixel_values
        if self.stn is not None:
            images, theta = self.stn(images)
        warped = images
        if self.resizer is not None:
            images = self.resizer(images)
        # VT-NR's own config decides (the backbone's sub-config keeps its defaults), as for in-tree composite models.
        backbone_kwargs = {
            "output_hidden_states": output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states,
        }
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        if output_attentions:
            backbone_kwargs["output_attentions"] = True
        backbone_outputs = self.backbone(pixel_values=images, return_dict=True, **backbone_kwargs)
        return backbone_outputs, self.pool(backbone_outputs.last_hidden_state), theta, warped, images


class VtNrModel(VtNrPreTrainedModel):
    """VT-NR without its MLP head: STN → resizer → backbone → pooling (``AutoModel``; image-feature-extraction).

    Same attribute names as :class:`VtNrForImageClassification`, whose checkpoints it loads (the head is left
    out). ``last_hidden_state`` is the backbone's; ``pooler_output`` the pooled vector the head reads.
    """

    def __init__(self, config: VtNrConfig):
        super().__init__(config)
        _build_trunk(self, config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        backbone_outputs, pooled, *_ = self._features(pixel_values, output_hidden_states, output_attentions)
        return BaseModelOutputWithPooling(
            last_hidden_state=backbone_outputs.last_hidden_state, pooler_output=pooled,
            hidden_states=getattr(backbone_outputs, "hidden_states", None),
            attentions=getattr(backbone_outputs, "attentions", None),
        )


class VtNrForImageClassification(VtNrPreTrainedModel):
    """VT-NR classifier. Expects ``pixel_values`` of exactly ``config.image_size`` (384): use ``VtNrImageProcessor``.

    The image processor only rescales and normalises; the learned downscaling to the backbone's
    resolution happens here, in ``self.resizer``, and is trained together with the backbone.
    """

    def __init__(self, config: VtNrConfig):
        super().__init__(config)
        _build_trunk(self, config)
        self.head = VtNrClassificationHead(
            backbone_feature_size(config.backbone_config), config.head_hidden_size, config.head_dropout, config.num_labels
        )
        self.post_init()

    @classmethod
    def from_backbone_pretrained(
        cls, backbone_name_or_path: str | os.PathLike, backbone_kwargs: dict | None = None, **config_kwargs
    ) -> "VtNrForImageClassification":
        """A fresh VT-NR (STN, resizer, head at their initial values) around a pretrained transformers backbone.

        ``backbone_name_or_path``: any Hub id or local folder of a Swin/ViT/DeiT... checkpoint (a
        ``...ForImageClassification`` checkpoint works: only its encoder is kept). ``config_kwargs`` go to
        :class:`VtNrConfig` (``num_labels``, ``id2label``, ``image_size``, ``resizer_scale_factor``...).

        >>> model = VtNrForImageClassification.from_backbone_pretrained("microsoft/swin-base-patch4-window7-224")
        """
        backbone_kwargs = dict(backbone_kwargs or {})
        hub_config = AutoConfig.from_pretrained(backbone_name_or_path, **backbone_kwargs)
        encoder_config = {k: v for k, v in hub_config.to_dict().items() if k not in _BACKBONE_TASK_KEYS}
        config = VtNrConfig(backbone_config=build_backbone_config(encoder_config), **config_kwargs)
        model = cls(config)
        pretrained = AutoModel.from_pretrained(
            backbone_name_or_path, config=config.backbone_config, **_backbone_init_kwargs(config.backbone_config), **backbone_kwargs
        )
        missing, unexpected = model.backbone.load_state_dict(pretrained.state_dict(), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"the pretrained backbone {backbone_name_or_path} does not fit {type(model.backbone).__name__}: "
                f"missing {missing}, unexpected {unexpected}"
            )
        return model

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The configured training loss; ``labels`` are class indices ``[B]`` or soft labels ``[B, num_labels]``."""
        labels = labels.to(logits.device)
        if self.config.loss_type == "cross_entropy":
            if labels.dim() == 2:
                labels = labels.float() / labels.float().sum(dim=1, keepdim=True)
            return F.cross_entropy(logits.float(), labels)
        prior = self.config.label_prior_matrix
        prior = torch.tensor(prior, dtype=torch.float32, device=logits.device) if prior is not None else None
        if prior is None and labels.dim() == 1:
            # No prior is known for these labels (not FER+ classes): PDLS with a uniform prior is plain label smoothing.
            warnings.warn(
                f"VT-NR: no label_prior_matrix for labels {list(self.config.id2label.values())}; F-PDLS uses a uniform "
                "prior (plain label smoothing). Set config.label_prior_matrix ([num_labels, num_labels], row = true "
                "class) for the paper's prior-distribution smoothing.",
                stacklevel=3,
            )
            num_labels = logits.shape[-1]
            prior = torch.full((num_labels, num_labels), 1.0 / num_labels, device=logits.device)
        focal = {"focal_pdls": "power", "compensated_focal_pdls": "compensated", "pdls": None}[self.config.loss_type]
        return prior_label_smoothing_loss(
            logits, labels, prior, alpha=self.config.pdls_alpha, gamma=self.config.focal_gamma, focal=focal
        )

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_intermediates: bool = False,
        **kwargs,
    ) -> VtNrImageClassifierOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            Normalised images from [`VtNrImageProcessor`] (384×384 for the published model).
        labels (`torch.LongTensor` of shape `(batch_size,)` or `torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*):
            Class indices, or soft labels (e.g. FERPlus vote counts/distributions) for the F-PDLS loss.
        output_intermediates (`bool`, *optional*, defaults to `False`):
            Also return the STN matrices and output, the resizer output and the pooled features.
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        backbone_outputs, pooled, theta, warped, images = self._features(pixel_values, output_hidden_states, output_attentions)
        logits = self.head(pooled)

        loss = None
        if labels is not None:
            if self.config.problem_type in ("multi_label_classification", "regression"):
                loss = self.loss_function(labels, logits, self.config)  # transformers' BCE-with-logits / MSE
            else:  # single-label (the default): the configured F-PDLS / PDLS / cross-entropy, hard or soft labels
                loss = self.compute_loss(logits, labels)
        return VtNrImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=getattr(backbone_outputs, "hidden_states", None),
            attentions=getattr(backbone_outputs, "attentions", None),
            stn_theta=theta if output_intermediates else None,
            stn_output=warped if output_intermediates and self.stn is not None else None,
            resizer_output=images if output_intermediates and self.resizer is not None else None,
            pooled_output=pooled if output_intermediates else None,
        )


__all__ = ["VtNrPreTrainedModel", "VtNrModel", "VtNrForImageClassification", "VtNrClassificationHead", "VtNrImageClassifierOutput"]

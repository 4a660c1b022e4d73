"""VT-NR configuration: STN → Neural Resizer → any transformers vision backbone → MLP head, F-PDLS loss.

Paper: Hwang et al., "Vision Transformer Equipped with Neural Resizer on Facial Expression Recognition
Task", ICASSP 2022 (arXiv 2204.02181). Defaults reproduce the only published model: Swin-B behind an
STN and a Neural Resizer that turns 384×384 inputs into the 224×224 the backbone was pretrained on.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

# FERPlus class order (the order of the vote columns in fer2013new.csv and of upstream's head).
FERPLUS_CLASS_NAMES: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")

# Upstream's prior label distribution for F-PDLS: row = true class, column = how often annotators chose
# each class for images of that class (FER+ train set), FERPlus order. Rows sum to 1 within 2e-6.
FERPLUS_LABEL_PRIOR: tuple[tuple[float, ...], ...] = (
    (0.777334, 0.03261, 0.017447, 0.114091, 0.026224, 0.007145, 0.004379, 0.020772),
    (0.042842, 0.917618, 0.023221, 0.004816, 0.004217, 0.001969, 0.001755, 0.003563),
    (0.058354, 0.035775, 0.787254, 0.01037, 0.014319, 0.003015, 0.088513, 0.0024),
    (0.170124, 0.013292, 0.008632, 0.747902, 0.022808, 0.011237, 0.015923, 0.010082),
    (0.074781, 0.02535, 0.060215, 0.031924, 0.740551, 0.034938, 0.023251, 0.008989),
    (0.08959, 0.017445, 0.016911, 0.088629, 0.125152, 0.620813, 0.007788, 0.033671),
    (0.042815, 0.012239, 0.169483, 0.072557, 0.027228, 0.013045, 0.658964, 0.003671),
    (0.147933, 0.022174, 0.00989, 0.042923, 0.033551, 0.059924, 0.005507, 0.678099),
)

# timm `swin_base_patch4_window7_224`, expressed as a transformers SwinConfig (spec §4). Stochastic depth
# 0.1 is timm's default and is active only in training.
SWIN_BASE_BACKBONE: dict[str, Any] = {
    "model_type": "swin",
    "image_size": 224,
    "patch_size": 4,
    "num_channels": 3,
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
    "window_size": 7,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.1,
    "hidden_act": "gelu",
    "use_absolute_embeddings": False,
    "layer_norm_eps": 1e-5,
}

LOSS_TYPES = ("focal_pdls", "pdls", "compensated_focal_pdls", "cross_entropy")
BACKBONE_POOLINGS = ("auto", "mean", "cls")


def build_backbone_config(backbone_config: PretrainedConfig | dict | None) -> PretrainedConfig:
    """Turn a config object, a ``config.json``-style dict (with ``model_type``) or ``None`` (Swin-B) into a config."""
    if backbone_config is None:
        backbone_config = dict(SWIN_BASE_BACKBONE)
    if isinstance(backbone_config, PretrainedConfig):
        return backbone_config
    if not isinstance(backbone_config, dict):
        raise TypeError(f"backbone_config must be a PretrainedConfig, a dict or None, got {type(backbone_config).__name__}")
    backbone_config = dict(backbone_config)
    model_type = backbone_config.pop("model_type", None)
    if model_type is None:
        raise ValueError("backbone_config dict needs a 'model_type' (e.g. 'swin', 'vit', 'deit') to know which config to build")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"backbone_config has unknown model_type {model_type!r} (not a transformers model type)")
    backbone_config.pop("transformers_version", None)
    return CONFIG_MAPPING[model_type](**backbone_config)


class VtNrConfig(PretrainedConfig):
    r"""Configuration of [`VtNrForImageClassification`].

    The model is ``image → STN (affine warp) → NeuralResizer (learned downscale) → backbone → head``.
    The *image processor* only delivers ``image_size``×``image_size`` normalised pixels; the resizing to
    the backbone's resolution is learned and therefore lives in the model (see ``VtNrImageProcessor``).

    Args:
        backbone_config (`PretrainedConfig` or `dict`, *optional*):
            Any transformers vision encoder config (`SwinConfig`, `ViTConfig`, `DeiTConfig`...). As a dict
            it must carry `model_type`. Defaults to timm's Swin-B (embed 128, depths 2-2-18-2, window 7).
            Its `image_size` must equal the resizer's output size.
        image_size (`int`, *optional*, defaults to 384):
            Side of the square model input. The STN's regressor width is derived from it, so inputs of any
            other size are rejected.
        use_stn (`bool`, *optional*, defaults to `True`):
            Put the spatial transformer in front (upstream: yes). `False` gives the ablation without it.
        stn_conv_channels (`list[int]`, *optional*, defaults to `[8, 10]`):
            Output channels of the two localisation convolutions (each followed by 2×2 max-pool, ReLU).
        stn_conv_kernel_sizes (`list[int]`, *optional*, defaults to `[7, 5]`):
            Kernel sizes of the localisation convolutions (no padding).
        stn_hidden_size (`int`, *optional*, defaults to 32):
            Width of the regressor's hidden layer that predicts the 2×3 affine matrix.
        use_resizer (`bool`, *optional*, defaults to `True`):
            Use the learned Neural Resizer. `False` feeds the (warped) image to the backbone unchanged.
        resizer_channels (`int`, *optional*, defaults to 16):
            Feature channels inside the resizer (`n` in Talebi & Milanfar's "learning to resize").
        resizer_num_res_blocks (`int`, *optional*, defaults to 1):
            Residual blocks at the low resolution (`r`).
        resizer_scale_factor (`float`, *optional*, defaults to 0.584):
            Bilinear scale factor of both resizer skips. 0.584, not 224/384: floor(384·0.584) = 224 and the
            factor itself drives the sampling grid, as upstream (`interpolate(scale_factor=...)`).
        resizer_negative_slope (`float`, *optional*, defaults to 0.2):
            LeakyReLU slope.
        resizer_interpolation (`str`, *optional*, defaults to `"bilinear"`):
            `torch.nn.functional.interpolate` mode of the skips (align_corners=False, no antialias).
        backbone_pooling (`str`, *optional*, defaults to `"auto"`):
            How token features become one vector: `"mean"` over tokens (Swin), `"cls"` token (ViT/DeiT);
            `"auto"` picks `"cls"` when the backbone has a class token, else `"mean"`.
        head_hidden_size (`int`, *optional*, defaults to 512):
            Hidden width of the head Linear → BatchNorm1d → ReLU → Dropout → Linear.
        head_dropout (`float`, *optional*, defaults to 0.5):
            Dropout before the last Linear.
        loss_type (`str`, *optional*, defaults to `"focal_pdls"`):
            Training loss: `"focal_pdls"` (F-PDLS, upstream), `"pdls"` (no focal term),
            `"compensated_focal_pdls"` (focal factor `(1-p)·K/(K-1)`), or `"cross_entropy"`.
        pdls_alpha (`float`, *optional*, defaults to 0.8):
            Weight of the one-hot target; `1 - pdls_alpha` goes to the prior row.
        focal_gamma (`float`, *optional*, defaults to 2.0):
            Focal exponent, applied to every class with that class's own probability.
        label_prior_matrix (`list[list[float]]`, *optional*):
            `[num_labels, num_labels]` prior label distribution, row = true class, in `id2label` order.
            Defaults to upstream's FER+ prior when the labels are the 8 FERPlus classes in FERPlus order
            (or unnamed); other label spaces must pass their own (e.g. the FER+ prior permuted with
            `hf_fer.converters.convert_vt_nr_original.label_prior_for`), else the PDLS losses raise.
    """

    model_type = "vt_nr"
    # Declared so transformers forwards `dtype` and `attn_implementation` requests to the backbone's config.
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict | None = None,
        image_size: int = 384,
        num_channels: int = 3,
        use_stn: bool = True,
        stn_conv_channels: list[int] | tuple[int, ...] = (8, 10),
        stn_conv_kernel_sizes: list[int] | tuple[int, ...] = (7, 5),
        stn_hidden_size: int = 32,
        use_resizer: bool = True,
        resizer_channels: int = 16,
        resizer_num_res_blocks: int = 1,
        resizer_scale_factor: float = 0.584,
        resizer_negative_slope: float = 0.2,
        resizer_interpolation: str = "bilinear",
        backbone_pooling: str = "auto",
        head_hidden_size: int = 512,
        head_dropout: float = 0.5,
        loss_type: str = "focal_pdls",
        pdls_alpha: float = 0.8,
        focal_gamma: float = 2.0,
        label_prior_matrix: list[list[float]] | None = None,
        **kwargs,
    ):
        kwargs.setdefault("problem_type", "single_label_classification")
        given_labels = kwargs.get("id2label")
        if kwargs.get("id2label") is None and kwargs.get("num_labels") is None:
            kwargs["id2label"] = dict(enumerate(FERPLUS_CLASS_NAMES))
            kwargs["label2id"] = {name: index for index, name in enumerate(FERPLUS_CLASS_NAMES)}
        super().__init__(**kwargs)
        self.backbone_config = build_backbone_config(backbone_config)
        if getattr(self, "_attn_implementation_internal", None) is not None:
            # An `attn_implementation=` given to from_pretrained arrived before the backbone config existed.
            self._attn_implementation = self._attn_implementation_internal
        self.image_size = image_size
        self.num_channels = num_channels
        self.use_stn = use_stn
        self.stn_conv_channels = list(stn_conv_channels)
        self.stn_conv_kernel_sizes = list(stn_conv_kernel_sizes)
        self.stn_hidden_size = stn_hidden_size
        self.use_resizer = use_resizer
        self.resizer_channels = resizer_channels
        self.resizer_num_res_blocks = resizer_num_res_blocks
        self.resizer_scale_factor = resizer_scale_factor
        self.resizer_negative_slope = resizer_negative_slope
        self.resizer_interpolation = resizer_interpolation
        self.backbone_pooling = backbone_pooling
        self.head_hidden_size = head_hidden_size
        self.head_dropout = head_dropout
        self.loss_type = loss_type
        self.pdls_alpha = pdls_alpha
        self.focal_gamma = focal_gamma
        if (
            label_prior_matrix is not None and len(label_prior_matrix) != self.num_labels
            and given_labels is not None and len(given_labels) == len(label_prior_matrix)
        ):
            # `from_pretrained(..., num_labels=N)` replaced the saved labels: the saved prior describes the old ones.
            label_prior_matrix = None
        self.label_prior_matrix = label_prior_matrix
        self._validate()

    @property
    def label_prior_matrix(self) -> list[list[float]] | None:
        """The F-PDLS prior of the *current* label space.

        A prior belongs to the labels it was set for: when ``id2label`` changes afterwards (re-heading a
        checkpoint for another dataset) it is replaced by the FER+ prior re-ordered into the new labels if
        every new name is a FER+ class, else ``None`` (the model then smooths uniformly, with a warning).
        """
        prior, names = self.__dict__.get("_label_prior_matrix"), self.__dict__.get("_label_prior_names")
        if prior is not None and names == self._label_names():
            return prior
        return self._ferplus_prior_for_labels()

    @label_prior_matrix.setter
    def label_prior_matrix(self, prior: list[list[float]] | None) -> None:
        self._label_prior_matrix = [list(map(float, row)) for row in prior] if prior is not None else None
        self._label_prior_names = self._label_names() if prior is not None else None

    def _label_names(self) -> list[str]:
        return [str(self.id2label[i]) for i in range(self.num_labels)]

    def _ferplus_prior_for_labels(self) -> list[list[float]] | None:
        """FER+ prior rows/columns picked in this config's label order and renormalised; ``None`` if a name is unknown."""
        if self._labels_are_ferplus():
            return [list(row) for row in FERPLUS_LABEL_PRIOR]
        names = [name.lower() for name in self._label_names()]
        if len(set(names)) != len(names) or not set(names) <= set(FERPLUS_CLASS_NAMES):
            return None
        order = [FERPLUS_CLASS_NAMES.index(name) for name in names]
        rows = [[FERPLUS_LABEL_PRIOR[i][j] for j in order] for i in order]
        return [[value / sum(row) for value in row] for row in rows]

    def to_dict(self) -> dict[str, Any]:
        """As the base class, with the label prior of the current labels (see ``label_prior_matrix``)."""
        output = super().to_dict()
        output.pop("_label_prior_matrix", None)
        output.pop("_label_prior_names", None)
        output["label_prior_matrix"] = self.label_prior_matrix
        return output

    def to_diff_dict(self) -> dict[str, Any]:
        """What config.json holds: as the base class, with the backbone reduced to what differs from its class
        defaults (plus ``model_type``): derived fields (``hidden_size``, stage names) and its unused label names
        would only go stale or confuse readers of config.json."""
        output = super().to_diff_dict()
        backbone = self.backbone_config.to_diff_dict()
        for key in ("id2label", "label2id", "transformers_version"):
            backbone.pop(key, None)
        if type(self.backbone_config).__dict__.get("__annotations__") and dataclasses.is_dataclass(self.backbone_config):
            # v5 dataclass configs: keep declared fields only (Swin's hidden_size/stage_names are recomputed).
            declared = {field.name for field in dataclasses.fields(self.backbone_config)}
            declared |= {name.lstrip("_") for name in declared}
            backbone = {k: v for k, v in backbone.items() if k in declared and k not in ("out_features", "out_indices")}
        output["backbone_config"] = {"model_type": self.backbone_config.model_type, **backbone}
        return output

    @property
    def backbone_input_size(self) -> int:
        """Side of the square image the backbone receives (the resizer's output, or the input itself)."""
        if not self.use_resizer:
            return self.image_size
        return math.floor(self.image_size * self.resizer_scale_factor)

    def _labels_are_ferplus(self) -> bool:
        if self.num_labels != len(FERPLUS_CLASS_NAMES):
            return False
        names = [str(self.id2label[i]).lower() for i in range(self.num_labels)]
        return names == list(FERPLUS_CLASS_NAMES) or all(n == f"label_{i}" for i, n in enumerate(names))

    def _validate(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.backbone_pooling not in BACKBONE_POOLINGS:
            raise ValueError(f"backbone_pooling must be one of {BACKBONE_POOLINGS}, got {self.backbone_pooling!r}")
        if len(self.stn_conv_channels) != len(self.stn_conv_kernel_sizes):
            raise ValueError(
                f"stn_conv_channels {self.stn_conv_channels} and stn_conv_kernel_sizes {self.stn_conv_kernel_sizes} differ in length"
            )
        if self.label_prior_matrix is not None:
            rows = len(self.label_prior_matrix)
            if rows != self.num_labels or any(len(row) != self.num_labels for row in self.label_prior_matrix):
                shape = [rows, sorted({len(row) for row in self.label_prior_matrix})]
                raise ValueError(
                    f"label_prior_matrix must be [num_labels, num_labels] = [{self.num_labels}, {self.num_labels}], got rows={shape[0]}, "
                    f"row lengths {shape[1]}"
                )
        backbone_size = getattr(self.backbone_config, "image_size", None)
        if isinstance(backbone_size, (list, tuple)):
            backbone_size = backbone_size[0] if len(set(backbone_size)) == 1 else tuple(backbone_size)
        if backbone_size is not None and backbone_size != self.backbone_input_size:
            how = (
                f"floor(image_size {self.image_size} x resizer_scale_factor {self.resizer_scale_factor})"
                if self.use_resizer else f"image_size {self.image_size} (use_resizer=False)"
            )
            raise ValueError(
                f"the backbone expects {backbone_size}x{backbone_size} images (backbone_config.image_size) but receives "
                f"{self.backbone_input_size}x{self.backbone_input_size} = {how}; change image_size, resizer_scale_factor "
                "or backbone_config.image_size so they agree"
            )
        if getattr(self.backbone_config, "num_channels", self.num_channels) != self.num_channels:
            raise ValueError(
                f"backbone_config.num_channels {self.backbone_config.num_channels} != num_channels {self.num_channels}"
            )

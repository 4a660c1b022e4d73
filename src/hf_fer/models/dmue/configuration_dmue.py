"""Configuration of DMUE (She et al., "Dive into Ambiguity: Latent Distribution Mining and Pairwise
Uncertainty Estimation for Facial Expression Recognition", CVPR 2021).

One config describes both the deployed single-branch classifier and the multi-branch training model:
``use_aux_branches`` switches the auxiliary branches (and the uncertainty head) on. Defaults are the
upstream AffectNet ResNet-18 settings (official code in JDAI-CV/FaceX-Zoo, ``addition_module/DMUE``).
"""
from __future__ import annotations

from transformers import PretrainedConfig

_STEM_POOLS = ("max2", "max3")
_POOLINGS = ("avg", "gem")


class DmueConfig(PretrainedConfig):
    r"""
    Args:
        num_labels (`int`, *optional*, defaults to 8):
            Number of expression classes C (8 for AffectNet, 7 for RAF-DB).
        backbone (`str`, *optional*, defaults to `"resnet18"`):
            Trunk. Only `"resnet18"` (torchvision's, with DMUE's stem) is implemented; upstream's
            `"resnet50_ibn"` is not.
        backbone_depths (`list[int]`, *optional*, defaults to `[2, 2, 2, 2]`):
            BasicBlocks per ResNet stage. `[2, 2, 2, 2]` is ResNet-18 (every published DMUE model); fewer blocks
            give a lighter trunk (and lighter auxiliary stage-4 copies) for quick CPU runs.
        hidden_size (`int`, *optional*, defaults to 512):
            Width of the pooled feature (ResNet-18 stage 4 output).
        last_stride (`int`, *optional*, defaults to 2):
            Stride of the first block of stage 4 (1 keeps a 14x14 map).
        stem_relu (`bool`, *optional*, defaults to `False`):
            Whether the stem applies a ReLU after its BatchNorm (DMUE's ResNet-18 has none).
        stem_pool (`str`, *optional*, defaults to `"max2"`):
            Stem pooling: `"max2"` = MaxPool2d(2, 2) (DMUE), `"max3"` = MaxPool2d(3, 2, 1) (torchvision).
        pooling (`str`, *optional*, defaults to `"avg"`):
            Global pooling of the stage-4 map: `"avg"` or `"gem"` (generalised mean with `gem_p`).
        gem_p (`float`, *optional*, defaults to 3.0):
            Exponent of GeM pooling (fixed, not learned; upstream's GeM option is not covered by the fixtures).
        use_bnneck (`bool`, *optional*, defaults to `True`):
            BatchNorm1d between the pooled feature and the classifier (its bias is frozen, as in BNNeck).
        classifier_bias (`bool`, *optional*, defaults to `False`):
            Whether the classifiers have a bias.
        dropout_prob (`float`, *optional*, defaults to 0.5):
            Dropout on the pooled feature before the neck (no effect at inference).
        use_aux_branches (`bool`, *optional*, defaults to `False`):
            Build the DMUE training model: one auxiliary copy of stage 4 + a (C-1)-way classifier per class,
            and the uncertainty head. `False` is the deployed model (target branch only).
        sharpen_temperature (`float`, *optional*, defaults to 1.2):
            Temperature T of the latent distributions: `p^(1/T)` renormalised.
        soft_loss_weight (`float`, *optional*, defaults to 0.5):
            Weight w of the latent-distribution (soft-label) loss.
        sp_loss_weight (`float`, *optional*, defaults to 1000.0):
            Weight gamma of the similarity-preserving (Gram matrix) loss.
        ramp_epochs (`float`, *optional*, defaults to 6):
            Length `a` of the sigmoid-shaped ramp-up of the target-branch terms, which is also the epoch where
            the auxiliary loss starts ramping down (upstream: 6 AffectNet, 9-10 RAF-DB, 10-14 FERPlus).
        uncertainty_hidden_size (`int`, *optional*):
            Hidden width of the uncertainty MLP (2C -> hidden -> 1). Defaults to `num_labels`.
        train_uncertainty_head (`bool`, *optional*, defaults to `True`):
            Whether the uncertainty MLP is learned (paper). Upstream never puts it in an optimizer group, so
            `False` (parameters frozen, gradients still flow through it) reproduces upstream training.
        train_neck_weight (`bool`, *optional*, defaults to `True`):
            Whether the BN-neck scale is learned. Upstream leaves it out of the optimizer (`False` reproduces it).
        neck_stats_from_all_branches (`bool`, *optional*, defaults to `False`):
            In training mode upstream applies the single BN neck to 17 feature sets per step, each call updating
            its running statistics. By default only the target branch updates them (they are what the deployed
            model normalises with); `True` reproduces upstream.
        classifier_init_std (`float`, *optional*, defaults to 0.001):
            Std of the normal init of the classifiers (upstream).
    """

    model_type = "dmue"
    # Extra outputs of the training objective: not predictions, so `Trainer` must not gather them.
    keys_to_ignore_at_inference = [
        "hidden_states", "loss_ce", "loss_soft", "loss_aux", "loss_sp", "uncertainty_score", "weighted_logits",
        "aux_logits", "aux_targets", "latent_logits", "soft_targets", "aux_gram", "target_gram",
        "ramp_up_weight", "ramp_down_weight",
    ]

    def __init__(
        self,
        num_labels: int = 8,
        backbone: str = "resnet18",
        backbone_depths: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        hidden_size: int = 512,
        last_stride: int = 2,
        stem_relu: bool = False,
        stem_pool: str = "max2",
        pooling: str = "avg",
        gem_p: float = 3.0,
        use_bnneck: bool = True,
        classifier_bias: bool = False,
        dropout_prob: float = 0.5,
        use_aux_branches: bool = False,
        sharpen_temperature: float = 1.2,
        soft_loss_weight: float = 0.5,
        sp_loss_weight: float = 1000.0,
        ramp_epochs: float = 6,
        uncertainty_hidden_size: int | None = None,
        train_uncertainty_head: bool = True,
        train_neck_weight: bool = True,
        neck_stats_from_all_branches: bool = False,
        classifier_init_std: float = 0.001,
        **kwargs,
    ):
        if backbone != "resnet18":
            raise ValueError(f"DmueConfig: backbone {backbone!r} is not implemented; only 'resnet18' is")
        if len(backbone_depths) != 4 or any(int(depth) < 1 for depth in backbone_depths):
            raise ValueError(f"DmueConfig: backbone_depths must list 4 positive block counts, got {list(backbone_depths)}")
        if stem_pool not in _STEM_POOLS:
            raise ValueError(f"DmueConfig: stem_pool must be one of {_STEM_POOLS}, got {stem_pool!r}")
        if pooling not in _POOLINGS:
            raise ValueError(f"DmueConfig: pooling must be one of {_POOLINGS}, got {pooling!r}")
        if last_stride not in (1, 2):
            raise ValueError(f"DmueConfig: last_stride must be 1 or 2, got {last_stride}")
        if sharpen_temperature <= 0:
            raise ValueError(f"DmueConfig: sharpen_temperature must be > 0, got {sharpen_temperature}")
        kwargs.setdefault("problem_type", "single_label_classification")
        if "id2label" not in kwargs and "label2id" not in kwargs:
            kwargs["num_labels"] = num_labels
        self.backbone = backbone
        self.backbone_depths = [int(depth) for depth in backbone_depths]
        self.hidden_size = hidden_size
        self.last_stride = last_stride
        self.stem_relu = stem_relu
        self.stem_pool = stem_pool
        self.pooling = pooling
        self.gem_p = gem_p
        self.use_bnneck = use_bnneck
        self.classifier_bias = classifier_bias
        self.dropout_prob = dropout_prob
        self.use_aux_branches = use_aux_branches
        self.sharpen_temperature = sharpen_temperature
        self.soft_loss_weight = soft_loss_weight
        self.sp_loss_weight = sp_loss_weight
        self.ramp_epochs = ramp_epochs
        self.uncertainty_hidden_size = uncertainty_hidden_size
        self.train_uncertainty_head = train_uncertainty_head
        self.train_neck_weight = train_neck_weight
        self.neck_stats_from_all_branches = neck_stats_from_all_branches
        self.classifier_init_std = classifier_init_std
        super().__init__(**kwargs)
        if self.id2label is not None and not self.label2id:
            self.label2id = {name: index for index, name in self.id2label.items()}

    @property
    def num_aux_branches(self) -> int:
        """Auxiliary branches of the training model: one per class (0 for the deployed model)."""
        return self.num_labels if self.use_aux_branches else 0


__all__ = ["DmueConfig"]

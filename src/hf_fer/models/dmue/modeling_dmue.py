"""DMUE as a ``transformers`` model.

DMUE (She et al., CVPR 2021, arXiv 2104.00232) fights label ambiguity in facial expression recognition
with machinery that exists only during training:

* a ResNet-18 is split after stage 3; the shared stem + stages 1-3 feed C+1 copies of stage 4;
* the *target branch* (the one that is deployed) is a plain C-way classifier: stage 4 -> global pooling ->
  dropout -> BatchNorm1d "BN neck" -> bias-free linear layer;
* auxiliary branch c (one per class) is a (C-1)-way classifier trained only on samples whose label is not
  c; applied to the samples *of* class c it yields their "latent label distribution" over the other classes;
* a small MLP turns pairwise feature similarities in the mini-batch into a per-sample uncertainty score
  that scales the target logits in the cross-entropy term.

:class:`DmueForImageClassification` is one class for both models. With ``config.use_aux_branches=False``
(the default) it is the deployed single-branch classifier, exactly the network upstream's
``convert_weights.py`` produces. With ``use_aux_branches=True`` it carries the auxiliary branches and
``forward(pixel_values, labels=...)`` returns the full DMUE objective as ``loss`` with every term exposed;
:meth:`DmueForImageClassification.to_inference_model` (or ``save_pretrained(..., target_branch_only=True)``)
drops the auxiliary parts. ``logits`` are always the target branch's (upstream "normal" phase), so
evaluating the training model gives the deployed model's predictions, at the deployed model's cost.

With ``labels`` the multi-branch model computes the DMUE objective in eval mode too (upstream's parity
fixture was made that way); omit ``labels`` for plain predictions, which run the target branch only.

Ramp-up state (needed by the loss only): call ``model.set_epoch(epoch)`` at the start of every epoch
(0-based, fractions allowed) or pass ``epoch=`` to ``forward``, which wins for that call. The model starts
at epoch 0 like upstream.

Decisions on upstream's training quirks (``shared/specs/dmue.md`` section 13); paper intent by default:

1. Upstream never optimises the uncertainty MLP (``project_w``) nor the BN-neck scale (they are in no Adam
   parameter group). The paper describes the MLP as learned, so both are trainable here;
   ``train_uncertainty_head=False`` / ``train_neck_weight=False`` freeze them (``requires_grad=False``;
   gradients still flow *through* them into the backbone, exactly like upstream). The BN-neck *bias* is
   always frozen: that is the BNNeck design, not a quirk.
2. Upstream trains most of each epoch in eval mode (a mid-epoch validation switches to ``eval()`` and
   never back). This is a training-loop bug, not a property of the model; it is not reproduced here.
3. Upstream applies the single BN neck to 17 feature sets per step and each call updates its running
   statistics, so the statistics the deployed model normalises with end up dominated by auxiliary
   features. Here only the target branch updates them (the auxiliary calls normalise with their own batch
   statistics, as upstream); ``neck_stats_from_all_branches=True`` restores upstream.
4. DMUE's stem (no ReLU, 2x2 max-pool) is kept: it is what the MS-Celeb-1M pre-training used.
5.-8. Training-script matters: DataParallel ``module.`` prefixes are handled by the converter; the model
   makes no ``.cuda()`` calls and runs under DDP (each process splits its own batch by label); label-file
   parsing, learning-rate tables and snapshot selection belong to the data/training code, not here.
9. A class absent from the batch makes upstream produce NaN (empty means in the similarity statistics);
   upstream avoids it by skipping batches in which a class has fewer than 2 samples. Here every per-class
   term without samples is skipped instead: auxiliary branch c is skipped when every sample is of class c;
   the similarity statistics of absent classes are set to 0 and left out of the per-row min-max rescaling;
   ``loss_aux`` and ``loss_sp`` average over the branches that ran (under DDP a skipped branch has unused
   parameters: use ``find_unused_parameters=True`` if local batches can be single-class). A batch whose class means are all
   equal gives zeros instead of NaN. In training mode the BN neck normalises a single sample with its
   running statistics (batch statistics of one sample are undefined; upstream would crash).
   The per-class similarity mean still includes the sample itself, as upstream (parity needs it).
10. Evaluation runs only the target branch (upstream's "normal" phase runs all nine stage-4 copies and
   discards eight of them; the logits are identical).

Everything else follows upstream exactly and is checked against upstream fixtures: soft targets from the
latent branch without dropout and without gradient, sharpened with ``p^(1/T)``, a zero inserted at the
labelled class; the target probabilities with the labelled class masked in the squared error; Gram
matrices of the auxiliary *logits* vs. the target's BN-neck features restricted to the same samples,
row-normalised; similarity statistics from the pooled target features before dropout and neck.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput
from transformers.utils import can_return_tuple

from .configuration_dmue import DmueConfig


@dataclass
class DmueImageClassifierOutput(ImageClassifierOutput):
    """``ImageClassifierOutput`` plus the terms of the DMUE objective (set when ``labels`` are given to the
    multi-branch model). Per-class tuples have one entry per auxiliary branch c; a branch with no samples
    gets empty tensors.

    Args:
        loss_ce: cross-entropy of the uncertainty-weighted target logits.
        loss_soft: squared error between the target probabilities (labelled class masked) and the latent
            distributions.
        loss_aux: mean cross-entropy of the auxiliary branches.
        loss_sp: mean squared error between auxiliary and target Gram matrices.
        uncertainty_score: `(batch, 1)` sigmoid score that multiplies the target logits in ``loss_ce``.
        weighted_logits: `(batch, num_labels)` = ``logits * uncertainty_score``.
        aux_logits / aux_targets: branch c on the samples whose label is not c, and their labels in the
            branch's (C-1)-way numbering (labels above c shifted down by one).
        latent_logits: branch c on the samples of class c (no dropout).
        soft_targets: `(batch, num_labels)` sharpened latent distributions, 0 at the labelled class.
        aux_gram / target_gram: row-normalised Gram matrices compared by ``loss_sp``.
        ramp_up_weight / ramp_down_weight: the ramp values used for this step.
    """

    loss_ce: torch.Tensor | None = None
    loss_soft: torch.Tensor | None = None
    loss_aux: torch.Tensor | None = None
    loss_sp: torch.Tensor | None = None
    uncertainty_score: torch.Tensor | None = None
    weighted_logits: torch.Tensor | None = None
    aux_logits: tuple[torch.Tensor, ...] | None = None
    aux_targets: tuple[torch.Tensor, ...] | None = None
    latent_logits: tuple[torch.Tensor, ...] | None = None
    soft_targets: torch.Tensor | None = None
    aux_gram: tuple[torch.Tensor, ...] | None = None
    target_gram: tuple[torch.Tensor, ...] | None = None
    ramp_up_weight: torch.Tensor | None = None
    ramp_down_weight: torch.Tensor | None = None


# Copied from hf_fer.models.dacl.modeling_dacl._is_single_label with Dacl->Dmue
def _is_single_label(config: DmueConfig, labels: torch.Tensor) -> bool:
    """``config.problem_type``, or transformers' rule when unset: integer labels with num_labels > 1 are single-label."""
    if config.problem_type is not None:
        return config.problem_type == "single_label_classification"
    return config.num_labels > 1 and not labels.dtype.is_floating_point and labels.dtype != torch.bool


def dmue_ramp_weights(epoch: float, ramp_epochs: float) -> tuple[float, float]:
    """Upstream's schedules, with ``a = ramp_epochs``.

    ramp-up ``exp(-5 (1 - e/a)^2)`` until ``a`` then 1 (weights the target-branch terms);
    ramp-down 1 until ``a`` then ``exp(-(1 - a/e)^2)`` (weights the auxiliary loss).
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    up = 1.0 if epoch >= ramp_epochs else math.exp(-5.0 * (1.0 - epoch / ramp_epochs) ** 2)
    down = 1.0 if epoch <= ramp_epochs else math.exp(-((1.0 - ramp_epochs / epoch) ** 2))
    return up, down


def build_dmue_resnet18(config: DmueConfig) -> torchvision.models.ResNet:
    """torchvision's ResNet-18 with DMUE's stem (no ReLU, 2x2 max-pool) and without its pooling/fc head.

    Its ``layer4`` is the target branch; parameter names are torchvision's, which are also upstream's.
    ``config.backbone_depths`` other than ``[2, 2, 2, 2]`` builds the same trunk with other block counts.
    """
    resnet = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, list(config.backbone_depths))
    if not config.stem_relu:
        resnet.relu = nn.Identity()  # torchvision uses `relu` only in the stem; blocks have their own
    if config.stem_pool == "max2":
        resnet.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
    if config.last_stride == 1:
        resnet.layer4[0].conv1.stride = (1, 1)
        resnet.layer4[0].downsample[0].stride = (1, 1)
    del resnet.avgpool, resnet.fc  # pooling and heads live in DmueForImageClassification
    return resnet


class DmuePooling(nn.Module):
    """Global average pooling, or generalised-mean (GeM) pooling with a fixed exponent: `[B,C,H,W] -> [B,C]`."""

    def __init__(self, mode: str = "avg", p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.mode, self.p, self.eps = mode, p, eps

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        if self.mode == "gem":
            return F.adaptive_avg_pool2d(feature_map.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p).flatten(1)
        return F.adaptive_avg_pool2d(feature_map, 1).flatten(1)


class DmuePreTrainedModel(PreTrainedModel):
    config_class = DmueConfig
    config: DmueConfig
    # The head is flat (checkpoint keys predate DmueModel): DmueModel shares its attribute names instead of being
    # stored under a prefix, so either class loads the other's checkpoint key for key, and `base_model` is the model.
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["BasicBlock"]
    # The loss is a batch mean (its terms are batch-coupled); Trainer must not expect `num_items_in_batch` handling.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Upstream's init: torchvision ResNet convs/norms, classifiers normal(0, 0.001), PyTorch defaults
        for the uncertainty MLP (PReLU slope 0.25). Real weights come from a checkpoint."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            super()._init_weights(module)  # transformers\' norm init: weight 1, bias 0, statistics reset
        elif isinstance(module, nn.Linear):
            if self._is_classifier(module):
                init.normal_(module.weight, mean=0.0, std=self.config.classifier_init_std)
                if module.bias is not None:
                    init.zeros_(module.bias)
            else:  # nn.Linear.reset_parameters
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                if module.bias is not None:
                    bound = 1.0 / math.sqrt(module.weight.shape[1])
                    init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)

    def _is_classifier(self, module: nn.Module) -> bool:
        classifiers = [getattr(self, "classifier", None), *(getattr(self, "aux_classifiers", None) or [])]
        return any(module is classifier for classifier in classifiers)


class DmueModel(DmuePreTrainedModel):
    """The deployed DMUE network without its classifier (``AutoModel``; image-feature-extraction).

    Same attribute names as :class:`DmueForImageClassification` (``resnet``, ``neck``), whose checkpoints it
    loads (classifier and training-only branches left out). ``last_hidden_state`` is the target branch's
    stage-4 map; ``pooler_output`` the pooled, BN-neck-normalised feature the classifier reads.
    """

    def __init__(self, config: DmueConfig):
        super().__init__(config)
        self.resnet = build_dmue_resnet18(config)
        self.pooler = DmuePooling(config.pooling, config.gem_p)
        self.neck = nn.BatchNorm1d(config.hidden_size) if config.use_bnneck else None
        self.post_init()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        resnet = self.resnet
        hidden = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(pixel_values))))
        hidden_states = (hidden,)
        for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            hidden = stage(hidden)
            hidden_states += (hidden,)
        pooled = self.pooler(hidden)
        if self.neck is not None:
            pooled = self.neck(pooled)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden, pooler_output=pooled, hidden_states=hidden_states if output_hidden_states else None
        )


class DmueForImageClassification(DmuePreTrainedModel):
    """DMUE: the deployed ResNet-18 classifier, or (``config.use_aux_branches``) the multi-branch training model.

    Parameter names: ``resnet.*`` torchvision ResNet-18 (``resnet.layer4`` = target branch), ``neck``
    (BatchNorm1d), ``classifier``; training model only: ``aux_branches.c`` (stage-4 copies),
    ``aux_classifiers.c`` and ``uncertainty_head`` (Linear(2C, C) -> PReLU -> Linear(C, 1)).
    """

    def __init__(self, config: DmueConfig):
        super().__init__(config)
        if config.hidden_size != 512:
            raise ValueError(f"DmueConfig.hidden_size must be 512 for the resnet18 backbone, got {config.hidden_size}")
        num_labels = config.num_labels
        self.num_labels = num_labels

        self.resnet = build_dmue_resnet18(config)
        self.pooler = DmuePooling(config.pooling, config.gem_p)
        self.dropout = nn.Dropout(config.dropout_prob)
        self.neck = nn.BatchNorm1d(config.hidden_size) if config.use_bnneck else None
        self.classifier = nn.Linear(config.hidden_size, num_labels, bias=config.classifier_bias)

        if config.use_aux_branches:
            if num_labels < 2:
                raise ValueError(f"DMUE's auxiliary branches need at least 2 classes, got num_labels={num_labels}")
            self.aux_branches = nn.ModuleList(copy.deepcopy(self.resnet.layer4) for _ in range(num_labels))
            self.aux_classifiers = nn.ModuleList(
                nn.Linear(config.hidden_size, num_labels - 1, bias=config.classifier_bias) for _ in range(num_labels)
            )
            hidden = config.uncertainty_hidden_size or num_labels
            self.uncertainty_head = nn.Sequential(nn.Linear(2 * num_labels, hidden), nn.PReLU(), nn.Linear(hidden, 1))
        else:
            self.aux_branches = self.aux_classifiers = self.uncertainty_head = None

        self.epoch = 0.0
        self.post_init()
        self._freeze_untrained_parameters()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then re-freeze what the config freezes (loading recreates parameters
        with ``requires_grad=True``)."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._freeze_untrained_parameters()
        return loaded

    def _freeze_untrained_parameters(self) -> None:
        if self.neck is not None:
            self.neck.bias.requires_grad_(False)
            self.neck.weight.requires_grad_(self.config.train_neck_weight)
        if self.uncertainty_head is not None:
            self.uncertainty_head.requires_grad_(self.config.train_uncertainty_head)

    def set_epoch(self, epoch: float) -> None:
        """Set the (0-based) epoch that the ramp-up / ramp-down weights of the DMUE loss are computed from."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = float(epoch)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        epoch: float | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> DmueImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class indices. The deployed model returns the cross-entropy; the multi-branch model the DMUE
            objective (see the module docstring) with its terms. With ``config.problem_type``
            ``"multi_label_classification"`` / ``"regression"`` (float targets) the deployed model returns
            transformers' BCE-with-logits / MSE instead.
        epoch (`float`, *optional*):
            Epoch for the loss ramps of this call; defaults to the value of :meth:`set_epoch`.
        """
        if pixel_values is None:
            raise ValueError("DmueForImageClassification needs `pixel_values`")
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must have shape [batch, 3, height, width], got {list(pixel_values.shape)}")
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states

        shared_map, hidden_states = self._shared_trunk(pixel_values, output_hidden_states)
        target_map = self.resnet.layer4(shared_map)
        if output_hidden_states:
            hidden_states = hidden_states + (target_map,)
        pooled = self.pooler(target_map)
        features = self._apply_neck(self.dropout(pooled), updates_running_stats=True)
        logits = self.classifier(features)

        loss, terms = None, {}
        if labels is not None and not _is_single_label(self.config, labels):
            if self.aux_branches is not None:
                raise ValueError(
                    f"DMUE's multi-branch objective needs single-label class indices; problem_type is "
                    f"{self.config.problem_type!r}: train the deployed model (use_aux_branches=False) for it"
                )
            loss = self.loss_function(labels, logits, self.config)  # transformers' BCE-with-logits / MSE
        elif labels is not None:
            labels = self._check_labels(labels, pixel_values.shape[0])
            if self.aux_branches is None:
                loss = F.cross_entropy(logits, labels)
            else:
                terms = self._dmue_objective(shared_map, pooled, features, logits, labels, epoch)
                loss = terms.pop("loss")

        return DmueImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states, **terms)

    def _shared_trunk(self, pixel_values: torch.Tensor, output_hidden_states: bool):
        """Stem + stages 1-3 (shared by every branch). Returns the stage-3 map and the hidden states so far."""
        resnet = self.resnet
        hidden = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(pixel_values))))
        hidden_states = (hidden,) if output_hidden_states else None
        for stage in (resnet.layer1, resnet.layer2, resnet.layer3):
            hidden = stage(hidden)
            if output_hidden_states:
                hidden_states = hidden_states + (hidden,)
        return hidden, hidden_states

    def _apply_neck(self, features: torch.Tensor, updates_running_stats: bool) -> torch.Tensor:
        """The shared BN neck (see quirks 3 and 9 in the module docstring for the training-mode details)."""
        neck = self.neck
        if neck is None or not self.training:
            return features if neck is None else neck(features)
        if features.shape[0] < 2:  # batch statistics of one sample are undefined
            return F.batch_norm(features, neck.running_mean, neck.running_var, neck.weight, neck.bias, False, 0.0, neck.eps)
        if updates_running_stats or self.config.neck_stats_from_all_branches:
            return neck(features)
        return F.batch_norm(features, None, None, neck.weight, neck.bias, True, 0.0, neck.eps)

    def _run_branch(self, branch: nn.Module, shared_map: torch.Tensor) -> torch.Tensor:
        """A stage-4 copy on a subset of the batch. One image whose stage-4 map is 1x1 (inputs of at most 32 px) has
        no batch statistics, so that call uses the running ones, as the neck does for one sample; upstream crashes
        there ("Expected more than 1 value per channel"), or not, depending on the labels of the batch."""
        height, width = shared_map.shape[-2:]
        if not (self.training and shared_map.shape[0] == 1 and (height + 1) // 2 * ((width + 1) // 2) == 1):
            return branch(shared_map)
        branch.train(False)
        try:
            return branch(shared_map)
        finally:
            branch.train(True)

    def _check_labels(self, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
        if labels.dim() != 1 or labels.shape[0] != batch_size:
            raise ValueError(f"labels must have shape [{batch_size}] (one class index per image), got {list(labels.shape)}")
        if labels.is_floating_point():
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_labels):
            raise ValueError(f"labels must lie in [0, {self.num_labels - 1}], got min {labels.min().item()} max {labels.max().item()}")
        return labels

    def _dmue_objective(self, shared_map, pooled, features, logits, labels, epoch) -> dict:
        """The DMUE training objective (upstream "sp_confidence" phase + train.py loss)."""
        num_labels = self.num_labels
        one_hot = F.one_hot(labels, num_labels).to(logits.dtype)
        target_gram_full = features @ features.T

        aux_logits, aux_targets, latent_logits, aux_grams, target_grams = [], [], [], [], []
        aux_losses, sp_losses = [], []
        soft_targets = torch.zeros_like(logits)
        for excluded, (branch, head) in enumerate(zip(self.aux_branches, self.aux_classifiers)):
            others, members = labels != excluded, labels == excluded

            if others.any():  # branch c learns to classify every sample that is not of class c
                branch_features = self.pooler(self._run_branch(branch, shared_map[others]))
                branch_logits = head(self._apply_neck(self.dropout(branch_features), updates_running_stats=False))
                branch_targets = labels[others] - (labels[others] > excluded).long()
                aux_gram = F.normalize(branch_logits @ branch_logits.T, dim=1)
                target_gram = F.normalize(target_gram_full[others][:, others], dim=1)
                aux_losses.append(F.cross_entropy(branch_logits, branch_targets))
                sp_losses.append(F.mse_loss(aux_gram, target_gram))
            else:
                branch_logits = logits.new_zeros(0, num_labels - 1)
                branch_targets = labels.new_zeros(0)
                aux_gram = target_gram = logits.new_zeros(0, 0)

            if members.any():  # ... and reads the latent distribution of the samples of class c
                with torch.no_grad():
                    latent = head(self._apply_neck(self.pooler(self._run_branch(branch, shared_map[members])), updates_running_stats=False))
                soft_targets[members] = self._latent_distribution(latent, excluded).to(soft_targets.dtype)
            else:
                latent = logits.new_zeros(0, num_labels - 1)

            aux_logits.append(branch_logits)
            aux_targets.append(branch_targets)
            latent_logits.append(latent)
            aux_grams.append(aux_gram)
            target_grams.append(target_gram)

        score = self._uncertainty_score(pooled, one_hot)
        weighted_logits = logits * score

        loss_ce = F.cross_entropy(weighted_logits, labels)
        masked_probabilities = logits.softmax(dim=1) * (1.0 - one_hot)
        loss_soft = (masked_probabilities - soft_targets).pow(2).mean()
        loss_aux = torch.stack(aux_losses).mean() if aux_losses else logits.new_zeros(())
        loss_sp = torch.stack(sp_losses).mean() if sp_losses else logits.new_zeros(())

        loss, ramp_up, ramp_down = self.combine_losses(loss_ce, loss_soft, loss_aux, loss_sp, epoch)
        return {
            "loss": loss, "loss_ce": loss_ce, "loss_soft": loss_soft, "loss_aux": loss_aux, "loss_sp": loss_sp,
            "uncertainty_score": score, "weighted_logits": weighted_logits,
            "aux_logits": tuple(aux_logits), "aux_targets": tuple(aux_targets), "latent_logits": tuple(latent_logits),
            "soft_targets": soft_targets, "aux_gram": tuple(aux_grams), "target_gram": tuple(target_grams),
            "ramp_up_weight": logits.new_tensor(ramp_up), "ramp_down_weight": logits.new_tensor(ramp_down),
        }

    def combine_losses(self, loss_ce, loss_soft, loss_aux, loss_sp, epoch: float | None = None):
        """The DMUE total ``up(e) * (L_ce + w * L_soft + gamma * L_sp) + down(e) * L_aux`` at ``epoch`` (default:
        the :meth:`set_epoch` value). Returns ``(loss, up(e), down(e))``."""
        config = self.config
        ramp_up, ramp_down = dmue_ramp_weights(self.epoch if epoch is None else float(epoch), config.ramp_epochs)
        target_terms = loss_ce + config.soft_loss_weight * loss_soft + config.sp_loss_weight * loss_sp
        return ramp_up * target_terms + ramp_down * loss_aux, ramp_up, ramp_down

    def _latent_distribution(self, latent_logits: torch.Tensor, excluded: int) -> torch.Tensor:
        """Sharpened softmax over the C-1 other classes, widened to C with a 0 at the sample's own class."""
        probabilities = latent_logits.softmax(dim=1).pow(1.0 / self.config.sharpen_temperature)
        probabilities = probabilities / probabilities.sum(dim=1, keepdim=True)
        zero = probabilities.new_zeros(probabilities.shape[0], 1)
        return torch.cat([probabilities[:, :excluded], zero, probabilities[:, excluded:]], dim=1)

    def _uncertainty_score(self, pooled: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """Per-sample score in (0, 1) from the mean cosine similarity to each class in the batch + the label."""
        norms = pooled.norm(dim=1, keepdim=True)
        similarity = (pooled @ pooled.T) / (norms @ norms.T)
        counts = one_hot.sum(dim=0)
        present = counts > 0
        class_similarity = (similarity @ one_hot) / counts.clamp(min=1)  # [B, C]; includes the sample itself
        low = class_similarity.masked_fill(~present, float("inf")).amin(dim=1, keepdim=True)
        high = class_similarity.masked_fill(~present, float("-inf")).amax(dim=1, keepdim=True)
        class_similarity = (class_similarity - low) / (high - low).clamp(min=1e-12)
        class_similarity = class_similarity.masked_fill(~present, 0.0)
        statistics = torch.cat([class_similarity, one_hot], dim=1)
        return torch.sigmoid(self.uncertainty_head(statistics))

    def to_inference_model(self) -> "DmueForImageClassification":
        """The deployed model: the target branch only, as upstream ``convert_weights.py`` makes it (auxiliary
        branches, auxiliary classifiers and the uncertainty head dropped; everything else copied exactly)."""
        if self.aux_branches is None:
            return self
        config = copy.deepcopy(self.config)
        config.use_aux_branches = False
        model = self.__class__(config)
        dropped = ("aux_branches.", "aux_classifiers.", "uncertainty_head.")
        state_dict = {k: v for k, v in self.state_dict().items() if not k.startswith(dropped)}
        model.load_state_dict(state_dict, strict=True)
        return model.to(device=self.device, dtype=self.dtype).train(self.training)

    def save_pretrained(self, save_directory, *args, target_branch_only: bool = False, **kwargs):
        """``save_pretrained``; with ``target_branch_only=True`` a multi-branch model writes the deployed model."""
        if target_branch_only and self.aux_branches is not None:
            return self.to_inference_model().save_pretrained(save_directory, *args, **kwargs)
        return super().save_pretrained(save_directory, *args, **kwargs)


__all__ = ["DmuePreTrainedModel", "DmueModel", "DmueForImageClassification", "DmueImageClassifierOutput", "dmue_ramp_weights", "build_dmue_resnet18"]

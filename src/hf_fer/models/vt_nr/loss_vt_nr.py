"""Prior-distribution label smoothing (PDLS) and its focal variant F-PDLS, VT-NR's training loss.

Label smoothing spreads part of the target mass over other classes; PDLS spreads it the way human
annotators actually confuse expressions (a prior matrix measured on FER+ votes: sad faces are often
read as neutral, fearful ones as surprised) instead of uniformly. F-PDLS adds a focal factor.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

FOCAL_MODES = (None, "power", "compensated")


def pdls_targets(labels: torch.Tensor, num_labels: int, prior: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """Soft targets ``q = alpha * onehot + (1 - alpha) * d`` (``[B, K]``).

    Hard labels ``[B]``: ``d`` is the prior row of the true class (``prior[labels]``) and ``onehot`` is the
    true class. Soft labels ``[B, K]`` (e.g. FERPlus vote counts or distributions; rows are normalised):
    ``d`` is the image's own distribution and ``onehot`` its most-voted class; no prior matrix is needed.
    """
    if labels.dim() == 1:
        if labels.dtype.is_floating_point:
            raise ValueError(f"class-index labels must be integers, got dtype {labels.dtype}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
            raise ValueError(f"labels must be class indices in 0..{num_labels - 1}, got values {sorted(set(labels.tolist()))}")
        if prior is None:
            raise ValueError(
                "PDLS with class-index labels needs config.label_prior_matrix ([num_labels, num_labels], rows = true class "
                "in id2label order); build one for your label space (hf_fer.converters.convert_vt_nr_original.label_prior_for) "
                "or set loss_type='cross_entropy'"
            )
        distribution = prior.to(device=labels.device)[labels]
        hard = F.one_hot(labels, num_labels)
    elif labels.dim() == 2:
        if labels.shape[1] != num_labels:
            raise ValueError(f"soft labels must be [batch, {num_labels}], got {list(labels.shape)}")
        labels = labels.float()
        if (labels < 0).any():
            raise ValueError("soft labels (vote counts or probabilities) must be non-negative")
        totals = labels.sum(dim=1, keepdim=True)
        if (totals <= 0).any():
            raise ValueError("every soft-label row needs at least one vote (a row sums to 0)")
        distribution = labels / totals
        hard = F.one_hot(distribution.argmax(dim=1), num_labels)
    else:
        raise ValueError(f"labels must be [batch] class indices or [batch, {num_labels}] soft labels, got shape {list(labels.shape)}")
    return alpha * hard.to(distribution.dtype) + (1.0 - alpha) * distribution


def prior_label_smoothing_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    prior: torch.Tensor | None,
    alpha: float = 0.8,
    gamma: float = 2.0,
    focal: str | None = "power",
    reduction: str = "mean",
) -> torch.Tensor:
    """F-PDLS (``focal="power"``), compensated F-PDLS (``"compensated"``) or PDLS (``None``).

    ``loss_i = -sum_k q_ik * log p_ik * w_ik`` with the focal weight applied to *every* class with that
    class's own probability: ``w = (1 - p) ** gamma`` ("power"), ``(1 - p) * K / (K - 1)``
    ("compensated") or 1. Computed in float32 at least (the prior matrix is float32 data).
    """
    if focal not in FOCAL_MODES:
        raise ValueError(f"focal must be one of {FOCAL_MODES}, got {focal!r}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, num_labels], got {list(logits.shape)}")
    num_labels = logits.shape[1]
    if prior is not None and tuple(prior.shape) != (num_labels, num_labels):
        raise ValueError(f"label prior matrix must be [{num_labels}, {num_labels}] for {num_labels} logits, got {list(prior.shape)}")
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for a batch of {logits.shape[0]} logits")
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    targets = pdls_targets(labels, num_labels, prior, alpha).to(logits.dtype)
    log_probs = F.log_softmax(logits, dim=1)
    per_class = -targets * log_probs
    if focal == "power":
        per_class = per_class * (1.0 - log_probs.exp()) ** gamma
    elif focal == "compensated":
        per_class = per_class * (1.0 - log_probs.exp()) * (num_labels / (num_labels - 1))
    per_sample = per_class.sum(dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

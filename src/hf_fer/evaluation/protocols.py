"""Evaluation protocols: how images are batched and fed to a model, named and recorded in every result.

* ``hf_fer`` (default): our protocol. The checkpoint's own image processor, one view per image, and
  **batch-independent** scores: a model whose eval forward couples the images of a batch (ARM with
  ``affinity_mode="batch"``, i.e. converted upstream checkpoints) is run one image per forward call, so the
  same image always gets the same scores whatever ``--batch-size`` and neighbours are.
* ``paper``: each upstream evaluation as its spec (``shared/specs/<arch>.md``) describes it: the test split
  in file order, the upstream eval transform (what the converted checkpoint's image processor does), no
  test-time augmentation, and the upstream eval batch size where the result depends on it (ARM: batches of
  64 consecutive images, affinity shared within each batch).

Test-time augmentation (``--tta flip``) is not part of either protocol: it is reported as its own row.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["PROTOCOLS", "TTA_MODES", "PaperProtocol", "PAPER_PROTOCOLS", "ProtocolPlan", "is_batch_dependent", "plan_protocol"]

PROTOCOLS = ("hf_fer", "paper")
TTA_MODES = ("none", "flip")


@dataclass(frozen=True)
class PaperProtocol:
    """What an upstream evaluation did (from the architecture's spec)."""

    batch_size: int | None  # None: the upstream result does not depend on it
    affinity_mode: str | None = None  # ARM: the eval forward shares the affinity map within a batch
    preprocessing: str = ""
    notes: str = ""


PAPER_PROTOCOLS: dict[str, PaperProtocol] = {
    "arm": PaperProtocol(64, "batch", "resize to 224x224 (bilinear, no crop), ImageNet mean/std",
                         "upstream test_raf-db.py: test list in file order, not shuffled, batch 64; the affinity map is the mean "
                         "over each batch of 64 consecutive images (the last batch holds the remainder)"),
    "poster_v2": PaperProtocol(None, None, "resize to 224x224 (bilinear, no crop), ImageNet mean/std",
                               "upstream main.py: overall top-1 over the test split; eval forward is batch-independent"),
    "dacl": PaperProtocol(None, None, "resize 256, center crop 224, ImageNet mean/std",
                          "upstream: overall accuracy on the test folder; eval forward is batch-independent"),
    "dmue": PaperProtocol(None, None, "resize 256x256, center crop 224, mean/std 0.5",
                          "upstream inference.py / val loader; eval forward is batch-independent"),
    "vt_nr": PaperProtocol(None, None, "384x384 input, ImageNet mean/std",
                           "upstream evaluated with its random training transforms (a quirk not reproduced: the deterministic "
                           "eval transform is used); eval forward is batch-independent"),
}


@dataclass
class ProtocolPlan:
    """How :func:`hf_fer.evaluation.evaluate_model` runs the model; ``record()`` goes into ``eval_results.json``."""

    name: str
    tta: str
    forward_batch_size: int | None  # images per forward call; None = the loading batch size
    affinity_mode: str | None = None  # set on the model for this evaluation (ARM)
    batch_independent: bool = True
    notes: list[str] = field(default_factory=list)

    def record(self, loading_batch_size: int) -> dict:
        data = asdict(self)
        data["forward_batch_size"] = self.forward_batch_size or loading_batch_size
        return data


def is_batch_dependent(model) -> bool:
    """Whether the model's eval forward mixes the images of a batch (ARM's upstream ``affinity_mode="batch"``)."""
    return getattr(getattr(model, "config", None), "affinity_mode", None) == "batch"


def plan_protocol(name: str, model, batch_size: int, tta: str = "none") -> ProtocolPlan:
    """Decide batching (and ARM's affinity mode) for ``name``; explain every choice in ``notes``."""
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {PROTOCOLS}, got {name!r}")
    if tta not in TTA_MODES:
        raise ValueError(f"--tta must be one of {TTA_MODES}, got {tta!r}")
    model_type = getattr(model.config, "model_type", None)
    if name == "paper":
        if tta != "none":
            raise ValueError("--tta is not part of the paper protocol (upstream evaluations are single-view); use --protocol hf_fer --tta flip")
        spec = PAPER_PROTOCOLS.get(model_type)
        if spec is None:
            raise ValueError(f"--protocol paper: no upstream evaluation protocol is known for model_type {model_type!r} "
                             f"(known: {sorted(PAPER_PROTOCOLS)}); use --protocol hf_fer")
        notes = [spec.notes, f"upstream preprocessing: {spec.preprocessing} (the checkpoint's image processor is used)"]
        if spec.batch_size is not None:
            if batch_size != spec.batch_size:
                notes.append(f"batch size {spec.batch_size} as upstream (--batch-size {batch_size} ignored)")
            if spec.affinity_mode and getattr(model.config, "affinity_mode", None) != spec.affinity_mode:
                notes.append(f"affinity_mode switched from {model.config.affinity_mode!r} to {spec.affinity_mode!r} for this evaluation, as upstream")
            return ProtocolPlan("paper", tta, spec.batch_size, spec.affinity_mode, batch_independent=False, notes=notes)
        return ProtocolPlan("paper", tta, None, None, batch_independent=True, notes=notes)
    if is_batch_dependent(model):
        return ProtocolPlan("hf_fer", tta, 1, None, batch_independent=True, notes=[
            "the model's eval forward couples the images of a batch (affinity_mode='batch'): each image is run alone, "
            "so its scores do not depend on its neighbours (calibrate_affinity() makes batched runs independent too)"])
    return ProtocolPlan("hf_fer", tta, None, None, batch_independent=True, notes=["batch-independent eval forward; the checkpoint's image processor"])

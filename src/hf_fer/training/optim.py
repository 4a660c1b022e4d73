"""Optimizers from recipes: parameter groups by name pattern, SAM, and epoch-aware LR schedules.

Every schedule is expressed as a per-optimizer-step multiplier (``LambdaLR``), so it is stepped once
per step, checkpointed (``hf_fer.training.state.save_checkpoint``) and resumed exactly; per-epoch schedules of
the papers (ARM's ExponentialLR, DACL's StepLR, DMUE's lr tables) are functions of
``step // steps_per_epoch``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch

from .recipe import OptimizerSection, ParamGroupSection, RecipeError, SamSection, SchedulerSection


def build_param_groups(model: torch.nn.Module, optimizer: OptimizerSection, groups: list[ParamGroupSection]) -> tuple[list[dict], list[ParamGroupSection | None]]:
    """Assign every trainable parameter to the first group whose pattern matches its name (else the default group).

    Returns the torch param-group dicts and, aligned with them, the recipe group each came from
    (``None`` for the default group). Parameters with ``requires_grad=False`` (e.g. POSTER V2's frozen
    landmark network) are left out; a pattern that matches nothing is an error (a typo must not pass).
    """
    compiled = [(re.compile(g.pattern), g) for g in groups]
    buckets: list[list[torch.nn.Parameter]] = [[] for _ in groups]
    default: list[torch.nn.Parameter] = []
    matched = [0] * len(groups)
    for name, parameter in model.named_parameters():
        for index, (regex, group) in enumerate(compiled):
            if regex.search(name):
                matched[index] += 1
                if group.frozen:
                    parameter.requires_grad_(False)
                elif parameter.requires_grad:
                    buckets[index].append(parameter)
                break
        else:
            if parameter.requires_grad:
                default.append(parameter)
    for count, group in zip(matched, groups):
        if count == 0:
            names = [n for n, _ in model.named_parameters()][:12]
            raise RecipeError(f"param_groups pattern {group.pattern!r} matches no parameter (names look like {names} ...)")
    torch_groups: list[dict] = []
    sources: list[ParamGroupSection | None] = []
    if default:
        torch_groups.append({"params": default})
        sources.append(None)
    for params, group in zip(buckets, groups):
        if not params:
            continue
        options = {"params": params}
        for key in ("lr", "weight_decay", "momentum", "betas"):
            value = getattr(group, key)
            if value is not None:
                options[key] = value
        torch_groups.append(options)
        sources.append(group)
    return torch_groups, sources


def build_optimizer(param_groups: list[dict], section: OptimizerSection) -> torch.optim.Optimizer:
    name = section.name
    if name == "sgd":
        clean = [{k: v for k, v in g.items() if k != "betas"} for g in param_groups]
        return torch.optim.SGD(clean, lr=section.lr, momentum=section.momentum, weight_decay=section.weight_decay, nesterov=section.nesterov)
    clean = [{k: v for k, v in g.items() if k != "momentum"} for g in param_groups]
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(clean, lr=section.lr, betas=section.betas, eps=section.eps, weight_decay=section.weight_decay,
               fused=_can_fuse(clean) or None)


def _can_fuse(param_groups: list[dict]) -> bool:
    """Whether torch's fused Adam kernel applies: every parameter a float tensor on the CPU or a CUDA device.

    Same update rule, one kernel per step instead of a Python loop over tensors: measured on DMUE's synthetic recipe
    (30.6 M parameters, 2.3 M of them in the forward path of a 48-px batch), the optimizer step went from 0.140 s to
    0.021 s of one CPU core, a fifth of the whole training step."""
    params = [p for group in param_groups for p in group["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


class SAM:
    """Sharpness-Aware Minimization (Foret et al., 2021) around a base optimizer, as POSTER V2 trains.

    ``first_step``: move every parameter with a gradient to ``w + rho * g / ||g||`` (``adaptive``:
    scale by ``|w|``), remembering ``w``; the caller then recomputes the loss on the same batch and
    back-propagates; ``second_step``: restore ``w`` and let the base optimizer step with the gradient
    taken at the perturbed point. The base optimizer's param groups are shared, so LR schedulers attach
    to the base optimizer as usual.
    """

    def __init__(self, base_optimizer: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False):
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        self.base_optimizer = base_optimizer
        self.rho = rho
        self.adaptive = adaptive
        self._saved: dict[torch.nn.Parameter, torch.Tensor] = {}

    @property
    def param_groups(self):
        return self.base_optimizer.param_groups

    def _grad_norm(self) -> torch.Tensor:
        norms = [
            ((p.abs() if self.adaptive else 1.0) * p.grad).norm(p=2)
            for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        if not norms:
            return torch.tensor(0.0)
        return torch.norm(torch.stack(norms), p=2)

    @torch.no_grad()
    def first_step(self) -> None:
        scale = self.rho / (self._grad_norm() + 1e-12)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._saved[p] = p.detach().clone()
                p.add_((torch.pow(p, 2) if self.adaptive else 1.0) * p.grad * scale.to(p))
        self.base_optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self) -> None:
        for p, original in self._saved.items():
            p.copy_(original)
        self._saved.clear()
        self.base_optimizer.step()


def wrap_sam(optimizer: torch.optim.Optimizer, section: SamSection | None) -> SAM | None:
    return None if section is None else SAM(optimizer, rho=section.rho, adaptive=section.adaptive)


def epoch_factor(section: SchedulerSection, epoch: float, total_epochs: float) -> float:
    """LR multiplier at a (fractional) epoch for the per-epoch schedules of the papers."""
    e = math.floor(epoch) + section.epoch_offset
    name = section.name
    if name == "constant":
        return 1.0
    if name == "exponential":
        return section.gamma ** e
    if name == "step":
        return section.gamma ** (e // max(1, section.step_size))
    if name == "multistep":
        return section.gamma ** sum(e >= m for m in section.milestones)
    if name == "piecewise":  # values[i] applies while epoch < milestones[i]; the last value afterwards
        if len(section.values) != len(section.milestones) + 1 and len(section.values) != len(section.milestones):
            raise RecipeError(f"piecewise schedule needs len(values) == len(milestones) (+1), got {section.values} / {section.milestones}")
        for milestone, value in zip(section.milestones, section.values):
            if e < milestone:
                return value
        return section.values[-1]
    progress = min(1.0, max(0.0, epoch / max(total_epochs, 1e-9)))
    if name == "cosine":
        return section.min_lr_ratio + (1 - section.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if name == "linear":
        return section.min_lr_ratio + (1 - section.min_lr_ratio) * (1 - progress)
    raise RecipeError(f"unknown scheduler {name!r}")


def build_lr_lambdas(
    default: SchedulerSection, sources: list[ParamGroupSection | None], steps_per_epoch: int, total_steps: int
) -> list[Callable[[int], float]]:
    """One ``LambdaLR`` multiplier per param group: warm-up, then the group's epoch schedule."""
    total_epochs = total_steps / max(1, steps_per_epoch)

    def make(section: SchedulerSection | None, scheduled: bool) -> Callable[[int], float]:
        def factor(step: int) -> float:
            if not scheduled:
                return 1.0
            schedule = section or default
            warm = min(1.0, (step + 1) / schedule.warmup_steps) if schedule.warmup_steps > 0 else 1.0
            return warm * epoch_factor(schedule, step / max(1, steps_per_epoch), total_epochs)

        return factor

    return [make(src.scheduler if src else None, src.scheduled if src else True) for src in sources]

"""Optimizer and learning-rate schedule construction."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from mtmedformer.config.train import TrainConfig

# Parameters that must not be weight-decayed: decaying norms, biases and embeddings hurts ViTs.
_NO_DECAY_SUFFIXES = ("bias", "cls_token", "pos_embed")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim <= 1 or name.endswith(_NO_DECAY_SUFFIXES)


def build_optimizer(modules: dict[str, nn.Module], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Build AdamW or SGD over the trainable parameters of ``modules`` (e.g. model and loss weights).

    Two parameter groups, in this order: decayed weights (``cfg.weight_decay``), then norms, biases and
    embeddings (no decay); both at ``cfg.lr``.

    Parameters
    ----------
    modules
        Named modules whose parameters are optimised together, e.g. ``{"model": m, "loss": l}``.
    cfg
        Training settings (optimizer, lr, weight decay, momentum).
    """
    decayed: list[nn.Parameter] = []
    not_decayed: list[nn.Parameter] = []
    for prefix, module in modules.items():
        for name, param in module.named_parameters():
            if param.requires_grad:
                (not_decayed if _no_decay(f"{prefix}.{name}", param) else decayed).append(param)
    groups = [
        {"params": decayed, "weight_decay": cfg.weight_decay, "lr": cfg.lr},
        {"params": not_decayed, "weight_decay": 0.0, "lr": cfg.lr},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    # fused: one kernel per optimizer step instead of several small ops per parameter tensor
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    total_steps: int,
    clock: Callable[[], float] = time.monotonic,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up for ``cfg.warmup_steps`` steps, then cosine decay to 0 at ``total_steps`` (or constant).

    With ``cfg.schedule_over == "budget"`` the cosine's progress is the larger of the step fraction and the
    fraction of the ``cfg.max_minutes`` budget spent since this call (``clock``, seconds), so a run that the
    budget stops early still ends at a small learning rate instead of mid-schedule (budget-aware decay, Li et
    al., "Budgeted Training", ICLR 2020). The schedule is then tied to wall time, not to steps alone: the same
    seed on a slower or busier machine gives a different schedule.
    """
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    start = clock()
    budget_s = 60.0 * cfg.max_minutes if cfg.schedule_over == "budget" and cfg.max_minutes else None

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if budget_s is not None:
            progress = max(progress, min(1.0, (clock() - start) / budget_s))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

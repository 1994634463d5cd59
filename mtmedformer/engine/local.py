"""Local training at one site for one federated round, built on the same epoch function as centralized training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mtmedformer.config import ExperimentConfig
from mtmedformer.engine.loop import EpochResult, train_epoch
from mtmedformer.engine.optim import build_optimizer
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.trainer import make_loader


@dataclass
class LocalResult:
    """The outcome of one round of local training.

    Attributes
    ----------
    epochs
        One :class:`~mtmedformer.engine.loop.EpochResult` per local epoch.
    optimizer_state
        The optimizer's state after training (kept by the caller when it persists across rounds).
    """

    epochs: list[EpochResult] = field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None

    @property
    def seconds(self) -> float:
        """Wall time of local training."""
        return sum(e.seconds for e in self.epochs)

    @property
    def loss(self) -> float:
        """Mean total loss of the last epoch."""
        return self.epochs[-1].loss if self.epochs else float("nan")

    @property
    def task_losses(self) -> dict[str, float]:
        """Per-task mean loss of the last epoch."""
        return self.epochs[-1].task_losses if self.epochs else {}


def proximal_term(model: nn.Module, mu: float) -> Any:
    """FedProx's ``mu / 2 * ||w - w_global||^2`` with ``w_global`` frozen at call time (Li et al., MLSys 2020)."""
    anchors = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    def term() -> torch.Tensor:
        return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in anchors)

    return term


def train_locally(
    model: nn.Module,
    loss_fn: nn.Module,
    train_set: Dataset,
    cfg: ExperimentConfig,
    *,
    epochs: int,
    seed: int,
    max_steps: int | None = None,
    proximal_mu: float = 0.0,
    optimizer_state: dict[str, Any] | None = None,
    first_epoch: int = 0,
) -> LocalResult:
    """Train ``model`` in place on one site's training split for one round.

    Parameters
    ----------
    model, loss_fn
        The model (already holding the global weights) and the site's hybrid loss.
    train_set
        The site's training split.
    cfg
        Experiment config (batch size, optimizer, learning rate, gradient clipping).
    epochs
        Local epochs this round.
    seed
        Seed of this site and round: the same global weights and seed give the same update.
    max_steps
        Cap on optimisation steps over all local epochs (None = no cap).
    proximal_mu
        FedProx proximal weight; 0 disables the term.
    optimizer_state
        Optimizer state from the previous round at this site, or None for a fresh optimizer.
    first_epoch
        Global index of this round's first local epoch, so augmentations differ from round to round.

    Notes
    -----
    The learning rate is constant within a round (``train.lr``): warm-up and cosine schedules are defined
    over a whole centralized run and have no meaning across rounds with different participants.
    """
    generator = seed_everything(seed)
    loader = make_loader(train_set, cfg, train=True, generator=generator)
    optimizer = build_optimizer({"model": model, "loss": loss_fn}, cfg.train)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    extra = proximal_term(model, proximal_mu) if proximal_mu > 0 else None
    result = LocalResult()
    steps_left = max_steps
    for epoch in range(epochs):
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(first_epoch + epoch)
        epoch_result = train_epoch(
            model, loss_fn, loader, optimizer, grad_clip=cfg.train.grad_clip, max_steps=steps_left,
            extra_loss=extra, desc=f"local epoch {epoch + 1}",
            precision=cfg.train.precision,
        )
        result.epochs.append(epoch_result)
        if steps_left is not None:
            steps_left -= epoch_result.num_steps
            if steps_left <= 0:
                break
    result.optimizer_state = optimizer.state_dict()
    return result

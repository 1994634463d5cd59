"""How the per-task loss terms are combined into one scalar: fixed weights or learned uncertainty weights.

Both weightings take only the terms present in the batch (a task without an annotated sample has no term),
so an absent task contributes nothing, not even the uncertainty regulariser ``s_t``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mtmedformer.config.loss import LossConfig


class TaskWeighting(nn.Module):
    """Base class: ``forward(terms) -> total`` and ``effective_weights()`` for logging."""

    tasks: tuple[str, ...]

    def _check(self, terms: Mapping[str, torch.Tensor]) -> None:
        unknown = sorted(set(terms) - set(self.tasks))
        if unknown:
            raise ValueError(f"loss terms for tasks {unknown} that are not enabled; enabled tasks: {list(self.tasks)}")
        if not terms:
            raise ValueError("no loss term to weight; the caller must handle batches without any annotated task")

    def effective_weights(self) -> dict[str, float]:
        """Return the current multiplier of each task's loss term, ``{task: weight}``."""
        raise NotImplementedError


class FixedWeighting(TaskWeighting):
    """``total = sum_t w_t * L_t`` over the tasks present, with constant ``w_t``.

    Parameters
    ----------
    tasks
        The enabled task names.
    weights
        ``{task: w_t}``; must cover every enabled task.

    Raises
    ------
    ValueError
        If a task has no weight.
    """

    def __init__(self, tasks: tuple[str, ...], weights: Mapping[str, float]) -> None:
        super().__init__()
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise ValueError(f"fixed weighting has no weight for tasks {missing}")
        self.tasks = tuple(tasks)
        self.weights = {t: float(weights[t]) for t in tasks}

    def forward(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return the weighted sum of the scalar ``terms`` (``{task: L_t}``, a non-empty subset of tasks)."""
        self._check(terms)
        return torch.stack([self.weights[t] * loss for t, loss in terms.items()]).sum()

    def effective_weights(self) -> dict[str, float]:
        """Return the constant weights ``{task: w_t}``."""
        return dict(self.weights)


class UncertaintyWeighting(TaskWeighting):
    """Learned homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    The exact form used, for every task alike, is::

        total = sum_t  exp(-s_t) * L_t + s_t,      s_t = log sigma_t^2  (one learnable scalar per task)

    i.e. ``L_t / sigma_t^2 + log sigma_t^2``. This is the numerically stable log-variance form of the
    paper's Eq. 7 (regression, ``L / (2 sigma^2) + log sigma``) multiplied by 2; for classification the paper
    writes ``L / sigma^2 + log sigma`` (Eq. 10), whose optimum ``sigma^2 = 2 L`` differs from ours
    (``sigma^2 = L``) by a constant factor 2 only. We use one form for all tasks so that at the optimum every
    task's effective weight is ``1 / L_t``. The total can be negative once ``L_t < 1``; only its gradient
    matters. Tasks absent from a batch contribute neither term, so their ``s_t`` does not drift.

    Parameters
    ----------
    tasks
        The enabled task names.
    init
        Initial ``s_t`` of every task (``0`` = effective weight 1).
    """

    def __init__(self, tasks: tuple[str, ...], init: float = 0.0) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.tensor(float(init))) for t in tasks})

    def forward(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return ``sum_t exp(-s_t) L_t + s_t`` over the scalar ``terms`` present (``{task: L_t}``)."""
        self._check(terms)
        parts = [torch.exp(-self.log_vars[t]) * loss + self.log_vars[t] for t, loss in terms.items()]
        return torch.stack(parts).sum()

    def effective_weights(self) -> dict[str, float]:
        """Return the current ``exp(-s_t)`` of every enabled task."""
        return {t: float(torch.exp(-p.detach())) for t, p in self.log_vars.items()}


def build_weighting(cfg: LossConfig, tasks: tuple[str, ...]) -> TaskWeighting:
    """Return the weighting named by ``cfg.weighting`` for ``tasks``."""
    if cfg.weighting == "uncertainty":
        return UncertaintyWeighting(tasks, init=cfg.uncertainty_init)
    return FixedWeighting(tasks, cfg.weights.as_dict())

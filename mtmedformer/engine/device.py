"""Which torch device training and evaluation run on (``train.device``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mtmedformer.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """Map ``train.device`` to a torch device: ``"auto"`` is CUDA when available, else the CPU.

    Raises
    ------
    ConfigError
        If ``name`` is ``"cuda"`` and this torch build sees no CUDA device, or ``name`` is unknown.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "train.device is 'cuda' but torch sees no CUDA device (CPU-only torch build, no driver, or "
                "CUDA_VISIBLE_DEVICES empty): install a CUDA torch build on a GPU machine, or set train.device "
                "to auto or cpu"
            )
        return torch.device("cuda")
    raise ConfigError(f"train.device must be auto, cpu or cuda, got {name!r}")


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (the CPU for a module without parameters)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    """``value`` with ``fn`` applied to every tensor in it (nested dicts, lists and tuples are rebuilt)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(map_tensors(fn, v) for v in value)
    return value


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor in it moved to the CPU (model outputs, state dicts)."""
    return map_tensors(lambda t: t.cpu(), value)

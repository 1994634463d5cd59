"""Parameter bookkeeping: counts and which task (or the shared encoder) a state-dict key belongs to."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from mtmedformer import TASKS

ENCODER = "encoder"
"""Group name of the shared encoder's parameters (prefix ``encoder.``)."""


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameter elements of ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def head_prefix(task: str) -> str:
    """Return the state-dict key prefix of a task head, ``"heads.<task>."``.

    Raises
    ------
    ValueError
        If ``task`` is not one of :data:`mtmedformer.TASKS`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {list(TASKS)}")
    return f"heads.{task}."


def group_of_key(key: str) -> str:
    """Return ``"encoder"`` or the task name that owns the state-dict ``key``.

    Raises
    ------
    ValueError
        If the key belongs to neither the encoder nor a task head.
    """
    if key.startswith(ENCODER + "."):
        return ENCODER
    for task in TASKS:
        if key.startswith(head_prefix(task)):
            return task
    raise ValueError(f"state-dict key {key!r} belongs neither to 'encoder.' nor to 'heads.<task>.'")


def group_keys(keys: Iterable[str]) -> dict[str, list[str]]:
    """Group state-dict keys by owner: ``{"encoder": [...], "<task>": [...]}`` (only groups that occur).

    Raises
    ------
    ValueError
        If a key belongs to neither the encoder nor a task head.
    """
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(group_of_key(key), []).append(key)
    return groups

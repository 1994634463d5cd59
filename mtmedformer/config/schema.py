"""The experiment configuration: frozen, typed dataclasses with commented defaults.

One :class:`ExperimentConfig` is read once at the edge (CLI, ServerApp) by
:func:`mtmedformer.config.load_config` and handed down unchanged. Each section lives in its own
module and checks its own ranges in ``__post_init__``; cross-section consistency is checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mtmedformer import TASKS
from mtmedformer.config.data import DataConfig
from mtmedformer.config.loader import FieldError, suggest


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment. Sections are added by the model, training and federated layers."""

    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        pass


def check_tasks(name: str, tasks: tuple[str, ...]) -> None:
    """Raise :class:`FieldError` unless ``tasks`` is a non-empty subset of :data:`mtmedformer.TASKS`."""
    if not tasks:
        raise FieldError(name, f"enable at least one task of {list(TASKS)}")
    for task in tasks:
        if task not in TASKS:
            raise FieldError(name, f"unknown task '{task}'.{suggest(task, TASKS)} Valid tasks: {list(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise FieldError(name, f"lists a task twice: {list(tasks)}")

"""The task-list rule shared by the config sections: a non-empty subset of :data:`mtmedformer.TASKS`."""

from __future__ import annotations

from mtmedformer import TASKS
from mtmedformer.config.loader import FieldError, suggest


def check_tasks(name: str, tasks: tuple[str, ...]) -> None:
    """Raise :class:`FieldError` for ``name`` unless ``tasks`` is a non-empty subset of :data:`mtmedformer.TASKS`.

    Raises
    ------
    FieldError
        If ``tasks`` is empty, names an unknown task (the closest valid one is suggested) or lists a task twice.
    """
    if not tasks:
        raise FieldError(name, f"enable at least one task of {list(TASKS)}")
    for task in tasks:
        if task not in TASKS:
            raise FieldError(name, f"unknown task '{task}'.{suggest(task, TASKS)} Valid tasks: {list(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise FieldError(name, f"lists a task twice: {list(tasks)}")

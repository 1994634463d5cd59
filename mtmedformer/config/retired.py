"""Read experiment configs saved by earlier versions: drop the keys of settings that were removed.

A checkpoint (or a federated run's saved state) stores the whole resolved config, every key included. When a
setting is removed, the files written before hold its key with some value. If that value is the one
behaviour that remains (the removed setting's old default), the key is dropped and the file loads unchanged;
any other value describes a model variant that no longer exists, and loading stops with an error naming it.
Config files written by people are not passed through here: a removed key there gets the loader's normal
"unknown key" error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtmedformer.errors import ConfigError

RETIRED: dict[tuple[str, ...], Any] = {
    ("model", "stem"): "patch",  # the convolutional stem (stem: conv) was removed; the patch stem is the only one
    ("train", "classifier_lr_scale"): 1.0,  # the classifier's learning-rate multiplier was removed; 1 = none
    # matching growth (PFNM's new units) was removed (docs/decisions/005-matching-growth.md); fixed width remains
    ("federated", "matching", "growth"): False,
    ("federated", "matching", "gamma"): 1.0,
    ("federated", "matching", "growth_cap"): 2.0,
}
"""Key path of a removed setting -> the value that means what the remaining code does."""


def drop_retired_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of the saved config ``data`` without the :data:`RETIRED` keys that hold their kept value.

    Parameters
    ----------
    data
        A config as plain data (``to_dict`` of an :class:`~mtmedformer.config.schema.ExperimentConfig`).

    Raises
    ------
    ConfigError
        If a retired key holds any other value: the saved config describes a removed variant.
    """
    out = dict(data)
    for path, kept in RETIRED.items():
        out = _drop(out, path, kept, ".".join(path))
    return out


def _drop(values: Mapping[str, Any], path: tuple[str, ...], kept: Any, name: str) -> dict[str, Any]:
    """``values`` without the key at ``path`` (when it holds ``kept``), copying only the mappings on the path."""
    head, rest = path[0], path[1:]
    if head not in values:
        return dict(values)
    if rest:
        inner = values[head]
        return dict(values) if not isinstance(inner, Mapping) else {**values, head: _drop(inner, rest, kept, name)}
    if values[head] != kept:
        raise ConfigError(
            f"{name}: {values[head]!r} is a setting this version no longer has (only {kept!r} "
            "remains); retrain with the current version, or use the version that wrote this file"
        )
    return {k: v for k, v in values.items() if k != head}

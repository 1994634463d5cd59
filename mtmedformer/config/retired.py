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

RETIRED: dict[tuple[str, str], Any] = {
    ("model", "stem"): "patch",  # the convolutional stem (stem: conv) was removed; the patch stem is the only one
    ("train", "classifier_lr_scale"): 1.0,  # the classifier's learning-rate multiplier was removed; 1 = none
}
"""``(section, key)`` of a removed setting -> the value that means what the remaining code does."""


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
    for (section, key), kept in RETIRED.items():
        values = out.get(section)
        if not isinstance(values, Mapping) or key not in values:
            continue
        if values[key] != kept:
            raise ConfigError(
                f"{section}.{key}: {values[key]!r} is a setting this version no longer has (only {kept!r} "
                "remains); retrain with the current version, or use the version that wrote this file"
            )
        out[section] = {k: v for k, v in values.items() if k != key}
    return out

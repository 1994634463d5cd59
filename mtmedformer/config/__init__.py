"""Typed experiment configuration, validated once when it is read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mtmedformer.config.data import DataConfig, SyntheticConfig
from mtmedformer.config.loader import deep_merge, from_dict, parse_overrides, read_yaml, to_dict
from mtmedformer.config.schema import ExperimentConfig

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "SyntheticConfig",
    "config_from_dict",
    "load_config",
    "to_dict",
]


def config_from_dict(data: Mapping[str, Any] | None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Validate ``data`` (plus ``KEY=VALUE`` overrides) into an :class:`ExperimentConfig`."""
    merged = deep_merge(dict(data or {}), parse_overrides(overrides))
    return from_dict(ExperimentConfig, merged)


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment file (or all defaults when ``path`` is None) and apply overrides.

    Raises
    ------
    ConfigError
        If the file is missing or invalid, or any key or value is wrong; the message names the key path.
    """
    return config_from_dict(read_yaml(path) if path is not None else {}, overrides)

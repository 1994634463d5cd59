"""The ServerApp's run config (``[tool.flwr.app.config]``, ``flwr run --run-config``), read once and typed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtmedformer.config import ExperimentConfig, load_config
from mtmedformer.errors import ConfigError
from mtmedformer.folders import is_plain_folder_name

APP_ROOT = Path(__file__).resolve().parent.parent  # the installed app bundle (configs/ ships with it)


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(os.path.expanduser(path))
    return candidate if candidate.is_absolute() else (base / candidate)


def parse_flag(name: str, value: Any) -> bool:
    """A run-config switch: a TOML bool, or the text ``true``/``false`` (any case) that ``--run-config`` may give.

    ``bool("false")`` is true, so a string is never passed to ``bool``.

    Raises
    ------
    ConfigError
        For any other value, naming the key.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"run config '{name}': expected true or false, got {value!r}")


def check_run_name(value: Any) -> str:
    """The ``run-name``: one folder name inside the output root (empty = a timestamp is used).

    Raises
    ------
    ConfigError
        If it is not a string, is ``.`` or ``..``, starts with ``.`` or ``~``, or holds a path separator or a
        control character: a run name must not lead outside the output root or hide its folder.
    """
    if not isinstance(value, str):
        raise ConfigError(f"run config 'run-name': expected a folder name, got {value!r}")
    name = value.strip()
    if name and not is_plain_folder_name(name):
        raise ConfigError(
            f"run config 'run-name': {value!r} is not a plain folder name; use letters, digits, '-' and '_' "
            "(no '/', '\\', '..', leading '.' or '~'): the run folder is always created inside output-dir"
        )
    return name


@dataclass(frozen=True)
class ServerSettings:
    """Run-level settings of one federated run.

    Attributes
    ----------
    experiment
        Path of the experiment YAML (relative paths: the app folder, then the working directory).
    overrides
        ``KEY=VALUE`` overrides of the experiment, from ``overrides`` (separated by ``;``).
    output_dir
        Results folder root (empty: ``federated.output_dir`` of the experiment, relative to the working folder).
    run_name
        Name of this run's sub-folder (empty: a timestamp).
    resume
        Continue the run in ``<output_dir>/<run_name>`` from its last completed round.
    """

    experiment: Path
    overrides: tuple[str, ...]
    output_dir: str
    run_name: str
    resume: bool

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ServerSettings:
        """Parse the Flower run config.

        Raises
        ------
        ConfigError
            If the experiment file cannot be found, ``resume`` is not a boolean (or ``"true"``/``"false"``),
            or ``run-name`` is not a plain folder name.
        """
        raw = str(run_config.get("experiment", "configs/federated_demo.yaml"))
        candidates = [_resolve(raw, APP_ROOT), _resolve(raw, Path.cwd())]
        experiment = next((c for c in candidates if c.is_file()), None)
        if experiment is None:
            raise ConfigError(
                f"run config 'experiment': {raw} not found (looked in {', '.join(str(c) for c in candidates)}); "
                "pass --run-config \"experiment='/abs/path.yaml'\""
            )
        overrides = tuple(o.strip() for o in str(run_config.get("overrides", "")).split(";") if o.strip())
        return cls(
            experiment=experiment,
            overrides=overrides,
            output_dir=str(run_config.get("output-dir", "")),
            run_name=check_run_name(run_config.get("run-name", "")),
            resume=parse_flag("resume", run_config.get("resume", False)),
        )

    def load_experiment(self) -> ExperimentConfig:
        """Read and validate the experiment config with the overrides applied."""
        return load_config(self.experiment, self.overrides)

    def run_dir(self, cfg: ExperimentConfig, default_name: str) -> Path:
        """The folder of this run's results: ``<output root>/<run-name or default_name>``.

        Raises
        ------
        ConfigError
            If the name does not give a folder directly inside the output root.
        """
        root = Path(os.path.expanduser(self.output_dir or cfg.federated.output_dir))
        if not root.is_absolute():
            root = Path.cwd() / root
        name = check_run_name(self.run_name or default_name)
        run_dir = root / name
        if run_dir.resolve().parent != root.resolve():  # e.g. a run-name that is a symbolic link elsewhere
            raise ConfigError(f"run config 'run-name': {name!r} leads outside the output root {root}")
        return run_dir

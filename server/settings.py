"""The ServerApp's run config (``[tool.flwr.app.config]``, ``flwr run --run-config``), read once and typed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtmedformer.config import ExperimentConfig, load_config
from mtmedformer.errors import ConfigError

APP_ROOT = Path(__file__).resolve().parent.parent  # the installed app bundle (configs/ ships with it)


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(os.path.expanduser(path))
    return candidate if candidate.is_absolute() else (base / candidate)


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
            If the experiment file cannot be found.
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
            run_name=str(run_config.get("run-name", "")),
            resume=bool(run_config.get("resume", False)),
        )

    def load_experiment(self) -> ExperimentConfig:
        """Read and validate the experiment config with the overrides applied."""
        return load_config(self.experiment, self.overrides)

    def run_dir(self, cfg: ExperimentConfig, default_name: str) -> Path:
        """The folder of this run's results."""
        root = Path(os.path.expanduser(self.output_dir or cfg.federated.output_dir))
        if not root.is_absolute():
            root = Path.cwd() / root
        return root / (self.run_name or default_name)

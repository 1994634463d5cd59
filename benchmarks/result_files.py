"""Read access to the results folder (``docs/results``) for the doc tables, with errors that name the fix."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAKERS: dict[str, str] = {
    # results file -> what writes it (named in the error when it is missing)
    "centralized_shipped_10min.json": "mtmedformer train --config configs/centralized_mammography.yaml",
    "compare_baselines_128px_10min.json": "python -m benchmarks.compare_baselines",
    "classification_probe_10min.json": "python -m benchmarks.compare_baselines",
    "classification_variants_10min.json": "python -m benchmarks.compare_baselines",
    "throughput_128px.json": "python -m benchmarks.train_throughput --quick --json",
    "one_shot.json": "python -m benchmarks.fl_comparison",
    "iterative.json": "python -m benchmarks.fl_comparison",
    "bounds.json": "python -m benchmarks.fl_comparison",
    "identity_check.json": "python -m benchmarks.fl_comparison",
}


@dataclass
class ResultFiles:
    """The results files of one folder, each read once.

    Attributes
    ----------
    folder
        The results folder, e.g. ``docs/results``.
    """

    folder: Path
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def json(self, name: str) -> Any:
        """The parsed JSON file ``name`` of the folder.

        Raises
        ------
        FileNotFoundError
            If the file does not exist; the message names the command that writes it.
        ValueError
            If the file is not valid JSON.
        """
        if name not in self._cache:
            path = self._path(name)
            try:
                self._cache[name] = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                message = f"{path} is not valid JSON ({error}); rewrite it with the script that made it"
                raise ValueError(message) from error
        return self._cache[name]

    def text(self, name: str) -> str:
        """The text file ``name`` of the folder (a benchmark's saved output), without trailing blank lines."""
        return self._path(name).read_text(encoding="utf-8").rstrip("\n")

    def _path(self, name: str) -> Path:
        path = self.folder / name
        if not path.is_file():
            maker = MAKERS.get(name, "the benchmark that writes it")
            raise FileNotFoundError(f"{path} is missing: write it with `{maker}` or remove the block that quotes it")
        return path

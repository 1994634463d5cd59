"""Metric history: one flat row per epoch or round, written as JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from mtmedformer.atomic import atomic_write_text


def _clean(value: Any) -> Any:
    # JSON has no NaN/Inf: undefined metrics are None everywhere in the results.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricHistory:
    """An append-only list of flat metric rows (``{"epoch": 1, "val/segmentation/dice": 0.7, ...}``)."""

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows or []]

    def append(self, row: dict[str, Any]) -> None:
        """Add one row (non-finite floats become None)."""
        self.rows.append({k: _clean(v) for k, v in row.items()})

    def columns(self) -> list[str]:
        """All keys in first-seen order."""
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def series(self, key: str) -> list[Any]:
        """The values of ``key`` in row order (None where a row lacks it)."""
        return [row.get(key) for row in self.rows]

    def to_csv(self) -> str:
        """The rows as CSV text with one column per key."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buffer.getvalue()

    def write(self, json_path: str | Path, csv_path: str | Path | None = None) -> None:
        """Write the rows atomically as a JSON list and, optionally, as CSV."""
        atomic_write_text(json_path, json.dumps(self.rows, indent=1, allow_nan=False) + "\n")
        if csv_path is not None:
            atomic_write_text(csv_path, self.to_csv())

    @classmethod
    def read(cls, json_path: str | Path) -> MetricHistory:
        """Read rows written by :meth:`write`."""
        return cls(json.loads(Path(json_path).read_text(encoding="utf-8")))

"""PNG plots of a metric history: losses and each task's metrics per epoch or round."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in containers
import matplotlib.pyplot as plt

from mtmedformer import TASKS
from mtmedformer.atomic import atomic_write_with
from mtmedformer.engine.history import MetricHistory

log = logging.getLogger(__name__)


def _plot(history: MetricHistory, x_key: str, keys: Sequence[str], title: str, ylabel: str, path: Path) -> bool:
    xs = history.series(x_key)
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for key in keys:
        points = [(x, y) for x, y in zip(xs, history.series(key), strict=True) if x is not None and y is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=key)
            drawn = True
    if drawn:
        ax.set(title=title, xlabel=x_key, ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        atomic_write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)
    return drawn


def plot_history(history: MetricHistory, out_dir: str | Path, x_key: str = "epoch") -> list[Path]:
    """Write ``losses.png`` and ``<task>_metrics.png`` for each task with data; return the written paths.

    Loss curves are every column ending in ``loss``; a task's metric plot holds every column that contains
    ``<task>/`` and is not a loss or a count (``/n``).
    """
    out_dir = Path(out_dir)
    columns = history.columns()
    written = []
    losses = [c for c in columns if c.endswith("loss")]
    if _plot(history, x_key, losses, "Losses", "loss", out_dir / "losses.png"):
        written.append(out_dir / "losses.png")
    for task in TASKS:
        keys = [c for c in columns if f"{task}/" in c and not c.endswith(("loss", "/n")) and "time" not in c]
        path = out_dir / f"{task}_metrics.png"
        if _plot(history, x_key, keys, f"{task} metrics", "value", path):
            written.append(path)
    return written

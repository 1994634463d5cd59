"""Cross-site evaluation: after the last round, every model of the run scored on every site's test split.

The question a consortium asks after training: does the federated model serve every hospital, and how far
would each hospital's own model have carried to the others? (NVIDIA FLARE's cross-site validation.) The
models are the final global model and each site's *local model*: the weights the site sent in the last round,
i.e. the previous global model trained for ``federated.local_epochs`` on that site's data alone, as the server
accepted them (clipped if screening clipped them; noised if the site applies differential privacy). They are
not models trained from scratch at one site (``benchmarks/fl_comparison`` measures those).

Opt-in (``federated.cross_site_evaluation``), because every site receives every other site's local model:
weights trained on one hospital's images leave for the others. It needs the sites' models in the clear, so
secure aggregation refuses it when the config is read.

Files, in the run folder (all written atomically):

- ``checkpoints/local_<site>.pt``: each site's local model as a standard checkpoint, written when the last
  round's replies are accepted, so a server restarted after the last round still runs the evaluation;
- ``cross_site.csv`` / ``cross_site.jsonl``: one row per (model, evaluating site) with every metric and
  ``mean_score``, plus a row per model over all sites (``aggregate``, per-task counts as weights); its
  presence means the evaluation is done;
- ``plots/cross_site.png``: the ``mean_score`` matrix as a heat-map (in ``report.md``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtmedformer.atomic import atomic_write_text, atomic_write_with
from mtmedformer.config import ExperimentConfig
from mtmedformer.engine.checkpoint import load_checkpoint, save_checkpoint
from mtmedformer.engine.history import MetricHistory
from mtmedformer.engine.loop import primary_score
from server.results import AGGREGATE
from strategies.metric_aggregation import aggregate_task_metrics
from strategies.replies import ScreenedReply

log = logging.getLogger(__name__)

GLOBAL = "global"  # the model name of the final global model in the matrix
RESULTS = "cross_site.csv"
_LOCAL = "local_"

# (model name, state dict) -> per evaluating site its metrics, and the failures of that exchange
Evaluate = Callable[[Mapping[str, torch.Tensor]], tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]]


def _file_part(site: str) -> str:
    """A file-name part for a site name (names are printable text; anything else becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", site).lstrip(".") or "_"


def save_local_models(run_dir: Path, cfg: ExperimentConfig, rnd: int, replies: Iterable[ScreenedReply]) -> None:
    """Write each accepted reply's model arrays as ``checkpoints/local_<site>.pt`` (the site's name kept inside)."""
    for reply in replies:
        state = {k: torch.from_numpy(np.array(v)) for k, v in reply.arrays.items()}
        path = run_dir / "checkpoints" / f"{_LOCAL}{_file_part(reply.site)}.pt"
        save_checkpoint(path, config=cfg, model=state, epoch=rnd, extra={"site": reply.site, "local_model": True})


def local_models(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Site name -> local model state of the run in ``run_dir`` (empty when none was saved)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for path in sorted((run_dir / "checkpoints").glob(f"{_LOCAL}*.pt")):
        checkpoint = load_checkpoint(path)
        out[str(checkpoint.extra.get("site", path.stem[len(_LOCAL):]))] = checkpoint.model_state
    return out


def is_done(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` already has its cross-site results."""
    return (run_dir / RESULTS).is_file()


def cross_site_rows(
    models: Mapping[str, Mapping[str, torch.Tensor]], evaluate: Evaluate, tasks: Iterable[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score every model with ``evaluate`` (one exchange with every site each); the matrix rows and the failures.

    Each row is ``{"model", "site", "mean_score", <metrics>}``; per model one more row with ``site`` =
    ``aggregate``: the metrics averaged over the evaluating sites by their per-task counts, as every other
    multi-site figure of a run.
    """
    tasks = tuple(tasks)
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for name, state in models.items():
        results, failed = evaluate(state)
        failures += [{**f, "model": name} for f in failed]
        for site, metrics in sorted(results):
            rows.append({"model": name, "site": site, "mean_score": _score(metrics, tasks), **metrics})
        if results:
            pooled = aggregate_task_metrics(m for _, m in results)
            rows.append({"model": name, "site": AGGREGATE, "mean_score": _score(pooled, tasks), **pooled})
    return rows, failures


def _score(metrics: Mapping[str, Any], tasks: tuple[str, ...]) -> float | None:
    finite = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    return primary_score(finite, tasks)


def write_cross_site(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Write the heat-map, then ``cross_site.jsonl`` and last ``cross_site.csv`` (its presence marks completion)."""
    plot_cross_site(rows, run_dir / "plots" / "cross_site.png")
    clean = MetricHistory()
    for row in rows:
        clean.append(row)  # NaN (undefined metrics) -> None, as in every results file
    atomic_write_text(run_dir / "cross_site.jsonl",
                      "".join(json.dumps(r, allow_nan=False, default=str) + "\n" for r in clean.rows))
    atomic_write_text(run_dir / RESULTS, clean.to_csv())


def score_matrix(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], np.ndarray]:
    """Models (rows, ``global`` first), evaluating sites (columns, ``aggregate`` last), ``mean_score`` (NaN: none)."""
    models = sorted({r["model"] for r in rows}, key=lambda m: (m != GLOBAL, m))
    sites = sorted({r["site"] for r in rows}, key=lambda s: (s == AGGREGATE, s))
    matrix = np.full((len(models), len(sites)), np.nan)
    for r in rows:
        if r.get("mean_score") is not None:
            matrix[models.index(r["model"]), sites.index(r["site"])] = float(r["mean_score"])
    return models, sites, matrix


def plot_cross_site(rows: list[dict[str, Any]], path: Path) -> None:
    """Heat-map of ``mean_score``: rows the models, columns the sites whose test split scored them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, sites, matrix = score_matrix(rows)
    fig, ax = plt.subplots(figsize=(1.3 * len(sites) + 2.5, 0.6 * len(models) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(sites)), sites, rotation=30, ha="right")
    ax.set_yticks(range(len(models)), [m if m == GLOBAL else f"local {m}" for m in models])
    for (i, j), value in np.ndenumerate(matrix):
        text = "n/a" if math.isnan(value) else f"{value:.3f}"
        ax.text(j, i, text, ha="center", va="center", color="white" if math.isnan(value) or value < 0.6 else "black")
    ax.set(xlabel="test split of", title="cross-site evaluation: mean score")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)


def run_cross_site(
    run_dir: Path, global_state: Mapping[str, torch.Tensor], evaluate: Evaluate, tasks: Iterable[str]
) -> list[dict[str, Any]]:
    """Score the final global model and the saved local models on every site; write and return the rows."""
    models = {GLOBAL: global_state, **local_models(run_dir)}
    if len(models) == 1:
        log.warning("cross-site evaluation: no local models in %s (the last round accepted no update); "
                    "only the global model is scored", run_dir / "checkpoints")
    rows, failures = cross_site_rows(models, evaluate, tasks)
    write_cross_site(run_dir, rows)
    log.info("cross-site evaluation: %d models x %d sites (%d failed replies): %s",
             len(models), len({r["site"] for r in rows} - {AGGREGATE}), len(failures), run_dir / RESULTS)
    return rows


def read_cross_site(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``cross_site.jsonl`` (empty when the run has none)."""
    path = run_dir / "cross_site.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

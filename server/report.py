"""The end-of-run report: Markdown summary plus PNG plots of each task's metrics per round and per site."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mtmedformer import TASKS
from mtmedformer.atomic import atomic_write_text, atomic_write_with
from server.cross_site import GLOBAL, read_cross_site, score_matrix
from server.results import AGGREGATE, round_rows

# The metrics plotted and tabulated per task (the evaluator computes more; all are in the CSV files).
REPORT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("auc", "accuracy", "sensitivity", "specificity", "f1"),
    "segmentation": ("dice", "iou", "hd95"),
    "detection": ("map50", "map_rsna"),
}


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _plot_task(history: list[dict[str, Any]], task: str, phase: str, path: Path) -> bool:
    metrics = [m for m in REPORT_METRICS[task] if any(f"{task}/{m}" in r for r in history if r["phase"] == phase)]
    if not metrics:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for row in history:
            value = row.get(f"{task}/{metric}")
            if row["phase"] == phase and value is not None and not math.isnan(float(value)):
                series[row["site"]].append((row["round"], float(value)))
        for site, points in sorted(series.items()):
            style = {"linewidth": 2.5, "color": "black"} if site == AGGREGATE else {"linewidth": 1, "alpha": 0.8}
            ax.plot(*zip(*sorted(points), strict=True), marker="o", markersize=3, label=site, **style)
        ax.set(title=f"{task} {metric}", xlabel="round")
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)
    return True


def _cross_site_section(run_dir: Path) -> list[str]:
    """The cross-site matrix (``mean_score``) and its heat-map, when the run has one (:mod:`server.cross_site`)."""
    rows = read_cross_site(run_dir)
    if not rows:
        return []
    models, sites, matrix = score_matrix(rows)
    lines = ["", "## Cross-site evaluation (mean score on each site's test split)", "",
             "Rows: the final global model and each site's last local model; `aggregate`: over all sites. "
             "Every metric: `cross_site.csv`.", "",
             "| model | " + " | ".join(sites) + " |", "|---" * (len(sites) + 1) + "|"]
    for name, values in zip(models, matrix, strict=True):
        label = name if name == GLOBAL else f"local {name}"
        lines.append(f"| {label} | " + " | ".join(_fmt(float(v)) for v in values) + " |")
    if (run_dir / "plots" / "cross_site.png").is_file():
        lines += ["", "![cross_site](plots/cross_site.png)"]
    return lines


def write_report(run_dir: Path, history: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into ``run_dir``; return the report's path.

    Parameters
    ----------
    run_dir
        The run's results folder.
    history
        The run's full history rows.
    summary
        Headline facts: strategy, rounds, sites, best round, final test metrics, wall time.
    """
    plots = []
    for task in TASKS:
        path = run_dir / "plots" / f"{task}_val.png"
        if _plot_task(history, task, "val", path):
            plots.append(path)
    lines = ["# Federated run report", ""]
    lines += [f"- **{k}**: {_fmt(v) if isinstance(v, float) else v}" for k, v in summary.items()]
    rounds = round_rows(history)
    if rounds:
        cols = [c for c in rounds[-1] if c.startswith("val/") and c.split("/")[-1] in
                {m for ms in REPORT_METRICS.values() for m in ms}] + ["failures", "time/round_s"]
        lines += ["", "## Validation per round (weighted over sites by per-task counts)", "",
                  "| round | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += [f"| {r['round']} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rounds]
    final_rows = [r for r in history if r["phase"] == "test"]
    if final_rows:
        cols = [f"{t}/{m}" for t in TASKS for m in REPORT_METRICS[t] if any(f"{t}/{m}" in r for r in final_rows)]
        lines += ["", "## Final global model on each site's test split", "",
                  "| site | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += [f"| {r['site']} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |"
                  for r in sorted(final_rows, key=lambda r: (r["site"] == AGGREGATE, r["site"]))]
    lines += _cross_site_section(run_dir)
    failures = [r for r in history if r["phase"] == "failure"]
    lines += ["", f"## Failures ({len(failures)})", ""]
    lines += [f"- round {r['round']}, site {r['site']}, {r.get('failed_phase')}: {r['reason']}" for r in failures] or [
        "none"]
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    lines += ["", "Files: `rounds.csv` (per round), `sites.csv` (per site), `failures.jsonl`, `checkpoints/`."]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report

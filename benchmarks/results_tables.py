"""Markdown tables of the measurements kept in ``docs/results/*.json``, one function per table.

Every function takes the results folder and returns the body of one generated block (see
:mod:`benchmarks.markdown`); :data:`TABLES` maps block names to them and :mod:`benchmarks.docs_tables`
writes them into the docs. Row labels and column headers are written here; every figure is read from a
results file, so a re-measured file changes the docs on the next run of the generator and nowhere else.

The files come from ``benchmarks/compare_baselines.py`` and ``mtmedformer train`` (centralized runs, with
the per-epoch curves copied from their ``history.json``), ``benchmarks/train_throughput.py --json`` and
``benchmarks/round_overhead.py --json``; the federated comparison's own tables are
:mod:`benchmarks.fl_comparison.report`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.markdown import fmt, table

METRICS = (  # (column, key in a metrics dict, decimals) of the centralized test tables
    ("AUC", "classification/auc", 3),
    ("accuracy", "classification/accuracy", 3),
    ("Dice", "segmentation/dice", 3),
    ("HD95 px", "segmentation/hd95", 1),
    ("mAP@0.5", "detection/map50", 3),
    ("RSNA mAP", "detection/map_rsna", 3),
)
BASELINE_LABELS = {  # compare_baselines_128px_10min.json model key -> row label
    "mtmedformer": "MTMedFormer tiny, before the probe",
    "cnn-multitask": "CNN multi-task, before the probe",
    "vit-classification": "ViT tiny, classification only (no probe: it needs a segmentation)",
    "vit-segmentation": "ViT tiny, segmentation only",
    "vit-detection": "ViT tiny, detection only",
}


def load(results: Path, name: str) -> dict[str, Any]:
    """The JSON file ``name`` of the results folder.

    Raises
    ------
    FileNotFoundError
        If it is missing; the message names the file and what to do.
    """
    path = results / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: a generated table is made from it. Restore it (git checkout {path}) or "
            "re-measure it with the benchmark named in docs/measurements.md, then rerun the generator."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _metric_cells(test: Mapping[str, Any]) -> list[str]:
    return [fmt(test.get(key), digits) for _, key, digits in METRICS]


def _range(values: Sequence[float | None], digits: int = 2) -> str:
    """``low–high`` of the defined values (one value if they are equal), ``–`` if none is."""
    defined = [v for v in values if v is not None]
    if not defined:
        return "–"
    low, high = fmt(min(defined), digits), fmt(max(defined), digits)
    return low if low == high else f"{low}–{high}"


def _settings_cell(name: str) -> str:
    """``"cls_pool=decoder stem=conv"`` -> ``"`cls_pool: decoder`, `stem: conv`"`` (config keys as in a YAML file)."""
    return ", ".join(f"`{part.replace('=', ': ')}`" for part in name.split())


def _last(values: Sequence[float | None]) -> float | None:
    """The last defined value (an epoch cut by the time budget records none)."""
    return next((v for v in reversed(values) if v is not None), None)


# ------------------------------------------------------------------------------------------- centralized


def centralized_table(results: Path) -> str:
    """Test metrics of the 10-minute centralized runs: shipped config, with the probe, before it, single-task."""
    shipped = load(results, "centralized_shipped_10min.json")
    probe = load(results, "classification_probe_10min.json")
    before = load(results, "compare_baselines_128px_10min.json")
    rows = [[f"**shipped config, both cores** (`{shipped['command']}`, {shipped['date']})", str(shipped["epochs"]),
             *_metric_cells(shipped["test"])]]  # fmt: skip
    for key in ("C1", "C2"):
        run = probe["runs"][key]
        rows.append([f"{run['model']}, one core ({probe['date']})", str(run["epochs"]), *_metric_cells(run["test"])])
    for key, label in BASELINE_LABELS.items():
        model = before["models"][key]
        rows.append([f"{label}, one core ({before['date']})", str(model["epochs"]), *_metric_cells(model["test"])])
    earlier = shipped["before_this_config"]  # the same command with the config's earlier settings
    earlier_test = {"classification/auc": earlier["test_auc"], "segmentation/dice": earlier["test_dice"],
                    "detection/map50": earlier["test_map50"]}  # fmt: skip
    rows.append([f"shipped command, the config's earlier settings ({earlier['classification_n']} labelled test "
                 f"lesions, {shipped['date']})", str(earlier["epochs"]), *_metric_cells(earlier_test)])  # fmt: skip
    return table(["model", "epochs in 10 min", *(column for column, _, _ in METRICS)], rows)


def _run_cells(run: Mapping[str, Any], *middle: str) -> list[str]:
    """Epochs, test AUC, validation AUC over the epochs, ``middle``, Dice, mAP@0.5 and RSNA of one run."""
    test = run["test"]
    head = [str(run["epochs"]), fmt(test.get("classification/auc")), _range(run["val_auc_per_epoch"])]
    tail = [fmt(test.get(key)) for key in ("segmentation/dice", "detection/map50", "detection/map_rsna")]
    return [*head, *middle, *tail]


def _run_header(first: Sequence[str], *middle: str) -> list[str]:
    """The columns of :func:`_run_cells` after ``first``."""
    return [*first, "epochs", "test AUC", "validation AUC over epochs", *middle, "Dice", "mAP@0.5", "RSNA"]


def probe_runs_table(results: Path) -> str:
    """Every run of ``classification_probe_10min.json``: test metrics and the classification curves."""
    runs = load(results, "classification_probe_10min.json")["runs"]
    rows = [
        [key, run["model"], *_run_cells(run, fmt(_last(run["train_cls_loss_per_epoch"])),
                                        fmt(_last(run.get("probe_loss_per_epoch", []))))]
        for key, run in runs.items()
    ]  # fmt: skip
    return table(_run_header(("run", "model"), "last training CE", "last probe loss"), rows)


def pooling_table(results: Path) -> str:
    """The pooling variants of ``compare_baselines_128px_10min.json`` (lesion-weighted and mean pooling)."""
    data = load(results, "compare_baselines_128px_10min.json")["pooling_variants"]
    rows = [
        [_settings_cell(name.removeprefix("mtmedformer ")),
         *_run_cells(run, _range(run["train_classification_ce_per_epoch"]))]
        for name, run in data.items()
    ]  # fmt: skip
    return table(_run_header(("`model.` setting",), "training CE over epochs"), rows)


def classification_variants_table(results: Path) -> str:
    """The online classifier variants of ``classification_variants_10min.json``."""
    data = load(results, "classification_variants_10min.json")["variants"]
    rows = [
        [_settings_cell(name), *_run_cells(run, fmt(_last(run["train_cls_loss_per_epoch"])))]
        for name, run in data.items()
    ]
    return table(_run_header(("`model.` / `train.` settings",), "last training CE"), rows)


CURVES = (  # (row label, per-epoch key) of the classification curves kept with a centralized run
    ("validation AUC", "val_auc_per_epoch"),
    ("validation CE", "val_cls_loss_per_epoch"),
    ("training CE", "train_cls_loss_per_epoch"),
    ("probe fit loss", "probe_loss_per_epoch"),
)


def curves_table(results: Path) -> str:
    """Classification curves per epoch of the shipped-config run and of every run of the probe comparison."""
    shipped = load(results, "centralized_shipped_10min.json")
    probe = load(results, "classification_probe_10min.json")
    runs = {"shipped config": shipped, **{f"{key}: {run['model']}": run for key, run in probe["runs"].items()}}
    width = max(len(run.get(key) or ()) for run in runs.values() for _, key in CURVES)
    rows = []
    for name, run in runs.items():
        for label, key in CURVES:
            values = run.get(key) or []
            if values:
                cells = [fmt(v, 2) for v in values]
                rows.append([name, label, *cells, *[""] * (width - len(cells))])
    return table(["run", "curve", *(f"epoch {i}" for i in range(1, width + 1))], rows)


def offline_checks_table(results: Path) -> str:
    """``classification_signal.py --checkpoint`` on probe checkpoints: where their classification comes from."""
    checks = {k: v for k, v in load(results, "classification_probe_10min.json")["offline_checks"].items()
              if isinstance(v, Mapping)}  # fmt: skip
    columns = list(next(iter(checks.values())))
    header = ["checkpoint", *(c if "std" in c else f"{c} (test AUC)" for c in columns)]
    return table(header, [[name, *(fmt(values.get(c)) for c in columns)] for name, values in checks.items()])


# -------------------------------------------------------------------------------------------- throughput


def _throughput(results: Path) -> dict[str, Any]:
    return load(results, "throughput_128px.json")


def throughput_table(results: Path) -> str:
    """Images/s, FLOPs, MFU against both GEMM peaks and peak RSS of every row of ``throughput_128px.json``."""
    data = _throughput(results)
    rows = []
    for r in data["results"]:
        spec = r["spec"]
        bf16 = r.get("mfu_bf16_peak")
        rows.append([
            spec["preset"], str(spec["image_size"]), str(spec["batch_size"]),
            "all" if spec["heads"] == "all" else "cls only", spec["precision"], f"{r['images_per_s']:.2f}",
            f"{r['train_flops_per_image'] / 1e9:.2f}", f"{100 * r['mfu_fp32_peak']:.1f} %",
            "–" if bf16 is None else f"{100 * bf16:.1f} %", f"{r['peak_rss_mib']:,.0f} MiB",
        ])  # fmt: skip
    header = ["preset", "px", "batch", "heads", "precision", "img/s", "train GFLOP/img", "MFU (fp32 peak)",
              "MFU (bf16 peak)", "peak RSS"]  # fmt: skip
    return table(header, rows)


def _config(spec: Mapping[str, Any], precision: bool = False) -> str:
    """``tiny/128px/all/b32`` (with ``/fp32`` or ``/bf16`` when ``precision``)."""
    name = f"{spec['preset']}/{spec['image_size']}px/{spec['heads']}/b{spec['batch_size']}"
    return f"{name}/{spec['precision']}" if precision else name


def throughput_parts_table(results: Path) -> str:
    """Share of the model-forward FLOPs by part, per configuration with all heads (the same in both precisions)."""
    parts = ("encoder", "classification", "segmentation", "detection")
    rows, seen = [], set()
    for r in _throughput(results)["results"]:
        name = _config(r["spec"])
        if r["spec"]["heads"] == "all" and name not in seen:
            seen.add(name)
            total, by_part = r["forward_flops_per_image"], r["forward_flops_by_part"]
            rows.append([name, f"{total / 1e9:.2f}", *(f"{100 * by_part.get(p, 0.0) / total:.1f} %" for p in parts)])
    return table(["config", "fwd GFLOP/img", *parts], rows)


def throughput_profile_table(results: Path) -> str:
    """Where a profiled step's time goes by kind of operation, and the rate each FLOP-bearing kind reaches."""
    data = _throughput(results)
    peaks = {"fp32": data["fp32_peak_flops_per_s"], "bf16": data["bf16_peak_flops_per_s"]}
    rows = []
    for r in data["results"]:
        profile = r.get("profile")
        for kind, ms in (profile or {}).get("category_ms", {}).items():
            gflop = profile["category_gflops"].get(kind, 0.0)
            rate = gflop / (ms / 1e3) if ms > 0 and gflop > 0 else None
            shares = [f"{100 * rate * 1e9 / peaks[p]:.1f} %" if rate and (p == "fp32" or r["spec"]["precision"] == p)
                      else "–" for p in peaks]  # fmt: skip
            share = f"{100 * ms / profile['step_ms']:.1f} %"
            rows.append([_config(r["spec"], precision=True), kind, f"{ms:,.0f}", share, f"{gflop:.1f}", fmt(rate, 1),
                         *shares])  # fmt: skip
    header = ["step", "kind", "ms/step", "share of step", "GFLOP/step", "GFLOP/s", "% of fp32 peak", "% of bf16 peak"]
    return table(header, rows)


def _pairs(data: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``(fp32 row, bf16 row)`` of every configuration measured in both precisions."""
    def key(r: Mapping[str, Any]) -> tuple:
        return tuple(sorted((k, v) for k, v in r["spec"].items() if k != "precision"))

    fp32 = {key(r): r for r in data["results"] if r["spec"]["precision"] == "fp32"}
    return [(fp32[key(r)], r) for r in data["results"] if r["spec"]["precision"] == "bf16" and key(r) in fp32]


def throughput_conditions_table(results: Path) -> str:
    """The run's GEMM peaks, threads, load and the bf16 speed-up of every configuration."""
    data = _throughput(results)
    load_start, load_end = data["load_averages_1min"]
    rows = [
        ["torch, threads", f"{data['torch']}, {data['threads']}"],
        ["1-minute load average at start / end", f"{load_start:.1f} / {load_end:.1f}"],
        ["fp32 GEMM peak (best of the run)", f"{data['fp32_peak_flops_per_s'] / 1e9:,.1f} GFLOP/s"],
        ["bf16 GEMM peak (best of the run)", f"{data['bf16_peak_flops_per_s'] / 1e9:,.0f} GFLOP/s"],
    ]
    for a, b in _pairs(data):
        s = a["spec"]
        heads = "all heads" if s["heads"] == "all" else "cls only"
        rows.append([f"bf16 speed-up, {s['preset']} {s['image_size']} px {heads}",
                     f"{b['images_per_s'] / a['images_per_s']:.2f}×"])  # fmt: skip
    return table(["", "value"], rows)


# ---------------------------------------------------------------------------------------- round overhead

OVERHEAD_ROWS = (  # (workload, setting, file, key of the run inside the file or None, index of the result)
    ("120 images, 1 local epoch", "simulation (`flwr run .`, Ray, 2 SuperNodes × 1 CPU), packed",
     "round_overhead_sim_packing.json", "packed", 0),
    ("120 images, 1 local epoch", "simulation, plain arrays", "round_overhead_sim_packing.json", "plain", 0),
    ("400 images, 3 local epochs", "simulation, plain arrays", "round_overhead.json", 1, 0),
    ("120 images, 1 local epoch", "simulation, fused evaluation, packed", "round_overhead_sim_fused.json", None, 0),
    ("120 images, 1 local epoch", "loopback deployment (TLS + SuperNode auth, 2 SuperNodes), fused evaluation, "
     "packed", "round_overhead_packed_demo.json", None, 0),
    ("120 images, 1 local epoch", "loopback deployment, fused evaluation, plain arrays",
     "round_overhead_plain_demo.json", None, 0),
    ("400 images, 3 local epochs", "loopback deployment, fused evaluation, packed",
     "round_overhead_packed_400x3.json", None, 0),
    ("120 images, 1 local epoch", "loopback deployment, fused evaluation, packed, DEBUG logs (the traced run)",
     "round_overhead_packed_demo_trace.json", None, 0),
    ("120 images, 1 local epoch", "loopback deployment, fused evaluation, packed, SuperExec task poll 0.1 s, "
     "a new ClientApp process per message", "round_overhead_warm_demo.json", None, 0),
    ("120 images, 1 local epoch", "loopback deployment, fused evaluation, packed, SuperExec task poll 0.1 s, "
     "warm ClientApp server", "round_overhead_warm_demo.json", None, 1),
    ("120 images, 1 local epoch", "loopback deployment, fused evaluation, packed, SuperExec task poll 0.1 s, "
     "warm ClientApp server, SuperNode poll 3 s (Flower's)", "round_overhead_poll_demo.json", None, 0),
    ("120 images, 1 local epoch", "loopback deployment, fused evaluation, packed, SuperExec task poll 0.1 s, "
     "warm ClientApp server, SuperNode poll 0.5 s (`mtmedformer-supernode`, the default)",
     "round_overhead_poll_demo.json", None, 1),
    ("120 images, 1 local epoch", "containers (`make docker-test`: TLS + SuperNode auth, 3 site containers on one "
     "2-core host, so the sites' compute contends), fused evaluation, packed, the defaults",
     "docker_e2e.json", None, 0),
)  # fmt: skip
"""The rows of the per-round overhead table, in the order they are shown."""
BEFORE_ROWS = (  # the same for the earlier runs: unfused and unpacked, then fused, both loopback deployment
    ("120 images, 1 local epoch", "unfused, plain arrays", "round_overhead.json", 0, 1),
    ("400 images, 3 local epochs", "unfused, plain arrays", "round_overhead.json", 1, 1),
    ("120 images, 1 local epoch", "fused evaluation, plain arrays", "round_overhead_fused_demo.json", None, 0),
    ("400 images, 3 local epochs", "fused evaluation, plain arrays", "round_overhead_fused_400x3.json", None, 0),
)  # fmt: skip


def overhead_result(results: Path, name: str, key: str | int | None, index: int) -> tuple[dict, dict]:
    """``(file record, summary)`` of one run of ``benchmarks/round_overhead.py`` kept in ``name``.

    Files hold either one run (``results`` at the top), several named runs (``key`` a name) or a list of runs
    (``key`` an index into ``runs``); ``index`` picks the setting (simulation / deployment) inside the run.
    """
    data = load(results, name)
    run = data if key is None else data["runs"][key] if isinstance(key, int) else data[key]
    return data, run["results"][index]


def steady_rows(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rounds of the steady state (rounds >= 2, and before the last with fused evaluation).

    Mirrors :func:`benchmarks.round_overhead.summarise`, which computed the file's steady-state figures.
    """
    rows = summary["rounds"]
    return rows[1:-1] if summary.get("fused_evaluation") and len(rows) > 2 else rows[1:] or rows


def _seconds_range(values: Sequence[float]) -> str:
    return _range(values, 1) + " s"


def overhead_table(results: Path) -> str:
    """Round wall time against the clients' critical path for every row of :data:`OVERHEAD_ROWS`."""
    rows = []
    for workload, setting, name, key, index in OVERHEAD_ROWS:
        data, s = overhead_result(results, name, key, index)
        steady = steady_rows(s)
        ratio = f"**{s['steady_state_ratio']:.2f}×**"
        if s.get("fused_evaluation"):
            ratio += f" (run {s['run_ratio']:.2f}×)"
        target = "≤ 1.15×" if setting.startswith("simulation") else "≤ 1.5×"
        rows.append([
            workload, setting, _seconds_range([r["time/client_critical_s"] for r in steady]),
            _seconds_range([r["time/round_s"] for r in steady]), f"{s['steady_state_overhead_s']:.1f} s", ratio,
            target, f"{s['bytes_per_round'] / 1e6:.1f}", data.get("date", "–"),
        ])  # fmt: skip
    header = ["workload per site and round", "setting", "client critical path", "round wall time (steady state)",
              "fixed overhead", "ratio", "target", "MB per round", "measured"]  # fmt: skip
    return table(header, rows)


def overhead_before_table(results: Path) -> str:
    """The loopback deployment before packing (and before fused evaluation): ratio and fixed cost per round."""
    rows = []
    for workload, setting, name, key, index in BEFORE_ROWS:
        _, s = overhead_result(results, name, key, index)
        rows.append([workload, setting, f"{s['steady_state_ratio']:.2f}×", f"{s['steady_state_overhead_s']:.1f} s"])
    return table(["workload per site and round", "loopback deployment", "ratio", "fixed overhead"], rows)


TRACE_PHASES = (  # key in the trace -> row label
    ("pull → spawn", "SuperNode receives the message → SuperExec starts a fresh `flwr-clientapp` process"),
    ("spawn → app loaded", "that process pulls the message and the app bundle and installs the bundle"),
    ("app loaded → reply", "our ClientApp in that fresh process: imports (torch, MONAI), site data, model, compute"),
    ("reply → sent", "the SuperNode pushes the reply (the model for train) to the SuperLink"),
    ("idle until the next message", "idle until the next message (ServerApp's reply polling, slowest site, "
     "aggregation, checkpoints, the SuperNode's message polling)"),
)  # fmt: skip


def trace_table(results: Path) -> str:
    """Where one message exchange's time goes at a site: the first traced run against the current one."""
    _, before = overhead_result(results, "round_overhead.json", 0, 1)
    _, now = overhead_result(results, "round_overhead_packed_demo_trace.json", None, 0)
    rows = []
    for key, label in TRACE_PHASES:
        cells = [fmt(run["trace"][kind].get(key), 1) for kind in ("train", "evaluate") for run in (before, now)]
        rows.append([label, *cells])
    header = ["phase of one message exchange at a site (s)", "train, before", "train, now", "evaluate, before",
              "evaluate, now"]  # fmt: skip
    return table(header, rows)


# -------------------------------------------------------------------------------------------- headline


def _federated_ranges(results: Path) -> tuple[str, str]:
    """The federated comparison's headline (label text) and each strategy's final pooled-test mean.

    From the learn-scale iterative part when it exists with one (alpha, local epochs) condition (where every task
    learns): mean ± sd over seeds per strategy; otherwise each strategy's range over the documented scale's
    settings (seed means).
    """
    from benchmarks.fl_comparison.iterative_report import STRATEGY_LABEL, conditions
    from benchmarks.fl_comparison.one_shot_report import mean_sd

    learn = (results / "iterative_learn.json").exists()
    iterative = load(results, "iterative_learn.json" if learn else "iterative.json")
    if learn and (len(iterative["settings"]["alphas"]) > 1 or len(iterative["settings"]["local_epochs"]) > 1):
        learn, iterative = False, load(results, "iterative.json")  # several conditions: the range form below
    settings, grouped = iterative["settings"], conditions(iterative)
    clients = len(next(iter(iterative["partitions"].values())))
    finals = {key: [r["final"]["pooled_test"]["mean_score"] for r in runs] for key, runs in grouped.items()}
    if learn:
        (alpha,), (epochs,) = settings["alphas"], settings["local_epochs"]
        seeds = max(len(v) for v in finals.values())
        figures = " · ".join(f"{STRATEGY_LABEL.get(s, s)} {mean_sd(v)}" for (_, _, s), v in finals.items())
        label = (f"Federated, shipped model's scale, {clients} clients, Dirichlet α = {alpha:g}, {settings['rounds']} "
                 f"rounds × {epochs} epochs: pooled-test mean score over {seeds} seeds")  # fmt: skip
        return label, figures
    bounds = load(results, "bounds.json")
    means: dict[str, list[float]] = {}
    for (_, _, strategy), values in finals.items():
        means.setdefault(strategy, []).append(sum(values) / len(values))
    figures = " · ".join(f"{STRATEGY_LABEL.get(s, s)} {_range(means[s], 3)}" for s in settings["strategies"])
    figures += f"; centralized {fmt(bounds['centralized']['pooled_test']['mean_score'])}"
    count = len(settings["alphas"]) * len(settings["local_epochs"])
    label = (f"Federated, {clients} clients, label skew, {settings['rounds']} rounds: pooled-test mean score, "
             f"range over {count} settings")  # fmt: skip
    return label, figures


def headline_table(results: Path) -> str:
    """The README's table of current headline figures, each linked to the page that names its results files."""
    shipped = load(results, "centralized_shipped_10min.json")["test"]
    fed_label, fed_figures = _federated_ranges(results)
    data = _throughput(results)
    fp32, bf16 = next((a, b) for a, b in _pairs(data) if a["spec"]["heads"] == "all")
    spec = bf16["spec"]
    _, sim = overhead_result(results, "round_overhead_sim_fused.json", None, 0)
    _, deployed = overhead_result(results, "round_overhead_poll_demo.json", None, 1)  # the defaults: warm, 0.5 s poll
    _, large = overhead_result(results, "round_overhead_packed_400x3.json", None, 0)
    large_workload = load(results, "round_overhead_packed_400x3.json")["workload"]

    rows = [
        ["Centralized, shipped `configs/centralized_mammography.yaml`, 10 min: test split",
         f"AUC {fmt(shipped['classification/auc'])} · Dice {fmt(shipped['segmentation/dice'])} · "
         f"mAP@0.5 {fmt(shipped['detection/map50'])}", "[measurements](docs/measurements.md)"],
        [fed_label, fed_figures, "[RESULTS](docs/RESULTS.md)"],
        [f"Training throughput, {spec['preset']}, {spec['image_size']} px, batch {spec['batch_size']}, bf16",
         f"{bf16['images_per_s']:.1f} img/s ({bf16['images_per_s'] / fp32['images_per_s']:.1f}× fp32), "
         f"MFU {100 * bf16['mfu_fp32_peak']:.0f} % of the fp32 peak", "[benchmarks](benchmarks/README.md)"],
        ["Round wall time / client compute, demo workload, fused evaluation",
         f"simulation {sim['steady_state_ratio']:.2f}× · loopback deployment {deployed['steady_state_ratio']:.2f}× "
         f"({deployed['steady_state_overhead_s']:.1f} s fixed per round; {large_workload['images_per_site']} images "
         f"× {large_workload['local_epochs']} epochs: {large['steady_state_ratio']:.2f}×)",
         "[measurements](docs/measurements.md#per-round-overhead)"],
    ]  # fmt: skip
    return table(["what (synthetic data, 2-core CPU)", "figure", "source"], rows)


def _observed(row: Mapping[str, Any], rounds_text: str) -> str:
    """What the server did with one case's replies, from the recorded booleans and counts (no hand-typed verdict)."""
    kept = row["global_model_equal"] and row["aggregates_equal"]
    every = row["reasons_with_expected"] == row["replies_expected"] > 0
    verdict = "as expected" if kept and every and row["replies_rejected"] == row["replies_sent"] else "NOT as expected"
    reason = str(row["reason"] or "–").replace("|", "\\|")
    model = "equal" if row["global_model_equal"] else "DIFFERENT"
    metrics = "equal" if row["aggregates_equal"] else "DIFFERENT"
    return (
        f"{verdict}: {row['replies_rejected']} of {row['replies_sent']} {rounds_text} rejected "
        f"({row['reasons_with_expected']} of {row['replies_expected']} with the expected reason), "
        f"e.g. “{reason[:110]}”; global model {model}, aggregated metrics {metrics} (run without the site)"
    )


def security_cases_table(results: Path) -> str:
    """Every hostile reply of ``security_cases.json``: what the site sends, what should happen, what did."""
    data = load(results, "security_cases.json")
    rows = [[f"`{r['case']}`", r["sends"], f"rejected: “{r['expected']}”", _observed(r, "training replies")]
            for r in data["train"]]
    rows += [[f"`{r['case']}`", r["sends"], f"rejected: “{r['expected']}”",
              _observed(r, f"evaluation replies (in {len(r['with'])} runs)")] for r in data["evaluation"]]
    return table(["case", "the third site sends, every round", "expected", "observed"], rows)


def _epsilon(value: float | None) -> str:
    return "none (no noise)" if value is None else f"{value:.3g}"


def dp_tradeoff_table(results: Path, name: str = "dp_tradeoff.json") -> str:
    """Client-side DP: epsilon and the final global model's pooled-test figures per noise multiplier."""
    data = load(results, name)
    rows = []
    for run in data["variants"].values():
        z = run["noise_multiplier"]
        label = "no DP" if z is None else (f"clip {run['clip_norm']:g}, no noise" if z == 0 else
                                           f"clip {run['clip_norm']:g}, z = {z:g}")
        epsilon = "—" if z is None else _epsilon(run["epsilon"])
        test = run["final"]["pooled_test"]
        rows.append([label, epsilon, fmt(run["sent_update_norm_median"], 2), fmt(test.get("segmentation/dice")),
                     fmt(test.get("classification/auc")), fmt(test.get("detection/map50")),
                     fmt(test.get("mean_score"))])
    return table(["site-side DP", f"ε at δ = {data['settings']['delta']:g}", "sent update norm (median)", "Dice",
                  "AUC", "mAP@0.5", "mean score"], rows)


def dp_tradeoff_settings(results: Path, name: str = "dp_tradeoff.json") -> str:
    """One line: the run settings of the DP trade-off measurement."""
    data = load(results, name)
    s, base = data["settings"], data["settings"]["base_config"]
    return (f"{s['strategy']}, {s['rounds']} rounds × {s['local_epochs']} local epochs (at most {s['local_steps']} "
            f"steps), {s['sites']} synthetic sites (partition: {s['partition']}), {base['model']['preset']} ViT of "
            f"depth {base['model']['depth']} at {base['data']['image_size']} px; metrics of the final global model "
            f"on the pooled test split; commit {data['commit']}, load average "
            f"{data['machine']['load_average_1_5_15min'][0]} "
            f"at the start, {data['load_average_end'][0]} at the end.")


def containers_table(results: Path) -> str:
    """``make docker-test`` as ``.ci/run`` runs it: the cold image builds, every check, the round times.

    ``docker_build.json`` is the build-only pass (images from nothing, made while the test suite ran on the
    same 2 cores); ``docker_e2e.json`` the deployment run after it, whose build found every layer cached.
    """
    build, e2e = load(results, "docker_build.json"), load(results, "docker_e2e.json")
    rows = [
        [f"image `{tag}`", f"built in {info['build_s']:.0f} s from the base image up, while `make test` ran (the site "
                           "image reuses the layers the server image built), "
                           f"{info['size_bytes'] / 1e6:.0f} MB"]
        for tag, info in build["images"].items()
    ]  # fmt: skip
    rows += [["check passed", check] for check in [*build["checks"], *e2e["checks"]]]
    summary = e2e["results"][0]
    steady, work = steady_rows(summary), e2e["workload"]
    rows.append([
        f"rounds ({work['sites']} sites × {work['images_per_site']} images, {work['local_epochs']} local epoch; "
        "steady state)",
        f"wall {_seconds_range([r['time/round_s'] for r in steady])} against the sites' critical path "
        f"{_seconds_range([r['time/client_critical_s'] for r in steady])}: "
        f"{summary['steady_state_overhead_s']:.1f} s fixed per round",
    ])  # fmt: skip
    rows.append(["the deployment test after the build", f"{e2e['total_s'] / 60:.1f} min; measured {e2e['date']}"])
    return table(["what", "result"], rows)


def decode_memory_table(results: Path) -> str:
    """Peak memory of decoding one very large image, at full resolution and shrunk while decoding."""
    data = load(results, "decode_memory.json")
    rows = [[r["image"], "shrunk while decoding" if r["case"] == "shrunk" else "full resolution",
             f"{r['rss_increase_mib']:.0f}", "×".join(str(n) for n in r["shape"])] for r in data["results"]]
    return table(["image", "decoded", "peak RSS increase (MiB)", "item shape"], rows)


TABLES: dict[str, Callable[[Path], str]] = {
    "headline": headline_table,
    "centralized": centralized_table,
    "probe_runs": probe_runs_table,
    "pooling_variants": pooling_table,
    "classification_variants": classification_variants_table,
    "curves": curves_table,
    "offline_checks": offline_checks_table,
    "throughput": throughput_table,
    "throughput_conditions": throughput_conditions_table,
    "throughput_parts": throughput_parts_table,
    "throughput_profile": throughput_profile_table,
    "round_overhead": overhead_table,
    "round_overhead_before": overhead_before_table,
    "deployment_trace": trace_table,
    "security_cases": security_cases_table,
    "decode_memory": decode_memory_table,
    "containers": containers_table,
    "dp_tradeoff": dp_tradeoff_table,
    "dp_tradeoff_settings": dp_tradeoff_settings,
    "dp_tradeoff_fedavg": lambda results: dp_tradeoff_table(results, "dp_tradeoff_fedavg.json"),
    "dp_tradeoff_fedavg_settings": lambda results: dp_tradeoff_settings(results, "dp_tradeoff_fedavg.json"),
}
"""Block name -> the function that makes its table from the results folder."""

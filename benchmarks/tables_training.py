"""Doc tables of centralized training: the baseline comparison, the classification variants, training throughput.

Every function takes the :class:`~benchmarks.result_files.ResultFiles` of ``docs/results`` and returns the Markdown
body of one generated block (:mod:`benchmarks.docs_tables` names them). Row labels are descriptions; every figure
and date comes from the results file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.doc_blocks import fmt, pct, span, table
from benchmarks.result_files import ResultFiles

SHIPPED = "centralized_shipped_10min.json"
BASELINES = "compare_baselines_128px_10min.json"
PROBE = "classification_probe_10min.json"
VARIANTS = "classification_variants_10min.json"
THROUGHPUT = "throughput_128px.json"
PARTS = ("encoder", "classification", "segmentation", "detection")

VARIANT_HEADER = (
    "`model.` / `train.` settings", "epochs", "test AUC", "validation AUC over epochs", "training CE over epochs",
    "last training CE", "Dice", "mAP@0.5", "RSNA",
)  # fmt: skip

TEST_COLUMNS: tuple[tuple[str, str, int], ...] = (
    # header, test-metric key, decimals
    ("AUC", "classification/auc", 3),
    ("accuracy", "classification/accuracy", 3),
    ("Dice", "segmentation/dice", 3),
    ("HD95 px", "segmentation/hd95", 1),
    ("mAP@0.5", "detection/map50", 3),
    ("RSNA mAP", "detection/map_rsna", 3),
)


def _test_cells(test: Mapping[str, Any]) -> list[str]:
    return [fmt(test.get(key), digits) for _, key, digits in TEST_COLUMNS]


def centralized_table(files: ResultFiles) -> str:
    """The 10-minute centralized comparison: the shipped config, MTMedFormer and its baselines, test split."""
    shipped, base, probe = files.json(SHIPPED), files.json(BASELINES), files.json(PROBE)
    models, runs = base["models"], probe["runs"]
    rows = [
        [label, date, str(run["epochs"]), *_test_cells(run["test"])]
        for label, date, run in (
            ("MTMedFormer tiny, shipped config (`mtmedformer train`), both cores", shipped["date"], shipped),
            ("MTMedFormer tiny (3 tasks, hybrid loss, descriptor probe), one core", probe["date"], runs["C1"]),
            ("CNN multi-task (ResNet-18, same heads and probe), one core", probe["date"], runs["C2"]),
        )
    ]
    for key, label in (
        ("mtmedformer", "MTMedFormer tiny, before the probe"),
        ("cnn-multitask", "CNN multi-task, before the probe"),
        ("vit-classification", "ViT tiny, classification only (no probe: it needs a segmentation)"),
        ("vit-segmentation", "ViT tiny, segmentation only"),
        ("vit-detection", "ViT tiny, detection only"),
    ):
        rows.append([label, base["date"], str(models[key]["epochs"]), *_test_cells(models[key]["test"])])
    earlier = shipped["before_this_config"]
    earlier_test = {
        "classification/auc": earlier["test_auc"],
        "segmentation/dice": earlier["test_dice"],
        "detection/map50": earlier["test_map50"],
    }
    rows.append(
        [
            f"MTMedFormer tiny, the config's earlier settings ({earlier['classification_n']} labelled test lesions)",
            shipped["date"],
            str(earlier["epochs"]),
            *_test_cells(earlier_test),
        ]
    )
    return table(["model", "measured", "epochs in 10 min", *(h for h, _, _ in TEST_COLUMNS)], rows)


def _epoch_cells(values: Sequence[float | None], width: int) -> list[str]:
    cells = [fmt(v, 2) if v is not None else "–" for v in values]
    return cells + [""] * (width - len(cells))


CURVES: tuple[tuple[str, str], ...] = (
    ("validation AUC", "val_auc_per_epoch"),
    ("validation CE", "val_cls_loss_per_epoch"),
    ("training CE", "train_cls_loss_per_epoch"),
    ("probe fit loss", "probe_loss_per_epoch"),
)


def curves_table(files: ResultFiles) -> str:
    """Per-epoch classification curves of the shipped-config run and of every probe-comparison run."""
    shipped, probe = files.json(SHIPPED), files.json(PROBE)
    runs = {"shipped config": shipped, **{f"{name}: {run['model']}": run for name, run in probe["runs"].items()}}
    width = max(len(run.get(key) or ()) for run in runs.values() for _, key in CURVES)
    rows = [
        [name, label, *_epoch_cells(run[key], width)]
        for name, run in runs.items()
        for label, key in CURVES
        if run.get(key)
    ]
    return table(["run", "curve", *(f"epoch {i}" for i in range(1, width + 1))], rows)


def probe_runs_table(files: ResultFiles) -> str:
    """Every run of the probe comparison (10 minutes, one core each): its epochs and test metrics."""
    runs = files.json(PROBE)["runs"]
    rows = [[name, run["model"], str(run["epochs"]), *_test_cells(run["test"])] for name, run in runs.items()]
    return table(["run", "model", "epochs", *(h for h, _, _ in TEST_COLUMNS)], rows)


def offline_checks_table(files: ResultFiles) -> str:
    """``classification_signal.py --checkpoint`` on two probe checkpoints: where their classification comes from."""
    checks = dict(files.json(PROBE)["offline_checks"])
    checks.pop("source", None)
    columns = list(next(iter(checks.values())))
    rows = [[name, *(fmt(values.get(c)) for c in columns)] for name, values in checks.items()]
    return table(["checkpoint", *(f"{c} (test AUC)" if "std" not in c else c for c in columns)], rows)


def _setting_label(key: str) -> str:
    # "mtmedformer cls_pool=decoder train.classifier_lr_scale=10" -> "`cls_pool: decoder`, `classifier_lr_scale: 10`"
    parts = [p for p in key.split() if "=" in p]
    return ", ".join(
        "`{}: {}`".format(*p.removeprefix("model.").removeprefix("train.").split("=", 1)) for p in parts
    )


def _variant_rows(variants: Mapping[str, Mapping[str, Any]], ce_key: str) -> list[list[str]]:
    rows = []
    for key, run in variants.items():
        test = run["test"]
        ce = [v for v in run.get(ce_key) or () if v is not None]
        rows.append(
            [
                _setting_label(key),
                str(run["epochs"]),
                fmt(test["classification/auc"]),
                span([v for v in run["val_auc_per_epoch"] if v is not None]),
                span(ce),
                fmt(ce[-1] if ce else None),
                fmt(test["segmentation/dice"]),
                fmt(test["detection/map50"]),
                fmt(test["detection/map_rsna"]),
            ]
        )
    return rows


def pooling_table(files: ResultFiles) -> str:
    """Classification pooling variants (``model.cls_pool``), same budget and settings as the comparison."""
    variants = files.json(BASELINES)["pooling_variants"]
    return table(VARIANT_HEADER, _variant_rows(variants, "train_classification_ce_per_epoch"))


def variants_table(files: ResultFiles) -> str:
    """Classifiers trained online on the decoder and the predicted lesion (before the probe)."""
    variants = files.json(VARIANTS)["variants"]
    return table(VARIANT_HEADER, _variant_rows(variants, "train_cls_loss_per_epoch"))


def _throughput_rows(files: ResultFiles) -> list[dict[str, Any]]:
    return files.json(THROUGHPUT)["results"]


def throughput_table(files: ResultFiles) -> str:
    """Training throughput, FLOPs per image, MFU against the fp32 (and bf16) GEMM peak, and peak memory."""
    rows = []
    for r in _throughput_rows(files):
        s = r["spec"]
        rows.append(
            [
                s["preset"],
                str(s["image_size"]),
                str(s["batch_size"]),
                "all" if s["heads"] == "all" else "cls only",
                s["precision"],
                fmt(r["images_per_s"], 2),
                fmt(r["train_flops_per_image"] / 1e9, 2),
                pct(r["mfu_fp32_peak"]),
                pct(r.get("mfu_bf16_peak")),
                f"{r['peak_rss_mib']:,.0f} MiB",
            ]
        )
    header = ["preset", "px", "batch", "heads", "precision", "img/s", "train GFLOP/img", "MFU (fp32 peak)",
              "MFU (bf16 peak)", "peak RSS"]  # fmt: skip
    return table(header, rows)


def throughput_conditions(files: ResultFiles) -> str:
    """One sentence: the run's threads, torch, load and both GEMM peaks (the MFU denominators)."""
    run = files.json(THROUGHPUT)
    load = run.get("load_averages_1min") or [None, None]
    return (
        f"{run['threads']} torch threads, torch {run['torch']}, 1-minute load average {fmt(load[0], 1)} at the start "
        f"and {fmt(load[-1], 1)} at the end; GEMM peaks measured in the same run: fp32 "
        f"{run['fp32_peak_flops_per_s'] / 1e9:,.1f} GFLOP/s, bf16 {run['bf16_peak_flops_per_s'] / 1e9:,.1f} GFLOP/s."
    )


def throughput_bf16_table(files: ResultFiles) -> str:
    """bf16 against fp32 for every configuration measured in both precisions."""
    results = _throughput_rows(files)

    def config(r: Mapping[str, Any]) -> tuple[Any, ...]:
        s = r["spec"]
        return s["preset"], s["image_size"], s["batch_size"], s["heads"]

    fp32 = {config(r): r for r in results if r["spec"]["precision"] == "fp32"}
    rows = []
    for r in results:
        a = fp32.get(config(r))
        if r["spec"]["precision"] != "bf16" or a is None:
            continue
        preset, size, batch, heads = config(r)
        rows.append(
            [
                f"{preset}/{size}px/{heads}/b{batch}",
                fmt(a["images_per_s"], 2),
                fmt(r["images_per_s"], 2),
                f"{r['images_per_s'] / a['images_per_s']:.2f}×",
                f"{a['peak_rss_mib']:,.0f} MiB",
                f"{r['peak_rss_mib']:,.0f} MiB",
            ]
        )
    return table(["config", "fp32 img/s", "bf16 img/s", "bf16 speed-up", "fp32 peak RSS", "bf16 peak RSS"], rows)


def throughput_parts_table(files: ResultFiles) -> str:
    """Share of the model-forward FLOPs by part (encoder and each head), per configuration with all heads."""
    rows, seen = [], set()
    for r in _throughput_rows(files):
        s = r["spec"]
        name = f"{s['preset']}/{s['image_size']}px/{s['heads']}/b{s['batch_size']}"
        if s["heads"] != "all" or name in seen:
            continue  # model FLOPs do not depend on the precision
        seen.add(name)
        total = r["forward_flops_per_image"]
        parts = r["forward_flops_by_part"]
        rows.append([name, fmt(total / 1e9, 2), *(pct(parts.get(p, 0.0) / total) for p in PARTS)])
    return table(["config", "fwd GFLOP/img", *PARTS], rows)


def throughput_profile_table(files: ResultFiles) -> str:
    """Where a profiled training step's time goes, by kind of operation, and the rate each FLOP-bearing kind reaches."""
    run = files.json(THROUGHPUT)
    peaks = {"fp32": run["fp32_peak_flops_per_s"], "bf16": run["bf16_peak_flops_per_s"]}
    rows = []
    for r in _throughput_rows(files):
        profile = r.get("profile")
        if not profile:
            continue
        s = r["spec"]
        label = f"{s['preset']}/{s['image_size']}px/{s['heads']}/b{s['batch_size']}/{s['precision']}"
        for category, ms in profile["category_ms"].items():
            gflop = profile["category_gflops"].get(category, 0.0)
            rate = gflop / (ms / 1e3) if ms > 0 and gflop > 0 else None
            shares = [pct(rate * 1e9 / peaks["fp32"]) if rate else "–"]
            shares.append(pct(rate * 1e9 / peaks["bf16"]) if rate and s["precision"] == "bf16" else "–")
            rows.append(
                [label, category, f"{ms:,.0f}", pct(ms / profile["step_ms"]), fmt(gflop, 1),
                 fmt(rate, 1) if rate else "–", *shares]
            )  # fmt: skip
    header = ["step", "kind", "ms/step", "share of step", "GFLOP/step", "GFLOP/s", "% of fp32 peak", "% of bf16 peak"]
    return table(header, rows)

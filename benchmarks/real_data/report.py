"""Fill the generated blocks of ``docs/real-data.md`` from ``docs/results/real_data_sets.json`` and ``mim_*.json``.

Blocks (``<!-- BEGIN GENERATED: <name> -->`` ... ``<!-- END GENERATED: <name> -->``):

- ``sets``: one row per fetched set: images, patients and labelled / masked / boxed images per split;
- ``kermany``: the published folders and file-name patterns, and the person numbers found in both folders;
- ``real_gap``: per arm of :mod:`benchmarks.real_data.gap` (``real_gap.json``), data, input size, encoder
  start and test metrics; ``real_transfer``: each transfer arm minus the same arm from scratch;
- ``mim_<name>``: per arm of :mod:`benchmarks.real_data.mim_budget`, the test metrics, epochs and SimMIM
  steps, and the machine load around the arm.

Usage::

    python -m benchmarks.real_data.report [--results docs/results] [--doc docs/real-data.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.fl_comparison.report import fmt, table, update_doc
from benchmarks.real_data.gap import ARMS, base_arm

REPO_ROOT = Path(__file__).resolve().parents[2]

_TASKS = ("classification", "segmentation", "detection")


def sets_table(sets: Mapping[str, Any]) -> str:
    """Images / patients / labelled / masked / boxed images per split, one row per set and split."""
    rows = []
    for name, info in sets.items():
        for split, counts in info.get("splits", {}).items():
            labels = ", ".join(f"{k.removeprefix('label=')} {v}" for k, v in counts.items() if k.startswith("label="))
            rows.append([name, split, str(counts["images"]), str(counts["patients"]),
                         *(str(counts[t]) for t in _TASKS), labels])  # fmt: skip
    return table(["set", "split", "images", "patients", "labelled", "masked", "boxed", "labels"], rows)


def kermany_table(info: Mapping[str, Any]) -> str:
    """The published folders, file-name patterns and the person numbers present in both folders."""
    rows = [[f"folder {k}", str(v)] for k, v in info["official_folders"].items()]
    rows += [[f"name pattern `{k}`", str(v)] for k, v in info["file_name_patterns"].items()]
    rows.append(["numbers found in both train/ and test/", str(info["numbers_in_both_official_folders"])])
    rows += [[f"image size (every 50th) {k}", str(v)] for k, v in info["image_sizes"].items()]
    return table(["what", "count"], rows)


def mim_table(results: Mapping[str, Any]) -> str:
    """Test metrics of each arm (validation-best checkpoint), epochs, SimMIM steps and the load around it."""
    rows = []
    for arm, record in results.get("arms", {}).items():
        test, mim = record["test"], record.get("mim", {})
        rows.append([
            arm, fmt(test.get("classification/auc")), fmt(test.get("segmentation/dice")),
            fmt(test.get("segmentation/dice_lesion")), fmt(test.get("detection/map50")),
            fmt(test.get("mean_score")), str(record["epochs"]),
            str(mim.get("steps", "–")), fmt(mim.get("last_masked_l1")) if mim else "–",
            " / ".join(f"{v:.2f}" for v in record["load_before"][:1] + record["load_after"][:1]),
        ])  # fmt: skip
    header = ["arm", "test AUC", "test Dice", "Dice (lesion images)", "test mAP@0.5", "mean", "epochs", "MIM steps",
              "MIM L1", "load 1-min before / after"]  # fmt: skip
    return table(header, rows)


_GAP_METRICS = ("classification/auc", "classification/sensitivity_at_threshold",
                "classification/specificity_at_threshold", "segmentation/dice", "segmentation/dice_lesion",
                "detection/map50", "mean_score")  # fmt: skip


def gap_table(results: Mapping[str, Any]) -> str:
    """One row per arm of :mod:`benchmarks.real_data.gap`: data, input size, start, test metrics, epochs, load.

    Sensitivity and specificity are at the threshold chosen on the validation split (stored in ``best.pt``).
    """
    rows = []
    for arm, record in _in_arm_order(results.get("arms", {})):
        test = record["test"]
        start = record.get("pretrained_from") or "random"
        if "model.pretrained_heads=true" in record.get("overrides", []):
            start += " (whole model)"
        rows.append([
            f"`{arm}`", record["what"], str(record["image_size"]), start,
            *(fmt(test.get(k)) for k in _GAP_METRICS), str(record["epochs"]),
            " / ".join(f"{v:.2f}" for v in record["load_before"][:1] + record["load_after"][:1]),
        ])  # fmt: skip
    header = ["arm", "what", "px", "start", "AUC", "sens.", "spec.", "Dice", "Dice (lesion images)",
              "mAP@0.5", "mean", "epochs", "load 1-min before / after"]  # fmt: skip
    return table(header, rows)


def _in_arm_order(arms: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The recorded arms in :data:`~benchmarks.real_data.gap.ARMS` order (unknown names last), not run order."""
    order = list(ARMS)

    def key(item: tuple[str, Any]) -> tuple[int, str]:
        base = base_arm(item[0])
        return (order.index(base) if base in order else len(order), item[0])

    return sorted(arms.items(), key=key)


def transfer_table(results: Mapping[str, Any]) -> str:
    """Each arm that starts from another arm's checkpoint minus its baseline arm from scratch: test metric deltas."""
    arms = results.get("arms", {})
    rows = []
    for arm, record in _in_arm_order(arms):
        name = record.get("baseline") or (ARMS[arm].baseline if arm in ARMS else None)  # older records lack it
        if name and "@" in arm:
            name += arm[arm.index("@"):]  # the baseline of the same seed
        baseline = arms.get(name) if name else None
        if baseline is None:
            continue
        deltas = [_delta(record["test"].get(k), baseline["test"].get(k)) for k in _GAP_METRICS if "_at_" not in k]
        rows.append([f"`{arm}` vs `{name}`", *deltas])
    return table(["arms", "ΔAUC", "ΔDice", "ΔDice (lesion images)", "ΔmAP@0.5", "Δmean"], rows)


def _delta(value: float | None, baseline: float | None) -> str:
    return "–" if value is None or baseline is None else f"{value - baseline:+.3f}"


def tables(results: Path) -> dict[str, str]:
    """Every block that has its results file in ``results``."""
    out: dict[str, str] = {}
    sets_file = results / "real_data_sets.json"
    if sets_file.exists():
        sets = json.loads(sets_file.read_text())
        out["sets"] = sets_table(sets)
        if "kermany" in sets and "official_folders" in sets["kermany"]:
            out["kermany"] = kermany_table(sets["kermany"])
    gap_file = results / "real_gap.json"
    if gap_file.exists():
        gap = json.loads(gap_file.read_text())
        out["real_gap"], out["real_transfer"] = gap_table(gap), transfer_table(gap)
    for path in sorted(results.glob("mim_*.json")):
        out[path.stem] = mim_table(json.loads(path.read_text()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the blocks; print the names replaced."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "docs" / "results")
    parser.add_argument("--doc", type=Path, default=REPO_ROOT / "docs" / "real-data.md")
    args = parser.parse_args(argv)
    print("updated:", ", ".join(update_doc(args.doc, tables(args.results))) or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())

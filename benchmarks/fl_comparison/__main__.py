"""Run the whole federated comparison: estimate, bounds, one-shot, task split, iterative, identity check, report.

Usage::

    python -m benchmarks.fl_comparison [--quick] [--out runs/fl-comparison] [--results docs/results]
        [--doc docs/RESULTS.md] [--cache-dir DIR] [--skip-estimate]

Each part keeps its defaults (see its module); finished runs in ``--out`` are reused, so an interrupted
comparison continues where it stopped. The total time estimate is printed before anything trains.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from benchmarks.fl_comparison import bounds, identity_check, iterative, one_shot, report, task_split

PARTS = {
    "bounds": bounds,
    "one_shot": one_shot,
    "task_split": task_split,
    "iterative": iterative,
    "identity_check": identity_check,
}


def main(argv: Sequence[str] | None = None) -> None:
    """Run every part in order, then write the tables, plots and JSON copies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test scale for every part")
    parser.add_argument("--out", default="runs/fl-comparison")
    parser.add_argument("--results", default="docs/results")
    parser.add_argument("--doc", default=None, help="Markdown file whose generated blocks to update")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--skip-estimate", action="store_true", help="do not print the total estimate first")
    args = parser.parse_args(argv)
    common = ["--out", args.out] + (["--quick"] if args.quick else [])
    common += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    if not args.skip_estimate:
        total = sum(part.main([*common, "--estimate-only"])["estimate_s"] for part in PARTS.values())
        print(f"[all] estimated wall time of every part: {total / 60:.1f} min", flush=True)
    began = time.monotonic()
    for part in PARTS.values():
        part.main(common)
    report_args = ["--out", args.out, "--results", args.results] + (["--doc", args.doc] if args.doc else [])
    report.main(report_args)
    print(f"[all] done in {(time.monotonic() - began) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()

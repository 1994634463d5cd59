"""Peak memory (RSS) of loading one large image through the dataset, with and without shrinking while decoding.

Writes 8000 x 8000 PNGs (8-bit and 16-bit grey) with a mask and a box, then loads one item
(``MedicalImageDataset[0]``: decode, window, resize to ``--image-size``) in a fresh process per case and
reports that process's peak RSS and its increase over the same process just before the load (imports and
dataset built; the kernel's peak counter is reset there, Linux ``/proc/self/clear_refs``). Cases: ``full``
decodes at full resolution, the path every image took before large images were shrunk
(``image_io.REDUCE_ABOVE_PIXELS`` lifted); ``shrunk`` is the default. Memory does not depend on the machine's
load, but the load average is recorded with the run.

Usage (from the repository root)::

    python -m benchmarks.decode_memory --out docs/results/decode_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mtmedformer.atomic import atomic_write_json

SIDE = 8000

_CHILD = """
import json, sys, torch
torch.set_num_threads(1)
from mtmedformer.data import image_io
from mtmedformer.data.dataset import MedicalImageDataset
from mtmedformer.data.records import Record
image, mask, case, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if case == "full":
    image_io.REDUCE_ABOVE_PIXELS = float("inf")
record = Record(image=image, patient_id="p", label="benign", masks=(mask,), boxes=((1000.0, 2000.0, 3000.0, 4500.0),))
dataset = MedicalImageDataset([record], ("benign", "malignant"), size)
def status(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key + ":")) / 1024
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak (VmHWM) to the current RSS, so the peak below is this item's
before = status("VmRSS")
sample = dataset[0]
peak = status("VmHWM")
print(json.dumps({"rss_before_mib": before, "rss_peak_mib": peak,
                  "shape": list(sample["image"].shape), "boxes": sample["boxes"].tolist()}))
"""


def write_images(folder: Path) -> dict[str, Path]:
    """The 8-bit and 16-bit test images (smooth gradient + noise + a bright lesion) and one mask."""
    rng = np.random.default_rng(0)
    rows = np.linspace(0.0, 1.0, SIDE, dtype=np.float32)[:, None]
    base = 0.2 + 0.5 * rows * np.ones((1, SIDE), dtype=np.float32)
    base += 0.05 * rng.standard_normal((SIDE, SIDE), dtype=np.float32)
    base[2000:4500, 1000:3000] = 0.95
    np.clip(base, 0.0, 1.0, out=base)
    paths = {"png8": folder / "large8.png", "png16": folder / "large16.png", "mask": folder / "mask.png"}
    Image.fromarray((base * 255).astype(np.uint8)).save(paths["png8"], compress_level=1)
    Image.fromarray((base * 4095).astype(np.uint16)).save(paths["png16"], compress_level=1)
    mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
    mask[2000:4500, 1000:3000] = 255
    Image.fromarray(mask).save(paths["mask"], compress_level=1)
    return paths


def measure(image: Path, mask: Path, case: str, image_size: int) -> dict[str, object]:
    """Run one load in a fresh interpreter and return its memory figures."""
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(image), str(mask), case, str(image_size)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rss_increase_mib"] = result["rss_peak_mib"] - result["rss_before_mib"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")
    parser.add_argument("--image-size", type=int, default=128, help="data.image_size of the dataset (default 128)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp))
        for kind in ("png8", "png16"):
            for case in ("full", "shrunk"):
                row = {"image": f"{SIDE}x{SIDE} {kind}", "case": case,
                       **measure(paths[kind], paths["mask"], case, args.image_size)}
                rows.append(row)
                print(f"{row['image']:>16} {case:>7}: peak RSS {row['rss_peak_mib']:.0f} MiB, "
                      f"+{row['rss_increase_mib']:.0f} MiB for the item")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    atomic_write_json(args.out, {
        "benchmark": "benchmarks/decode_memory.py",
        "what": "peak RSS of one MedicalImageDataset item (decode + window + resize) in a fresh process",
        "image_size": args.image_size,
        "commit": commit,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.platform(),
        "load_average": list(os.getloadavg()),
        "results": rows,
    })


if __name__ == "__main__":
    main()

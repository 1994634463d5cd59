"""Write one synthetic data folder per site for the Docker demo (``docker/compose.yml``).

Each site of a real deployment mounts its own folder holding ``manifest.csv`` (paths relative to it) at
``/data``. This script gives the one-host demo the same shape: it generates the deterministic synthetic set
(``mtmedformer.data.synthetic``) and moves every site's images, masks and manifest rows into
``<out>/<site>/``::

    <out>/site-a/manifest.csv
    <out>/site-a/images/site-a/site-a-0000.png
    <out>/site-a/masks/site-a/site-a-0000.png      (mammography)

Usage::

    .venv/bin/python docker/demo_data.py --out docker/demo-data [--num-sites 3] [--images-per-site 120]
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from mtmedformer.config.data import SyntheticConfig
from mtmedformer.data.synthetic import generate_synthetic
from mtmedformer.errors import DataError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"


def write_demo_sites(out_dir: str | Path, cfg: SyntheticConfig) -> dict[str, Path]:
    """Generate the synthetic set of ``cfg`` and split it into one self-contained folder per site.

    Parameters
    ----------
    out_dir
        Folder to create the site folders in; each ``<out_dir>/<site>`` must not exist yet.
    cfg
        Generator settings (modality, number of sites, images per site, image size, seed).

    Returns
    -------
    dict[str, pathlib.Path]
        Site name (``site-a``, ``site-b``, ...) -> that site's ``manifest.csv``.

    Raises
    ------
    DataError
        If a site folder already exists (delete it or choose another ``out_dir``) or cannot be written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".generating-") as scratch:
        manifest = generate_synthetic(cfg, Path(scratch) / "set")
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
        by_site: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            by_site.setdefault(row["site"], []).append(row)
        manifests = {}
        for site, site_rows in by_site.items():
            site_dir = out_dir / site
            if site_dir.exists():
                raise DataError("site folder already exists; delete it or choose another --out", path=site_dir)
            for row in site_rows:  # image/mask paths stay relative to the manifest, so rows are copied unchanged
                for column in ("image", "mask"):
                    if row.get(column):
                        target = site_dir / row[column]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.move(manifest.parent / row[column], target)
            manifests[site] = site_dir / MANIFEST_NAME
            with manifests[site].open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(site_rows)
            logger.info("site %s: %d images, manifest %s", site, len(site_rows), manifests[site])
    return manifests


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the site folders (e.g. docker/demo-data)")
    parser.add_argument("--modality", choices=("mammography", "chest_xray"), default="mammography")
    parser.add_argument("--num-sites", type=int, default=3)
    parser.add_argument("--images-per-site", type=int, default=SyntheticConfig.images_per_site)
    parser.add_argument("--image-size", type=int, default=SyntheticConfig.image_size)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = SyntheticConfig(
            modality=args.modality,
            num_sites=args.num_sites,
            images_per_site=args.images_per_site,
            image_size=args.image_size,
            seed=args.seed,
        )
        manifests = write_demo_sites(args.out, cfg)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for site, manifest in manifests.items():
        print(f"{site}: {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

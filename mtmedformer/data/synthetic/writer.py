"""Write a synthetic data set (PNG files plus a manifest CSV) and cache it by its settings.

Layout of a generated set::

    manifest.csv                  one row per image (format below)
    generator.json                the settings and GENERATOR_VERSION that produced the set
    images/<site>/<site>-0000.png 8-bit, or 16-bit holding 12-bit values for a 16-bit site
    masks/<site>/<site>-0000.png  mammography only: 0 / 255, all zero for lesion-free images

Manifest columns ``image,label,mask,boxes,patient_id,split,site``: ``image``/``mask`` are paths
relative to the CSV; an empty ``label``, ``mask`` or ``boxes`` cell means *not annotated*; ``boxes``
is a JSON list of ``[x0, y0, x1, y1]`` pixel boxes (pixel-edge convention, ``[]`` = annotated with
no lesion). For mammography the boxes are the 8-connected components of the mask. Lesion-free
mammograms carry an all-zero mask and ``[]`` boxes (annotated negatives for segmentation and
detection) but an empty label: benign/malignant describes a lesion, so it is not annotated there.

Determinism: the images of site ``k`` are drawn from ``numpy.random.default_rng([seed, k, 0, i])``
and the site's case plan (patients, classes, splits, withheld annotations) from
``default_rng([seed, k, 1, 0])``; keys all have four entries because ``SeedSequence`` treats
trailing zeros as absent. PNGs carry no timestamps, so the same settings give byte-identical files.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mtmedformer.config.data import SyntheticConfig
from mtmedformer.data.synthetic import chest_xray, mammography
from mtmedformer.data.synthetic.primitives import components_to_boxes
from mtmedformer.data.synthetic.sites import SiteProfile, acquire, site_profiles
from mtmedformer.errors import DataError

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever the drawn images or the plan change, so old caches are not reused
MANIFEST_NAME = "manifest.csv"
COLUMNS: tuple[str, ...] = ("image", "label", "mask", "boxes", "patient_id", "split", "site")
CACHE_ENV = "MTMEDFORMER_CACHE"
SECOND_IMAGE_PROBABILITY = 0.3  # share of patients with two images (CC + MLO views, or a follow-up film)
_IMAGE_STREAM, _PLAN_STREAM = 0, 1


@dataclass(frozen=True)
class PlannedImage:
    """What one image of a site will show and which annotations its manifest row keeps."""

    index: int
    patient_id: str
    view: str  # "CC" / "MLO" for mammography, "PA" for chest X-ray
    finding: str | None  # class drawn; None = lesion-free mammogram
    split: str
    keep_label: bool
    keep_mask: bool
    keep_boxes: bool


def classes_of(modality: str) -> tuple[str, ...]:
    """Return the class names the generator writes for ``modality`` (index = class id)."""
    return mammography.CLASSES if modality == "mammography" else chest_xray.CLASSES


def _split_patients(rng: np.random.Generator, count: int, val: float, test: float) -> list[str]:
    """Seeded patient-level split; each non-zero fraction gets at least one patient when there are >= 3."""
    n_test, n_val = round(test * count), round(val * count)
    if count >= 3:
        n_test, n_val = max(n_test, int(test > 0)), max(n_val, int(val > 0))
    n_test = min(n_test, max(count - 1, 0))
    n_val = min(n_val, max(count - 1 - n_test, 0))
    splits = ["test"] * n_test + ["val"] * n_val + ["train"] * (count - n_test - n_val)
    return [splits[j] for j in rng.permutation(count)]


def plan_site(cfg: SyntheticConfig, profile: SiteProfile) -> list[PlannedImage]:
    """Plan the images of one site: patients, classes (with the site's prevalence), splits, withheld labels.

    Parameters
    ----------
    cfg
        Generator settings.
    profile
        The site; its ``prevalence`` sets how often a case is malignant / pneumonia.

    Returns
    -------
    list of PlannedImage
        ``cfg.images_per_site`` entries in index order; a patient's images are consecutive and share
        the finding and split.
    """
    rng = np.random.default_rng([cfg.seed, profile.index, _PLAN_STREAM, 0])
    positive, negative = classes_of(cfg.modality)[1], classes_of(cfg.modality)[0]
    patients: list[tuple[int, str | None]] = []  # (number of images, finding)
    planned = 0
    while planned < cfg.images_per_site:
        count = min(2 if rng.random() < SECOND_IMAGE_PROBABILITY else 1, cfg.images_per_site - planned)
        lesion_free = cfg.modality == "mammography" and rng.random() < cfg.lesion_free_fraction
        finding = None if lesion_free else (positive if rng.random() < profile.prevalence else negative)
        patients.append((count, finding))
        planned += count
    splits = _split_patients(rng, len(patients), cfg.val_fraction, cfg.test_fraction)
    images = []
    for p, ((count, finding), split) in enumerate(zip(patients, splits, strict=True)):
        for view_index in range(count):
            withheld = (cfg.label_withheld_fraction, cfg.mask_withheld_fraction, cfg.boxes_withheld_fraction)
            keep = rng.random(3) >= withheld  # always three draws, so the plan's stream is fixed
            view = mammography.VIEWS[view_index] if cfg.modality == "mammography" else "PA"
            images.append(
                PlannedImage(
                    index=len(images),
                    patient_id=f"{profile.name}-p{p:04d}",
                    view=view,
                    finding=finding,
                    split=split,
                    keep_label=bool(keep[0]) and finding is not None,
                    keep_mask=bool(keep[1]) and cfg.modality == "mammography",
                    keep_boxes=bool(keep[2]),
                )
            )
    return images


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")  # PIL writes no time stamp: files are reproducible


def _write_site(cfg: SyntheticConfig, profile: SiteProfile, out_dir: Path) -> list[dict[str, str]]:
    """Draw, acquire and save every image of one site; return its manifest rows."""
    rows = []
    for item in plan_site(cfg, profile):
        rng = np.random.default_rng([cfg.seed, profile.index, _IMAGE_STREAM, item.index])
        if cfg.modality == "mammography":
            drawing = mammography.draw_mammogram(rng, cfg.image_size, item.finding, item.view, cfg.lesion_conspicuity)
        else:
            finding = item.finding or chest_xray.CLASSES[0]
            drawing = chest_xray.draw_chest_xray(rng, cfg.image_size, finding, cfg.lesion_conspicuity)
        stem = f"{profile.name}-{item.index:04d}"
        image_rel = Path("images") / profile.name / f"{stem}.png"
        _save_png(acquire(drawing.density, profile, rng), out_dir / image_rel)
        mask_cell = ""
        if drawing.mask is not None and item.keep_mask:
            mask_rel = Path("masks") / profile.name / f"{stem}.png"
            _save_png(drawing.mask.astype(np.uint8) * 255, out_dir / mask_rel)
            mask_cell = mask_rel.as_posix()
        boxes = drawing.boxes if drawing.boxes is not None else components_to_boxes(drawing.mask)
        rows.append(
            {
                "image": image_rel.as_posix(),
                "label": item.finding if item.keep_label and item.finding else "",
                "mask": mask_cell,
                "boxes": json.dumps(boxes) if item.keep_boxes else "",
                "patient_id": item.patient_id,
                "split": item.split,
                "site": profile.name,
            }
        )
    return rows


def generation_parameters(cfg: SyntheticConfig) -> dict[str, object]:
    """Return the settings that determine a generated set: every config field but ``cache_dir``, and the version."""
    params: dict[str, object] = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"}
    params["generator_version"] = GENERATOR_VERSION
    return params


def generate_synthetic(cfg: SyntheticConfig, out_dir: str | Path) -> Path:
    """Generate the synthetic set described by ``cfg`` into ``out_dir``.

    Parameters
    ----------
    cfg
        Generator settings (modality, sites, images per site, size, seed, annotation fractions).
    out_dir
        Folder to write into; created if missing, and must be empty if it exists (so no stale files
        from another set can be mixed in).

    Returns
    -------
    pathlib.Path
        The manifest CSV (``out_dir / "manifest.csv"``); see the module docstring for its format.

    Raises
    ------
    DataError
        If ``out_dir`` is a non-empty folder or a file, or cannot be written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError("output folder is not empty; choose a new or empty folder for the synthetic set", path=out_dir)
    if cfg.modality == "chest_xray" and cfg.mask_withheld_fraction > 0:
        logger.warning("mask_withheld_fraction has no effect for chest_xray: chest X-rays are written without masks")
    start = time.perf_counter()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for profile in site_profiles(cfg.num_sites, cfg.sixteen_bit):
            rows.extend(_write_site(cfg, profile, out_dir))
        manifest = out_dir / MANIFEST_NAME
        with manifest.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        info = {"parameters": generation_parameters(cfg), "classes": list(classes_of(cfg.modality))}
        (out_dir / "generator.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write the synthetic set ({exc}); check the folder is writable", path=out_dir) from None
    logger.info(
        "generated %d synthetic %s images (%d sites) in %.1f s into %s",
        len(rows),
        cfg.modality,
        cfg.num_sites,
        time.perf_counter() - start,
        out_dir,
    )
    return manifest


def cache_root(cfg: SyntheticConfig) -> Path:
    """Return the cache folder: ``cfg.cache_dir``, else ``$MTMEDFORMER_CACHE``, else ``~/.cache/mtmedformer``."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mtmedformer"


def synthetic_set_dir(cfg: SyntheticConfig) -> Path:
    """Return the folder that holds (or will hold) the cached set of ``cfg``, named by a hash of its settings."""
    digest = hashlib.sha256(json.dumps(generation_parameters(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return cache_root(cfg) / "synthetic" / f"{cfg.modality}-{digest}"


def synthetic_manifest(cfg: SyntheticConfig) -> Path:
    """Return the manifest of the cached set of ``cfg``, generating it on first use.

    The set is generated into a temporary folder next to its final place and renamed into place in
    one step, so a reader never sees a half-written set; when two processes race, the second rename
    fails, the loser deletes its copy and both use the winner's identical files.

    Returns
    -------
    pathlib.Path
        ``<cache>/synthetic/<modality>-<hash>/manifest.csv``.

    Raises
    ------
    DataError
        If the cache folder cannot be written (set ``data.synthetic.cache_dir`` or
        ``$MTMEDFORMER_CACHE`` to a writable folder), or an existing cached set is incomplete.
    """
    final = synthetic_set_dir(cfg)
    manifest = final / MANIFEST_NAME
    if manifest.is_file():
        logger.debug("using the cached synthetic set %s", final)
        return manifest
    if final.exists():
        raise DataError("cached synthetic set has no manifest.csv (it was altered); delete the folder", path=final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise DataError(
            f"cannot create the synthetic data cache ({exc}); set data.synthetic.cache_dir or ${CACHE_ENV} "
            "to a writable folder",
            path=final.parent,
        ) from None
    try:
        generate_synthetic(cfg, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not manifest.is_file():  # not a lost race: a real failure
                raise
            logger.debug("another process generated %s first; using its copy", final)
    except OSError as exc:
        raise DataError(f"cannot move the generated set into the cache ({exc})", path=final) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest

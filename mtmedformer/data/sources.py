"""Load the records of the configured data source and split them into train/val/test datasets."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from mtmedformer.config import DataConfig
from mtmedformer.data.dataset import MedicalImageDataset
from mtmedformer.data.loaders import load_cbis_ddsm, load_kermany, load_rsna
from mtmedformer.data.manifest import read_manifest
from mtmedformer.data.records import SPLITS, Record
from mtmedformer.data.splits import assign_splits, by_split
from mtmedformer.data.synthetic import synthetic_manifest

log = logging.getLogger(__name__)


def load_records(cfg: DataConfig) -> list[Record]:
    """Read every record of ``cfg.source`` and give each a split (patient-level, seeded, where none is given).

    Raises
    ------
    DataError
        If the source's files are missing or invalid (the message names the row, file and fix).
    """
    if cfg.source == "synthetic":
        manifest = synthetic_manifest(cfg.synthetic)
        records = read_manifest(manifest, cfg.classes, on_bad_row=cfg.on_bad_row).records
    elif cfg.source == "manifest":
        records = read_manifest(cfg.path, cfg.classes, on_bad_row=cfg.on_bad_row).records
    elif cfg.source == "cbis_ddsm":
        # The official test split is kept; validation patients are carved out of the official training split.
        records = load_cbis_ddsm(
            cfg.path, cfg.classes, on_bad_row=cfg.on_bad_row, resplit_train=True,
            abnormality=cfg.native.abnormality, cross_split_patients=cfg.native.cross_split_patients,
        )
    elif cfg.source == "rsna":
        records = load_rsna(cfg.path, cfg.classes, on_bad_row=cfg.on_bad_row)
    else:
        records = load_kermany(
            cfg.path, cfg.classes, on_bad_row=cfg.on_bad_row, keep_official_val=cfg.native.keep_official_val,
            cross_split_patients=cfg.native.cross_split_patients,
        )
    # Where the source already defines a test split (CBIS-DDSM, Kermany), keep it as the only test set.
    test_fraction = 0.0 if any(r.split == "test" for r in records) else cfg.test_fraction
    return assign_splits(records, cfg.val_fraction, test_fraction, cfg.split_seed)


def make_datasets(cfg: DataConfig, records: Sequence[Record], *, seed: int = 0) -> dict[str, MedicalImageDataset]:
    """One dataset per split present in ``records`` (augmentation only on ``train`` when enabled)."""
    groups = by_split(list(records))
    return {
        split: MedicalImageDataset(
            groups[split],
            cfg.classes,
            cfg.image_size,
            train=(split == "train" and cfg.augment),
            window=cfg.window_percentiles,
            seed=seed,
            max_image_pixels=cfg.max_image_pixels,
            skip_undecodable=cfg.on_bad_row == "skip",
        )
        for split in SPLITS
        if groups.get(split)
    }


def describe_records(records: Sequence[Record]) -> dict[str, dict[str, int]]:
    """Counts per split: images, patients, sites, and images annotated per task."""
    summary: dict[str, dict[str, int]] = {}
    for split, group in by_split(list(records)).items():
        labels = Counter(r.label for r in group if r.label is not None)
        summary[split] = {
            "images": len(group),
            "patients": len({r.patient_id for r in group}),
            "sites": len({r.site for r in group}),
            "classification": sum(r.has_label for r in group),
            "segmentation": sum(r.has_mask for r in group),
            "detection": sum(r.has_boxes for r in group),
            **{f"label={k}": v for k, v in sorted(labels.items())},
        }
    return summary

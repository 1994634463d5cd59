"""One site's data for federated training: a manifest in deployment, a partition of a data set in simulation."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from mtmedformer.config import DataConfig, ExperimentConfig
from mtmedformer.data.dataset import MedicalImageDataset
from mtmedformer.data.manifest import read_manifest
from mtmedformer.data.partition import partition_records
from mtmedformer.data.records import Record
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.data.splits import assign_splits
from mtmedformer.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteData:
    """The splits of one site.

    Attributes
    ----------
    name
        Site name (from the node config, or the partition's site / index in simulation).
    train, val, test
        Datasets of the site's splits; ``val``/``test`` may be None when the site has none.
    """

    name: str
    train: MedicalImageDataset
    val: MedicalImageDataset | None
    test: MedicalImageDataset | None


def _site_from_records(name: str, records: list[Record], cfg: ExperimentConfig) -> SiteData:
    datasets = make_datasets(cfg.data, records, seed=cfg.train.seed)
    if "train" not in datasets:
        raise DataError(
            f"site '{name}' has no training images ({len(records)} records, none in split 'train'); "
            "give it rows with split=train or leave the split column empty"
        )
    return SiteData(name, datasets["train"], datasets.get("val"), datasets.get("test"))


@functools.lru_cache(maxsize=4)
def _all_records(data_cfg: DataConfig) -> tuple[Record, ...]:
    # Simulated clients of one process share the parsed data set instead of re-reading it every round.
    return tuple(load_records(data_cfg))


def simulated_site(cfg: ExperimentConfig, partition_id: int, num_partitions: int) -> SiteData:
    """Partition ``partition_id`` of ``num_partitions`` of the configured data set (``federated.partition``).

    Raises
    ------
    DataError
        If the partition id is out of range, or the data cannot be split into that many non-empty sites.
    """
    if not 0 <= partition_id < num_partitions:
        raise DataError(f"partition-id {partition_id} is outside [0, {num_partitions})")
    part = cfg.federated.partition
    parts = partition_records(
        list(_all_records(cfg.data)), num_partitions, part.scheme, alpha=part.alpha, seed=part.seed
    )
    records = parts[partition_id]
    sites = sorted({r.site for r in records if r.site})
    name = sites[0] if part.scheme == "site" and len(sites) == 1 else f"partition-{partition_id}"
    return _site_from_records(name, records, cfg)


def deployed_site(cfg: ExperimentConfig, manifest: str | Path, site_name: str | None = None) -> SiteData:
    """A hospital's own data from its manifest CSV (paths relative to the CSV), split at patient level."""
    records = read_manifest(manifest, cfg.data.classes, on_bad_row=cfg.data.on_bad_row).records
    records = assign_splits(records, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
    name = site_name or next((r.site for r in records if r.site), None) or Path(manifest).parent.name
    return _site_from_records(name, records, cfg)

"""Decode every image and mask of a data set once, as ``mtmedformer check-data`` promises.

Reading a manifest checks paths, labels, boxes and header sizes, not pixels: random bytes named ``.png``, a
truncated PNG or a DICOM without pixel data pass it. This pass loads every record exactly as training will
(:meth:`~mtmedformer.data.dataset.MedicalImageDataset.load_record`: size limit, decoding, mask sizes, boxes
inside the image), one image at a time, so such files are found before training starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tqdm.auto import tqdm

from mtmedformer.config import DataConfig
from mtmedformer.data.dataset import MedicalImageDataset
from mtmedformer.data.manifest import ManifestResult, shown_reasons
from mtmedformer.data.records import Record
from mtmedformer.errors import DataError

log = logging.getLogger(__name__)

def decode_records(records: Sequence[Record], cfg: DataConfig, *, progress: bool = True) -> ManifestResult:
    """Decode the image and masks of every record, with a progress bar on stderr.

    Parameters
    ----------
    records
        The records to check (e.g. from :func:`~mtmedformer.data.sources.load_records`).
    cfg
        The data settings: ``classes``, ``image_size``, ``window_percentiles``, ``max_image_pixels`` and
        ``on_bad_row`` (``error``: the first bad record raises; ``skip``: bad records are dropped and counted in
        one warning).
    progress
        Show the progress bar.

    Returns
    -------
    ManifestResult
        The records whose files all decoded (input order) and one reason per record dropped.

    Raises
    ------
    DataError
        With ``on_bad_row: error``, for the first record that does not load; with ``skip``, when none loads.
        The message names the manifest row and the file.
    """
    dataset = MedicalImageDataset(
        records, cfg.classes, cfg.image_size, window=cfg.window_percentiles, max_image_pixels=cfg.max_image_pixels
    )
    kept: list[Record] = []
    skipped: list[str] = []
    for record in tqdm(dataset.records, desc="decoding images", unit="image", disable=not progress, leave=False):
        try:
            dataset.load_record(record)
        except DataError as exc:
            if cfg.on_bad_row == "error":
                raise
            skipped.append(str(exc))
            continue
        kept.append(record)
    if skipped:
        log.warning("skipped %d of %d images that do not decode (on_bad_row='skip'): %s", len(skipped),
                    len(dataset.records), shown_reasons(skipped))
    if dataset.records and not kept:
        raise DataError(f"no usable images: all {len(skipped)} failed to decode, e.g. {skipped[0]}")
    return ManifestResult(kept, skipped)

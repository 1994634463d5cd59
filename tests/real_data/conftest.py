"""Tests on fetched public data sets: they run only where ``MTMEDFORMER_REAL_DATA`` names a folder holding them.

Layout under that folder (see ``docs/real-data.md`` for where each set comes from)::

    mini-mias/   Info.txt + mdbNNN.pgm          (benchmarks/real_data/mini_mias.py converts it)
    kermany/     chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg
    rsna/        stage_2_train_labels.csv + stage_2_train_images/*.dcm

Without the variable, or without a set's folder, its tests skip with the reason; the default suite stays
synthetic.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "MTMEDFORMER_REAL_DATA"


@pytest.fixture
def real_set():
    """Return a function ``name -> Path`` of the fetched set's folder, skipping the test when it is absent."""

    def find(name: str) -> Path:
        root = os.environ.get(ENV)
        if not root:
            pytest.skip(f"{ENV} is not set (point it at the folder holding the fetched sets)")
        folder = Path(root) / name
        if not folder.is_dir():
            pytest.skip(f"{folder} does not exist: the {name} set has not been fetched there")
        return folder

    return find

"""Seeding for reproducible CPU runs."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, turn on deterministic algorithms, and return a seeded generator.

    The returned generator drives the DataLoader's shuffling, so the data order depends on ``seed`` only.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global users (e.g. MONAI transforms)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def worker_seed(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader workers: derive NumPy/random seeds from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - per-worker seed of the legacy global generator
    random.seed(seed)

"""Shared test settings: one intra-op thread, so tests are deterministic and leave the other core free."""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

import torch

torch.set_num_threads(1)

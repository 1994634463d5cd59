"""MTMedFormer: a multi-task vision-transformer library for medical imaging.

The library is plain PyTorch/MONAI and never imports Flower: the federated adapters live in the
top-level ``server`` and ``client`` packages, and aggregation strategies in ``strategies``.
"""

__version__ = "0.1.0"

TASKS: tuple[str, ...] = ("classification", "segmentation", "detection")
"""The task names, used as keys everywhere (config, model heads, losses, metrics, records)."""

"""Work-arounds for third-party packages whose installed builds do not fit this environment."""

from mtmedformer.compat.torchvision_ops import import_torchvision, torchvision_has_native_ops

__all__ = ["import_torchvision", "torchvision_has_native_ops"]

"""Import torchvision even when its compiled operators cannot load next to the installed torch.

Why: the PyPI ``torchvision==0.28.0`` wheel is a CUDA build. Next to the CPU ``torch==2.13.0`` wheel its
extension ``torchvision/_C.so`` fails to load (it links ``libtorch_cuda.so``), and ``import torchvision``
then dies with ``RuntimeError: operator torchvision::nms does not exist``: ``torchvision/_meta_registrations.py``
registers fake (meta) kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, while every
other registration there and in ``_autograd_registrations.py`` is guarded by ``extension._has_ops()``.

What: :func:`import_torchvision` first tries to load the native extension exactly as torchvision does. If that
works it simply imports torchvision (no-op path). If not, it defines the schemas of the two ops torchvision
needs at import time (copied from the extension's own schema strings) in the ``torchvision`` namespace, with a
kernel that raises a :class:`RuntimeError` explaining the situation, and then imports torchvision. Everything
that does not need compiled ops (``torchvision.models``, transforms) then works; torchvision's Python wrappers
of compiled ops (``torchvision.ops.nms``, ``roi_align``, ...) keep raising their own "Couldn't load custom C++
ops" error. This library never needs those ops: box utilities come from ``monai.data.box_utils``.

Use :func:`import_torchvision` wherever torchvision is imported in this library.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import threading
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

# The ops whose fake kernels torchvision registers unconditionally at import; schemas as in torchvision/_C.so.
STUB_OP_SCHEMAS: dict[str, str] = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_lock = threading.Lock()
_native: bool | None = None  # None = not tried yet
_library: torch.library.Library | None = None  # must stay referenced: a collected Library drops its schemas


def _load_native_ops() -> str | None:
    """Load torchvision's compiled extension the way ``torchvision.extension`` does.

    Returns None on success, else why it failed. Does not execute ``torchvision/__init__.py``.

    Raises
    ------
    ImportError
        If torchvision is not installed.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision is not installed; install the version pinned in pyproject.toml")
    lib_dir = next(iter(spec.submodule_search_locations))
    finder = importlib.machinery.FileFinder(
        lib_dir, (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    )
    ext = finder.find_spec("_C")
    if ext is None or ext.origin is None:
        return f"no compiled extension '_C' in {lib_dir}"
    try:
        torch.ops.load_library(ext.origin)
    except (OSError, ImportError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _unavailable_kernel(name: str, reason: str):
    def kernel(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        raise RuntimeError(
            f"torchvision::{name} is unavailable: torchvision's compiled extension did not load ({reason}). "
            "mtmedformer registered this op only so that `import torchvision` works. Use "
            "monai.data.box_utils.non_max_suppression instead, or install a torchvision build that matches "
            f"torch {torch.__version__}."
        )

    return kernel


def _register_stub_ops(reason: str) -> None:
    global _library
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in STUB_OP_SCHEMAS.items():
        if _op_exists(name):
            continue
        library.define(schema)
        library.impl(name, _unavailable_kernel(name, reason), "CompositeExplicitAutograd")
    _library = library


def import_torchvision() -> ModuleType:
    """Import and return ``torchvision``, registering stand-ins for its compiled ops when they cannot load.

    A no-op wrapper around ``import torchvision`` where torchvision's native ops load. Otherwise the schemas in
    :data:`STUB_OP_SCHEMAS` are registered with kernels that raise a :class:`RuntimeError` naming the cause;
    this is logged once at INFO level. Safe to call repeatedly and from several threads.

    Raises
    ------
    ImportError
        If torchvision is not installed.
    """
    global _native
    with _lock:
        if _native is None:
            reason = _load_native_ops()
            _native = reason is None
            if reason is not None:
                logger.info("torchvision's compiled ops are unavailable (%s); registering stand-ins", reason)
                _register_stub_ops(reason)
        import torchvision

    return torchvision


def torchvision_has_native_ops() -> bool:
    """Return whether torchvision's compiled ops loaded (imports torchvision first if needed)."""
    import_torchvision()
    return bool(_native)

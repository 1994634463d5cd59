"""Cheap checks of image files from their headers, without decoding pixel data.

Checking a manifest of thousands of mammograms must not decode every image, so sizes come from the
file headers: PIL opens lazily, DICOM is read with ``stop_before_pixels=True``, and NIfTI's header
holds the shape. Pixel bodies are decoded by ``mtmedformer check-data``
(:mod:`mtmedformer.data.decode_check`) and when the dataset loads an image.
"""

from __future__ import annotations

from pathlib import Path

from mtmedformer.data.image_io import IMAGE_SUFFIXES, open_pil
from mtmedformer.errors import DataError


def image_suffix(path: Path) -> str:
    """Return the lower-case extension of ``path``, treating ``.nii.gz`` as one extension."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def check_image_file(path: Path, what: str = "image") -> None:
    """Check that ``path`` has a supported extension and exists.

    Parameters
    ----------
    path
        The file.
    what
        ``"image"`` or ``"mask"``, used in the message.

    Raises
    ------
    DataError
        If the extension is not one of :data:`~mtmedformer.data.image_io.IMAGE_SUFFIXES` or the file is missing.
    """
    suffix = image_suffix(path)
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(
            f"unsupported {what} format '{suffix or path.name}'; convert it to one of {', '.join(IMAGE_SUFFIXES)}",
            path=path,
        )
    if not path.is_file():
        raise DataError(
            f"{what} file not found; paths in a manifest are relative to the CSV's folder, check the spelling",
            path=path,
        )


def _pil_shape(path: Path) -> tuple[int, int]:
    from PIL import UnidentifiedImageError

    try:
        with open_pil(path) as img:  # lazy: reads the header only; no PIL DecompressionBombError
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read the image header ({exc}); re-export the file", path=path) from None
    return height, width


def _dicom_shape(path: Path) -> tuple[int, int]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (InvalidDicomError, AttributeError, ValueError, TypeError, OSError) as exc:
        raise DataError(
            f"cannot read the DICOM header ({type(exc).__name__}: {exc}); the file needs Rows and Columns",
            path=path,
        ) from None
    if frames > 1:
        raise DataError(f"DICOM has {frames} frames; export one 2D frame per file", path=path)
    return rows, columns


def _nifti_shape(path: Path) -> tuple[int, int]:
    import nibabel as nib

    try:
        shape = tuple(int(n) for n in nib.load(str(path)).shape)  # header only; pixels stay on disk
    except Exception as exc:  # nibabel raises many unrelated types for corrupt files
        raise DataError(f"cannot read the NIfTI header ({type(exc).__name__}: {exc})", path=path) from None
    kept = tuple(n for n in shape if n != 1)  # the same squeeze read_image applies
    if len(kept) != 2:
        raise DataError(f"expected a 2D NIfTI slice, got shape {shape}; export one slice per file", path=path)
    # NIfTI stores (x, y) = (column, row); read_image transposes to (row, column).
    return kept[1], kept[0]


def image_shape(path: str | Path) -> tuple[int, int]:
    """Return the ``(H, W)`` that :func:`~mtmedformer.data.image_io.read_image` will give, from the header only.

    Parameters
    ----------
    path
        An image or mask file of a supported format.

    Returns
    -------
    tuple of int
        ``(rows, columns)``.

    Raises
    ------
    DataError
        If the file is missing, of an unsupported format, or its header cannot be read or is not 2D.
    """
    path = Path(path)
    check_image_file(path)
    suffix = image_suffix(path)
    if suffix in (".dcm", ".dicom"):
        return _dicom_shape(path)
    if suffix in (".nii", ".nii.gz"):
        return _nifti_shape(path)
    return _pil_shape(path)

"""Read medical images and masks from disk as 2D arrays, with medical intensity handling.

Accepted formats (by file extension, case-insensitive):

- ``.png`` (8- or 16-bit grey, or RGB/RGBA converted to grey), ``.jpg`` / ``.jpeg``;
- ``.dcm`` / ``.dicom`` (single-frame): ``RescaleSlope``/``RescaleIntercept`` applied, and
  ``MONOCHROME1`` images inverted so that bright always means dense tissue;
- ``.nii`` / ``.nii.gz`` holding one 2D slice (shape ``(X, Y)`` or ``(X, Y, 1)``), transposed to
  ``(rows, columns)``.

Intensities are then windowed to ``[0, 1]`` between two percentiles (:func:`percentile_window`),
which is robust to the very different bit depths and ranges of mammograms and radiographs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtmedformer.errors import DataError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".nii.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
                array = np.asarray(img)
            else:  # RGB(A), palette, LA, CMYK: radiographs saved in colour are grey in content
                array = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode the image ({exc}); re-export it or drop the row", path=path) from None
    return array.astype(np.float32)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except (InvalidDicomError, AttributeError, ValueError, OSError, RuntimeError, NotImplementedError) as exc:
        raise DataError(
            f"cannot read DICOM pixel data ({type(exc).__name__}: {exc}); check the file is a complete "
            "single-frame DICOM and that a decoder for its transfer syntax is installed",
            path=path,
        ) from None
    if pixels.ndim != 2:
        raise DataError(f"expected a single-frame 2D DICOM, got pixel array of shape {pixels.shape}", path=path)
    array = pixels.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    array = array * slope + intercept
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        # MONOCHROME1: low values are displayed bright; invert so that bright = dense everywhere.
        array = array.max() + array.min() - array
    return array


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        data = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises many unrelated types for corrupt files
        raise DataError(f"cannot read NIfTI ({type(exc).__name__}: {exc})", path=path) from None
    data = np.squeeze(data)
    if data.ndim != 2:
        raise DataError(f"expected a 2D NIfTI slice, got shape {data.shape}; export one slice per file", path=path)
    # NIfTI stores (x, y) = (column, row); transpose to (row, column) like every other format.
    return np.ascontiguousarray(data.T)


def read_image(path: str | Path) -> np.ndarray:
    """Read one 2D image as raw float32 intensities.

    Parameters
    ----------
    path
        Image file; see the module docstring for the accepted formats.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32, DICOM rescale and MONOCHROME1 inversion applied, not yet windowed.

    Raises
    ------
    DataError
        If the file does not exist, has an unsupported extension, or cannot be decoded.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(
            f"unsupported image format '{suffix or path.name}'; use one of {', '.join(IMAGE_SUFFIXES)}", path=path
        )
    if not path.is_file():
        raise DataError("file not found; check the path is relative to the CSV that names it", path=path)
    if suffix in (".dcm", ".dicom"):
        array = _read_dicom(path)
    elif suffix in (".nii", ".nii.gz"):
        array = _read_nifti(path)
    else:
        array = _read_pil(path)
    if array.ndim != 2 or min(array.shape) < 1:
        raise DataError(f"expected a 2D image, got shape {array.shape}", path=path)
    if not np.isfinite(array).all():
        raise DataError("image contains NaN or infinite values", path=path)
    return array


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a lesion mask as a boolean array (non-zero = lesion).

    Parameters
    ----------
    path
        Mask file in any format :func:`read_image` accepts.
    shape
        ``(H, W)`` of the image the mask belongs to; when given, the sizes must match exactly.

    Raises
    ------
    DataError
        If the mask cannot be read or its size differs from ``shape``.
    """
    mask = read_image(path) != 0
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise DataError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is {shape[1]}x{shape[0]}; "
            "masks must have exactly the image's size",
            path=path,
        )
    return mask


def percentile_window(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map intensities linearly so that the ``low``/``high`` percentiles become 0/1, clipping outside.

    Parameters
    ----------
    image
        ``(H, W)`` raw intensities.
    low, high
        Percentiles in ``[0, 100]``, ``low < high``.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 in ``[0, 1]``; a constant image maps to all zeros.
    """
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)

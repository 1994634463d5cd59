"""Read medical images and masks from disk as 2D arrays, with medical intensity handling.

Accepted formats (by file extension, case-insensitive):

- ``.png`` (8- or 16-bit grey, or RGB/RGBA converted to grey), ``.jpg`` / ``.jpeg``;
- ``.dcm`` / ``.dicom`` (single-frame): ``RescaleSlope``/``RescaleIntercept`` applied, and
  ``MONOCHROME1`` images inverted so that bright always means dense tissue;
- ``.nii`` / ``.nii.gz`` holding one 2D slice (shape ``(X, Y)`` or ``(X, Y, 1)``), transposed to
  ``(rows, columns)``.

Intensities are then windowed to ``[0, 1]`` between two percentiles (:func:`percentile_window`),
which is robust to the very different bit depths and ranges of mammograms and radiographs.

Size: an image above ``max_pixels`` (``data.max_image_pixels``) is refused from its header, before its pixels
are decoded. An image may be shrunk by an integer ``reduce`` factor while it is decoded (JPEG: the decoder's
own DCT scaling, ``draft``; other formats: box-filtered right after decoding, before the float copies that
windowing makes), so that the memory one item costs stays bounded; see :func:`reduction_factor`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mtmedformer.errors import DataError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".nii.gz")
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000  # data.max_image_pixels' default: above the largest clinical 2D images
# Images with more pixels than this are shrunk while decoding (reduction_factor). It lies above the
# full-field digital mammograms of common detectors, so those are decoded at full resolution as before.
REDUCE_ABOVE_PIXELS = 4096 * 4096

_PIL_OPEN_LOCK = threading.Lock()  # PIL's own pixel limit is a module global; see open_pil


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def check_pixel_limit(shape: tuple[int, int], max_pixels: int | None, path: Path) -> None:
    """Refuse an image of ``shape`` ``(H, W)`` with more than ``max_pixels`` pixels (None = no limit).

    Raises
    ------
    DataError
        Naming the file, its size and the ``data.max_image_pixels`` setting.
    """
    height, width = shape
    if max_pixels is not None and height * width > max_pixels:
        raise DataError(
            f"image is {width}x{height} = {height * width:,} pixels, above data.max_image_pixels = {max_pixels:,}; "
            "downscale the file, drop the row, or raise data.max_image_pixels if the machine has the memory",
            path=path,
        )


@contextlib.contextmanager
def open_pil(path: Path) -> Iterator[Any]:
    """``PIL.Image.open`` without PIL's decompression-bomb limit: :func:`check_pixel_limit` replaces it.

    PIL raises its own ``DecompressionBombError`` (not a ``DataError``) at twice its module-global
    ``MAX_IMAGE_PIXELS``, whatever ``data.max_image_pixels`` says; the global is lifted while the header is
    read (under a lock, as it is shared by the threads of a process).
    """
    from PIL import Image

    with _PIL_OPEN_LOCK:
        kept = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)  # lazy: reads the header only
        finally:
            Image.MAX_IMAGE_PIXELS = kept
    with img:
        yield img


def reduction_factor(shape: tuple[int, int], target_side: int | None) -> int:
    """The integer factor by which an image of ``shape`` ``(H, W)`` is shrunk while decoding.

    1 (full resolution) unless the image has more than :data:`REDUCE_ABOVE_PIXELS` pixels and ``target_side``
    (the side the dataset resizes the longest side to) is given; then the largest factor that keeps the longest
    side at least twice ``target_side``, so that the final anti-aliased resize still has pixels to average.
    """
    height, width = shape
    if target_side is None or height * width <= REDUCE_ABOVE_PIXELS:
        return 1
    return max(1, max(height, width) // (2 * target_side))


def reduced_shape(shape: tuple[int, int], factor: int) -> tuple[int, int]:
    """``(H, W)`` of an image of ``shape`` shrunk by ``factor`` (sides rounded up)."""
    return math.ceil(shape[0] / factor), math.ceil(shape[1] / factor)


def _shrink_array(array: np.ndarray, factor: int, nearest: bool) -> np.ndarray:
    """Shrink a decoded 2D array by ``factor`` the way the PIL path does (box filter; nearest for masks)."""
    if factor == 1:
        return array
    if nearest:
        height, width = reduced_shape(array.shape, factor)
        rows = np.minimum((np.arange(height) + 0.5) * array.shape[0] / height, array.shape[0] - 1).astype(int)
        cols = np.minimum((np.arange(width) + 0.5) * array.shape[1] / width, array.shape[1] - 1).astype(int)
        return np.ascontiguousarray(array[np.ix_(rows, cols)])
    from PIL import Image

    height, width = reduced_shape(array.shape, factor)
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BOX), dtype=np.float32)


def _read_pil(path: Path, max_pixels: int | None, reduce: int, nearest: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with open_pil(path) as img:
            width, height = img.size
            check_pixel_limit((height, width), max_pixels, path)
            grey = img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L")
            target = reduced_shape((height, width), reduce)[::-1]  # (W, H) for PIL
            if reduce > 1 and img.format == "JPEG":
                img.draft("L" if not grey else img.mode, target)  # decode at 1/2, 1/4 or 1/8 scale
            img.load()
            if not grey:  # RGB(A), palette, LA, CMYK: radiographs saved in colour are grey in content
                img = img.convert("L")
            if reduce > 1 and img.size != target:
                img = img.resize(target, Image.Resampling.NEAREST if nearest else Image.Resampling.BOX)
            array = np.asarray(img)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise DataError(f"cannot decode the image ({exc}); re-export it or drop the row", path=path) from None
    return array.astype(np.float32)


def _read_dicom(path: Path, max_pixels: int | None) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            raise DataError("the DICOM file has no pixel data (PixelData); export the image, not only its header",
                            path=path)
        check_pixel_limit((int(ds.Rows), int(ds.Columns)), max_pixels, path)  # before the pixels are decoded
        pixels = ds.pixel_array
    except DataError:
        raise
    except (InvalidDicomError, AttributeError, ValueError, TypeError, KeyError, OSError, RuntimeError,
            NotImplementedError, MemoryError) as exc:
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


def _read_nifti(path: Path, max_pixels: int | None) -> np.ndarray:
    import nibabel as nib

    try:
        nii = nib.load(str(path))
        kept = [int(n) for n in nii.shape if n != 1]
        if len(kept) == 2:
            check_pixel_limit((kept[1], kept[0]), max_pixels, path)  # header only, before get_fdata
        data = np.asarray(nii.get_fdata(dtype=np.float32))
    except DataError:
        raise
    except Exception as exc:  # nibabel raises many unrelated types for corrupt files
        raise DataError(f"cannot read NIfTI ({type(exc).__name__}: {exc})", path=path) from None
    data = np.squeeze(data)
    if data.ndim != 2:
        raise DataError(f"expected a 2D NIfTI slice, got shape {data.shape}; export one slice per file", path=path)
    # NIfTI stores (x, y) = (column, row); transpose to (row, column) like every other format.
    return np.ascontiguousarray(data.T)


def read_image(
    path: str | Path,
    *,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    reduce: int = 1,
    nearest: bool = False,
) -> np.ndarray:
    """Read one 2D image as raw float32 intensities.

    Parameters
    ----------
    path
        Image file; see the module docstring for the accepted formats.
    max_pixels
        Largest accepted ``H * W`` (``data.max_image_pixels``), checked from the header before decoding;
        None = no limit.
    reduce
        Integer factor to shrink the image by while decoding (1 = full resolution); the result has
        :func:`reduced_shape` ``(ceil(H / reduce), ceil(W / reduce))``.
    nearest
        Shrink by nearest-neighbour sampling instead of a box filter (for masks, whose values are labels).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32, DICOM rescale and MONOCHROME1 inversion applied, not yet windowed.

    Raises
    ------
    DataError
        If the file does not exist, has an unsupported extension, is above ``max_pixels``, or cannot be decoded
        (random bytes, a truncated file, a DICOM without pixel data).
    ValueError
        If ``reduce`` is not an integer >= 1.
    """
    if isinstance(reduce, bool) or not isinstance(reduce, int) or reduce < 1:
        raise ValueError(f"reduce must be an integer >= 1, got {reduce!r}")
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(
            f"unsupported image format '{suffix or path.name}'; use one of {', '.join(IMAGE_SUFFIXES)}", path=path
        )
    if not path.is_file():
        raise DataError("file not found; check the path is relative to the CSV that names it", path=path)
    if suffix in (".dcm", ".dicom"):
        array = _shrink_array(_read_dicom(path, max_pixels), reduce, nearest)
    elif suffix in (".nii", ".nii.gz"):
        array = _shrink_array(_read_nifti(path, max_pixels), reduce, nearest)
    else:
        array = _read_pil(path, max_pixels, reduce, nearest)
    if array.ndim != 2 or min(array.shape) < 1:
        raise DataError(f"expected a 2D image, got shape {array.shape}", path=path)
    if not np.isfinite(array).all():
        raise DataError("image contains NaN or infinite values", path=path)
    return array


def read_mask(
    path: str | Path,
    shape: tuple[int, int] | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    reduce: int = 1,
) -> np.ndarray:
    """Read a lesion mask as a boolean array (non-zero = lesion).

    Parameters
    ----------
    path
        Mask file in any format :func:`read_image` accepts.
    shape
        ``(H, W)`` of the image the mask belongs to, after the same ``reduce``; when given, the sizes must match
        exactly.
    max_pixels, reduce
        As for :func:`read_image`; a mask is shrunk by nearest-neighbour sampling, so it stays binary.

    Raises
    ------
    DataError
        If the mask cannot be read or its size differs from ``shape``.
    """
    mask = read_image(path, max_pixels=max_pixels, reduce=reduce, nearest=True) != 0
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

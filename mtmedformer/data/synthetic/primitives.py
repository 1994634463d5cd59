"""Vectorised drawing primitives shared by the synthetic modalities: smooth noise and soft shapes.

All functions take a seeded :class:`numpy.random.Generator` (where they draw anything) and return
float32 arrays of shape ``(H, W)``; coordinates are in pixels with ``x`` = column and ``y`` = row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)`` pixel-centre coordinates, each ``(size, size)`` float32 (``x`` = column)."""
    axis = np.arange(size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return x, y


def smooth_noise(rng: np.random.Generator, size: int, sigma: float, aspect: float = 1.0) -> np.ndarray:
    """Gaussian-smoothed white noise with zero mean and unit standard deviation.

    The noise is drawn on a grid about ``sigma / 3`` times coarser than the image, smoothed there and
    upsampled (linear), so the cost does not grow with ``sigma``.

    Parameters
    ----------
    rng
        Seeded generator.
    size
        Side of the square output, pixels.
    sigma
        Correlation length (Gaussian sigma) along rows, pixels; ``> 0``.
    aspect
        Correlation length along columns divided by that along rows (``> 1`` gives horizontal streaks).

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32.
    """
    # Three coarse cells per sigma: linear upsampling of a field that smooth is visually seamless.
    step = max(1, int(min(sigma, sigma * aspect) // 3))
    coarse = -(-size // step)  # ceil(size / step) cells; zoom then returns exactly `size` pixels
    noise = rng.standard_normal((coarse, coarse))
    field = ndimage.gaussian_filter(noise, (sigma / step, sigma * aspect / step), mode="wrap")
    if step > 1:
        field = ndimage.zoom(field, size / coarse, order=1, mode="grid-wrap", grid_mode=True)
    field -= field.mean()
    return (field / (field.std() + 1e-8)).astype(np.float32)


def fractal_noise(
    rng: np.random.Generator, size: int, sigmas: tuple[float, ...], weights: tuple[float, ...], aspect: float = 1.0
) -> np.ndarray:
    """Weighted sum of :func:`smooth_noise` at several correlation lengths, rescaled to unit std.

    Parameters
    ----------
    sigmas, weights
        Correlation lengths (pixels) and their relative amplitudes, same length.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32, zero mean, unit standard deviation.
    """
    total = np.zeros((size, size), dtype=np.float32)
    for sigma, weight in zip(sigmas, weights, strict=True):
        total += weight * smooth_noise(rng, size, sigma, aspect)
    return total / (total.std() + 1e-8)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function, float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


def radial_shape(
    x: np.ndarray,
    y: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    *,
    aspect: float = 1.0,
    angle: float = 0.0,
    harmonics: np.ndarray | None = None,
    phases: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance-like field of a star-shaped blob ``r <= R(theta)``.

    ``R(theta) = radius * (1 + sum_k harmonics[k] * cos((k + 2) * theta + phases[k]))`` in a frame
    rotated by ``angle`` and squeezed by ``aspect`` along its second axis, so an ellipse is
    ``harmonics = None`` and irregular, lobulated outlines come from the harmonics. The region is
    star-shaped around ``centre`` and therefore connected.

    Parameters
    ----------
    x, y
        ``(H, W)`` pixel coordinates from :func:`pixel_grid`.
    centre
        ``(x, y)`` of the blob centre, pixels.
    radius
        Mean radius along the long axis, pixels.
    aspect
        Short axis / long axis, in ``(0, 1]``.
    angle
        Orientation of the long axis, radians.
    harmonics, phases
        Relative amplitudes and phases of the harmonics of order 2, 3, ...

    Returns
    -------
    tuple of numpy.ndarray
        ``(inside, margin)``: ``inside`` bool ``(H, W)``; ``margin`` float32 ``(H, W)``, the
        approximate distance to the outline in pixels, positive inside.
    """
    dx, dy = x - centre[0], y - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    boundary = np.full_like(r, radius)
    if harmonics is not None and phases is not None:
        orders = np.arange(2, 2 + len(harmonics), dtype=np.float32)
        # (K, 1, 1) * (H, W) -> (K, H, W) summed over K -> (H, W)
        wobble = (harmonics[:, None, None] * np.cos(orders[:, None, None] * theta + phases[:, None, None])).sum(0)
        boundary = radius * (1.0 + wobble)
    margin = (boundary - r).astype(np.float32)
    return margin >= 0, margin


def spicules(
    x: np.ndarray,
    y: np.ndarray,
    centre: tuple[float, float],
    angles: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    width: float,
) -> np.ndarray:
    """Thin radial lines leaving a centre, fading towards their tips (spiculations of a mass).

    Parameters
    ----------
    x, y
        ``(H, W)`` pixel coordinates.
    centre
        ``(x, y)`` the lines radiate from, pixels.
    angles, starts, lengths
        ``(N,)`` direction (radians), distance from the centre where each line starts and its length,
        pixels.
    width
        Gaussian half-width of the lines, pixels.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 in ``[0, 1]``, the brightest line at each pixel.
    """
    if len(angles) == 0:
        return np.zeros_like(x)
    dx, dy = x[None] - centre[0], y[None] - centre[1]  # (1, H, W)
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]  # (N, 1, 1)
    along = dx * cos + dy * sin  # (N, H, W) distance along each line
    across = -dx * sin + dy * cos  # (N, H, W) distance from each line
    t = (along - starts[:, None, None]) / lengths[:, None, None]
    fade = np.clip(1.0 - t, 0.0, 1.0) * (t >= 0)
    lines = np.exp(-0.5 * (across / width) ** 2) * fade
    return lines.max(0).astype(np.float32)


def components_to_boxes(mask: np.ndarray) -> list[list[int]]:
    """Bounding boxes of the 8-connected components of a binary mask.

    Parameters
    ----------
    mask
        ``(H, W)`` bool.

    Returns
    -------
    list of list of int
        One ``[x0, y0, x1, y1]`` per component, pixel-edge convention (``x1`` = last column + 1),
        ordered by component label (raster order of each component's first pixel).
    """
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for rows, cols in ndimage.find_objects(labels):
        boxes.append([int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)])
    return boxes


@dataclass(frozen=True)
class Drawing:
    """One drawn image before acquisition, with its ground truth.

    Attributes
    ----------
    density
        ``(H, W)`` float32 ideal image in ``[0, 1]``, bright = dense.
    mask
        ``(H, W)`` bool lesion mask, or ``None`` when the modality has no masks.
    boxes
        ``[x0, y0, x1, y1]`` pixel boxes (pixel-edge convention), or ``None`` to derive them from
        ``mask`` with :func:`components_to_boxes`.
    """

    density: np.ndarray
    mask: np.ndarray | None
    boxes: list[list[int]] | None

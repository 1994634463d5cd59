"""Synthetic mammograms: a compressed breast with fibroglandular texture and, optionally, masses.

What is drawn (all sizes scale with the image size; numbers are illustrative, not fitted to data):

- a breast on a dark background, chest wall on the left (flipped for right breasts), with thinner,
  darker tissue towards the skin line, and the pectoral muscle in the upper corner of ``MLO`` views;
- fibroglandular tissue as thresholded multi-scale noise streaking towards the nipple, its amount set
  by a per-image breast density (fatty to extremely dense), which can hide masses as in real screening;
- zero, one or (10 %) two masses. Benign masses are oval with smooth, sharp margins (a quarter of them
  mildly lobulated, some with a thin lucent halo). Malignant masses have irregular outlines (higher
  harmonics of the radius), ill-defined margins and, in most cases, spiculations; a fifth of them are
  circumscribed carcinomas that look nearly benign. Sizes and contrasts of the two classes overlap,
  so only the margin and outline separate them, and not always.

The mask covers each mass body (spicules excluded, as radiologists outline the core); detection boxes
are its connected components.
"""

from __future__ import annotations

import numpy as np

from mtmedformer.data.synthetic.primitives import (
    Drawing,
    fractal_noise,
    pixel_grid,
    radial_shape,
    sigmoid,
    smooth_noise,
    spicules,
)

CLASSES: tuple[str, ...] = ("benign", "malignant")
VIEWS: tuple[str, ...] = ("CC", "MLO")
TWO_MASS_PROBABILITY = 0.1


def _breast(rng: np.random.Generator, size: int, view: str) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Draw the breast and its tissue; return ``(density, breast_mask, geometry)``."""
    x, y = pixel_grid(size)
    depth = size * rng.uniform(0.55, 0.8)  # chest wall to nipple, pixels
    half_height = size * rng.uniform(0.36, 0.46)
    cy = size * rng.uniform(0.45, 0.55)
    wobble = 1.0 + 0.03 * smooth_noise(rng, size, 0.1 * size)  # a slightly uneven skin line
    rho = np.hypot(x / depth, (y - cy) / half_height) * wobble  # 0 at the chest wall centre, 1 on the skin
    breast = sigmoid((1.0 - rho) * half_height)  # about one pixel wide edge
    thickness = np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0))  # compressed breast thins towards the skin

    breast_density = rng.uniform(0.1, 0.9)  # BI-RADS a (fatty) .. d (extremely dense)
    texture = fractal_noise(rng, size, (0.015 * size, 0.04 * size, 0.1 * size), (0.4, 0.5, 0.5), aspect=2.0)
    # Glandular tissue sits behind the nipple, away from the skin: bias the noise up there.
    envelope = np.clip(1.0 - rho, 0.0, 1.0) ** 0.5 * np.exp(-0.5 * ((y - cy) / (0.7 * half_height)) ** 2)
    glands = sigmoid((texture + 2.5 * (envelope - 0.5) - (1.2 - 2.4 * breast_density)) / 0.5)
    # Fine parenchymal pattern (ducts, Cooper's ligaments) streaking towards the nipple.
    fine = fractal_noise(rng, size, (0.005 * size, 0.012 * size), (0.5, 0.5), aspect=2.5)
    density = breast * thickness * (0.2 + 0.12 * thickness + 0.2 * glands + 0.035 * fine * (0.4 + glands))
    density = density + breast * 0.06  # skin and subcutaneous tissue keep the edge visible

    if view == "MLO":
        width, height = size * rng.uniform(0.18, 0.32), size * rng.uniform(0.35, 0.6)
        muscle = sigmoid((1.0 - x / width - y / height) * 0.5 * width)
        density = density + 0.22 * muscle * breast
    geometry = {"depth": depth, "half_height": half_height, "cy": cy}
    return density.astype(np.float32), breast > 0.5, geometry


def _mass(
    rng: np.random.Generator, size: int, pathology: str, geometry: dict[str, float], conspicuity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one mass of ``pathology``; return ``(added_density, mask)``, both ``(size, size)``."""
    scale = size / 128.0  # margin widths are given in pixels at 128 px; spicule widths scale with the radius
    reach, angle = rng.uniform(0.12, 0.62), rng.uniform(-1.1, 1.1)
    centre = (
        reach * geometry["depth"] * np.cos(angle),
        geometry["cy"] + reach * geometry["half_height"] * np.sin(angle),
    )
    harmonics = np.zeros(8, dtype=np.float32)  # orders 2..9 of the outline
    phases = rng.uniform(0.0, 2.0 * np.pi, 8).astype(np.float32)
    spicule_count = 0
    halo = 0.0
    if pathology == "benign":
        radius = size * rng.uniform(0.055, 0.12)
        aspect = rng.uniform(0.55, 1.0)
        lobulated = rng.random() < 0.25
        harmonics[:3] = rng.uniform(0.0, 0.12 if lobulated else 0.04, 3)
        edge = rng.uniform(0.4, 1.0) * scale
        contrast = rng.uniform(0.12, 0.28)
        halo = 0.04 if rng.random() < 0.3 else 0.0
    else:
        radius = size * rng.uniform(0.06, 0.13)
        aspect = rng.uniform(0.65, 1.0)
        circumscribed = rng.random() < 0.2
        if circumscribed:
            harmonics[:3] = rng.uniform(0.0, 0.06, 3)
            edge = rng.uniform(0.5, 1.2) * scale
        else:
            harmonics[:] = rng.uniform(0.05, 0.2, 8)
            edge = rng.uniform(1.0, 2.5) * scale
            spicule_count = int(rng.integers(6, 17)) if rng.random() < 0.85 else 0
        contrast = rng.uniform(0.14, 0.32)
    if harmonics.sum() > 0.7:  # keep R(theta) above zero so the outline stays one piece
        harmonics *= 0.7 / harmonics.sum()
    orientation = rng.uniform(0, np.pi)
    angles = rng.uniform(0.0, 2.0 * np.pi, spicule_count)
    lengths = radius * rng.uniform(1.0, 2.5, spicule_count)
    spicule_width, spicule_contrast = radius * rng.uniform(0.06, 0.1), rng.uniform(0.5, 0.9)

    # Draw only in a window around the mass: everything beyond it is zero to float precision.
    reach_px = max(radius * (1.0 + harmonics.sum()) + 6.0 * edge + 4.0 * scale, 0.7 * radius + lengths.max(initial=0.0))
    reach_px += 3.0 * spicule_width + 1.0
    x0, x1 = max(int(centre[0] - reach_px), 0), min(int(centre[0] + reach_px) + 2, size)
    y0, y1 = max(int(centre[1] - reach_px), 0), min(int(centre[1] + reach_px) + 2, size)
    x, y = pixel_grid(size)
    x, y = x[y0:y1, x0:x1], y[y0:y1, x0:x1]
    inside_w, margin = radial_shape(
        x, y, centre, radius, aspect=aspect, angle=orientation, harmonics=harmonics, phases=phases
    )
    body = sigmoid(margin / edge) * (0.75 + 0.25 * np.clip(margin / radius, 0.0, 1.0))  # slightly denser core
    texture = smooth_noise(rng, max(y1 - y0, x1 - x0, 1), 0.02 * size)[: y1 - y0, : x1 - x0]
    contrast *= conspicuity
    added_w = contrast * body * (1.0 + 0.12 * texture)
    if halo:  # a thin lucent rim just outside the margin, typical of benign masses
        added_w -= halo * np.exp(-0.5 * ((margin + 1.5 * scale) / (0.8 * scale)) ** 2)
    if spicule_count:
        starts = np.full(spicule_count, 0.7 * radius)  # from inside the margin, so lines merge with the body
        added_w += contrast * spicule_contrast * spicules(x, y, centre, angles, starts, lengths, spicule_width)
    added = np.zeros((size, size), dtype=np.float32)
    inside = np.zeros((size, size), dtype=bool)
    added[y0:y1, x0:x1], inside[y0:y1, x0:x1] = added_w, inside_w
    return added, inside


def draw_mammogram(
    rng: np.random.Generator, size: int, pathology: str | None, view: str = "CC", conspicuity: float = 1.0
) -> Drawing:
    """Draw one synthetic mammogram.

    Parameters
    ----------
    rng
        Seeded generator; the whole image follows from its state.
    size
        Side of the square image, pixels.
    pathology
        ``"benign"`` or ``"malignant"`` for the mass(es) drawn, ``None`` for a lesion-free image.
    view
        ``"CC"`` or ``"MLO"`` (the latter adds the pectoral muscle).
    conspicuity
        Multiplies the contrast of masses and spicules, ``> 0``; default ``1.0``.

    Returns
    -------
    Drawing
        ``density`` ``(size, size)`` in ``[0, 1]``, ``mask`` ``(size, size)`` bool (all zero when
        lesion-free), ``boxes`` ``None`` (derived from the mask's components).

    Raises
    ------
    ValueError
        If ``pathology`` or ``view`` is not one of the names above.
    """
    if pathology is not None and pathology not in CLASSES:
        raise ValueError(f"pathology must be one of {list(CLASSES)} or None, got {pathology!r}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {list(VIEWS)}, got {view!r}")
    density, breast, geometry = _breast(rng, size, view)
    mask = np.zeros((size, size), dtype=bool)
    if pathology is not None:
        count = 2 if rng.random() < TWO_MASS_PROBABILITY else 1
        for _ in range(count):
            added, inside = _mass(rng, size, pathology, geometry, conspicuity)
            density = density + added * breast
            mask |= inside & breast
    if rng.random() < 0.5:  # right breast: chest wall on the right
        density, mask = density[:, ::-1], mask[:, ::-1]
    return Drawing(np.ascontiguousarray(np.clip(density, 0.0, 1.0)), np.ascontiguousarray(mask), None)

"""Synthetic frontal chest radiographs with, for pneumonia, one or two lung opacities and their boxes.

What is drawn (sizes relative to the image; numbers are illustrative, not fitted to data):

- the body as soft tissue on an air background, two dark lung fields widening towards the
  diaphragm, the heart shadow overlapping the left lung (image right), the mediastinum and spine as
  a bright central band, clavicles, and posterior and anterior ribs crossing the lungs;
- lung markings (vessels, denser near the hila) and a faint smooth variation of lung density present
  in every image, so a faint opacity is not trivially separable from a normal lung;
- pneumonia: one opacity (65 %) or two (35 %, often one per lung): a patchy consolidation with soft
  edges, confined to the lung, of overlapping size and contrast ranges. Its box (RSNA style) is the
  bounding box of the region above 35 % of the opacity's peak; normal images have no boxes.

No masks are drawn: RSNA publishes labels and boxes only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mtmedformer.data.synthetic.primitives import Drawing, fractal_noise, pixel_grid, sigmoid, smooth_noise

CLASSES: tuple[str, ...] = ("normal", "pneumonia")
TWO_OPACITY_PROBABILITY = 0.35
BOX_LEVEL = 0.35  # an opacity's box encloses the pixels above this fraction of its peak


def _lung(u: np.ndarray, v: np.ndarray, centre: tuple[float, float], half: tuple[float, float]) -> np.ndarray:
    """Normalised radius of one lung field (``< 1`` inside), narrower at the apex than at the base."""
    q = (v - centre[1]) / half[1]
    widening = 0.6 + 0.4 * np.clip((q + 1.0) / 2.0, 0.0, 1.0)
    p = (u - centre[0]) / (half[0] * widening)
    return (np.abs(p) ** 2.4 + np.abs(q) ** 2.4) ** (1.0 / 2.4)


def _segment_distance(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance from each point to the segment ``a``-``b`` (normalised image units)."""
    ab = np.array(b) - np.array(a)
    t = np.clip(((u - a[0]) * ab[0] + (v - a[1]) * ab[1]) / float(ab @ ab), 0.0, 1.0)
    return np.hypot(u - (a[0] + t * ab[0]), v - (a[1] + t * ab[1]))


def _anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, float]]]:
    """Draw the normal chest; return ``(density, markings, lung_fields (soft, [0, 1]), lungs)``.

    ``markings`` (lung vessels) are returned apart so that an opacity can hide them, as a
    consolidation fills the air spaces around the vessels.
    """
    x, y = pixel_grid(size)
    u, v = x / size, y / size  # normalised coordinates
    scale, cx, top = rng.uniform(0.88, 1.02), 0.5 + rng.uniform(-0.03, 0.03), rng.uniform(0.08, 0.14)
    sharp = size / 1.5  # edges about 1.5 px wide

    body = sigmoid((0.47 * scale - np.abs(u - cx)) * sharp) * sigmoid((v - 0.02) * sharp)
    lungs_info = []
    fields = np.zeros_like(u)
    for side, width in ((-1.0, 0.155), (1.0, 0.14)):  # image left = patient's right lung (larger)
        centre = (cx + side * 0.19 * scale, top + 0.33 * scale)
        half = (width * scale * rng.uniform(0.95, 1.05), 0.33 * scale * rng.uniform(0.95, 1.05))
        radius = _lung(u, v, centre, half)
        fields = np.maximum(fields, sigmoid((1.0 - radius) * half[0] * sharp))
        lungs_info.append({"side": side, "cx": centre[0], "cy": centre[1], "hw": half[0], "hh": half[1]})

    heart_radius = np.hypot((u - cx - 0.06 * scale) / (0.17 * scale), (v - top - 0.52 * scale) / (0.14 * scale))
    heart = sigmoid((1.0 - heart_radius) * 0.14 * scale * sharp)
    mediastinum = sigmoid((0.06 * scale - np.abs(u - cx)) * sharp) * sigmoid((top + 0.62 * scale - v) * sharp)
    spine = 0.015 * np.cos(2.0 * np.pi * v / (0.045 * scale)) * mediastinum
    fields = fields * (1.0 - heart) * (1.0 - mediastinum)

    lateral = np.abs(u - cx)  # distance from the midline
    posterior = (0.5 + 0.5 * np.cos(2.0 * np.pi * (v - top - 0.9 * lateral**2) / (0.075 * scale))) ** 6
    anterior = (0.5 + 0.5 * np.cos(2.0 * np.pi * (v - top + 0.5 * lateral) / (0.09 * scale))) ** 8
    ribs = (posterior + 0.4 * anterior) * (lateral > 0.05 * scale) * sigmoid((top + 0.72 * scale - v) * sharp)
    clavicles = sum(
        np.exp(
            -0.5
            * (_segment_distance(u, v, (cx + s * 0.04, top + 0.02), (cx + s * 0.3 * scale, top - 0.04)) / 0.012) ** 2
        )
        for s in (-1.0, 1.0)
    )

    hila = sum(
        np.exp(-0.5 * (((u - lung["cx"] + lung["side"] * 0.08) / 0.12) ** 2 + ((v - lung["cy"]) / 0.2) ** 2))
        for lung in lungs_info
    )
    vessels = np.abs(fractal_noise(rng, size, (0.01 * size, 0.025 * size), (0.6, 0.4)))  # ridges ~ branching
    markings = (0.06 - 0.05 * vessels.clip(0.0, 1.2)) * (0.3 + 0.7 * hila) * fields
    variation = 0.025 * smooth_noise(rng, size, 0.12 * size)  # normal, non-pathological density variation

    density = (
        body * (0.58 + 0.08 * smooth_noise(rng, size, 0.2 * size) * 0.3)
        - 0.36 * fields
        + 0.13 * np.maximum(heart, mediastinum)  # one continuous cardiomediastinal silhouette
        + spine
        + 0.1 * ribs * body * (0.3 + 0.7 * fields)
        + 0.12 * clavicles * body
        + variation * fields
    )
    return density.astype(np.float32), markings.astype(np.float32), fields.astype(np.float32), lungs_info


def _opacity(
    rng: np.random.Generator, size: int, lung: dict[str, float], fields: np.ndarray
) -> tuple[np.ndarray, list[int] | None]:
    """Draw one pneumonic opacity in ``lung``; return ``(added_density, box or None if it fell outside)``."""
    x, y = pixel_grid(size)
    cx = (lung["cx"] + lung["hw"] * rng.uniform(-0.5, 0.5)) * size
    cy = (lung["cy"] + lung["hh"] * rng.uniform(-0.35, 0.65)) * size
    radius = size * rng.uniform(0.06, 0.14)
    rx, ry = radius * rng.uniform(0.7, 1.3), radius * rng.uniform(0.8, 1.4)
    envelope = np.exp(-0.5 * (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2))
    patches = np.clip(0.6 + 0.5 * fractal_noise(rng, size, (0.02 * size, 0.05 * size), (0.5, 0.5)), 0.0, 1.0)
    opacity = ndimage.gaussian_filter(envelope * patches, 0.01 * size) * fields
    if opacity.max() <= 0:
        return np.zeros_like(opacity), None
    opacity = opacity / opacity.max()
    rows, cols = np.nonzero(opacity >= BOX_LEVEL)
    box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
    return (rng.uniform(0.1, 0.3) * opacity).astype(np.float32), box


def draw_chest_xray(rng: np.random.Generator, size: int, finding: str, conspicuity: float = 1.0) -> Drawing:
    """Draw one synthetic frontal chest X-ray.

    Parameters
    ----------
    rng
        Seeded generator; the whole image follows from its state.
    size
        Side of the square image, pixels.
    finding
        ``"normal"`` or ``"pneumonia"``.
    conspicuity
        Multiplies the contrast of the opacities, ``> 0``; default ``1.0``.

    Returns
    -------
    Drawing
        ``density`` ``(size, size)`` in ``[0, 1]``, ``mask`` ``None``, ``boxes`` one
        ``[x0, y0, x1, y1]`` per opacity (``[]`` for normal images).

    Raises
    ------
    ValueError
        If ``finding`` is not one of the names above.
    """
    if finding not in CLASSES:
        raise ValueError(f"finding must be one of {list(CLASSES)}, got {finding!r}")
    density, markings, fields, lungs = _anatomy(rng, size)
    boxes: list[list[int]] = []
    hidden = np.zeros_like(density)  # how much of the markings each opacity hides, [0, 1]
    if finding == "pneumonia":
        count = 2 if rng.random() < TWO_OPACITY_PROBABILITY else 1
        first = int(rng.integers(0, 2))
        for k in range(count):
            lung = lungs[(first + k) % 2] if rng.random() < 0.7 else lungs[first]
            added, box = _opacity(rng, size, lung, fields)
            added = conspicuity * added
            density = density + added
            hidden = np.maximum(hidden, added / max(float(added.max()), 1e-6))
            if box is not None:
                boxes.append(box)
    density = density + markings * (1.0 - hidden)
    return Drawing(np.clip(density, 0.0, 1.0).astype(np.float32), None, boxes)

"""Target assignment of the anchor-free detection head (FCOS, Tian et al., ICCV 2019, with centre sampling).

Locations are the centres of the cells of the stride-``s`` detection map: location ``(i, j)`` (row, column)
sits at pixel ``((j + 0.5) s, (i + 0.5) s)``; boxes are ``xyxy`` in pixels of the model input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DetectionTargets:
    """Per-location training targets of one image (``L = h * w`` locations, row-major).

    Attributes
    ----------
    positive
        ``(L,)`` bool: the location is responsible for a box.
    boxes
        ``(L, 4)`` the assigned box, ``xyxy`` pixels (zeros at negatives).
    centerness
        ``(L,)`` in [0, 1]: FCOS centre-ness of the location in its box (zeros at negatives).
    """

    positive: torch.Tensor
    boxes: torch.Tensor
    centerness: torch.Tensor

    @property
    def num_positive(self) -> int:
        """Number of positive locations."""
        return int(self.positive.sum())


def location_centers(grid: tuple[int, int], stride: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Return the pixel centres ``(h * w, 2)`` (``x, y``, row-major) of the cells of an ``h x w`` map."""
    height, width = grid
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)  # (L, 2)


def assign_targets(
    boxes: torch.Tensor, grid: tuple[int, int], stride: int, center_radius: float = 1.5
) -> DetectionTargets:
    """Assign ground-truth boxes of one image to the locations of its detection map.

    A location is a candidate for a box when it lies inside the box *and* within ``center_radius * stride``
    pixels of the box centre (both axes; FCOS centre sampling). So that small lesions are never left without a
    positive, the location whose cell contains the box centre is always a candidate, and boxes narrower than
    one stride are widened to one stride (about their centre) for the inside test and for centre-ness. A
    location with several candidate boxes takes the smallest (FCOS). The regression target is always the real
    box.

    Parameters
    ----------
    boxes
        ``(N, 4)`` ``xyxy`` pixels; ``N = 0`` gives all-negative targets.
    grid
        ``(h, w)`` of the detection map.
    stride
        Pixels per location.
    center_radius
        Centre-sampling radius in strides. Default 1.5.

    Returns
    -------
    DetectionTargets
    """
    height, width = grid
    num_locations = height * width
    device = boxes.device
    if boxes.numel() == 0:
        return DetectionTargets(
            positive=torch.zeros(num_locations, dtype=torch.bool, device=device),
            boxes=torch.zeros(num_locations, 4, device=device),
            centerness=torch.zeros(num_locations, device=device),
        )
    boxes = boxes.to(torch.float32)
    centers = location_centers(grid, stride, device)  # (L, 2)
    x1, y1, x2, y2 = boxes.unbind(dim=1)  # (N,) each
    box_cx, box_cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w = (x2 - x1).clamp(min=stride) / 2  # (N,), widened to one stride
    half_h = (y2 - y1).clamp(min=stride) / 2
    dx = centers[:, :1] - box_cx[None]  # (L, N) signed offset of location from box centre
    dy = centers[:, 1:] - box_cy[None]  # (L, N)
    inside = (dx.abs() < half_w[None]) & (dy.abs() < half_h[None])
    radius = center_radius * stride
    near_center = (dx.abs() < radius) & (dy.abs() < radius)
    col = torch.div(box_cx, stride, rounding_mode="floor").long().clamp(0, width - 1)  # (N,)
    row = torch.div(box_cy, stride, rounding_mode="floor").long().clamp(0, height - 1)
    center_cell = torch.arange(num_locations, device=device)[:, None] == (row * width + col)[None]  # (L, N)
    candidate = (inside & near_center) | center_cell

    area = ((x2 - x1) * (y2 - y1))[None].expand(num_locations, -1)  # (L, N)
    cost = torch.where(candidate, area, torch.full_like(area, float("inf")))
    best_area, best = cost.min(dim=1)  # (L,)
    positive = torch.isfinite(best_area)

    off_x = dx.gather(1, best[:, None]).squeeze(1)  # (L,)
    off_y = dy.gather(1, best[:, None]).squeeze(1)
    left, right = (half_w[best] + off_x).clamp(min=0), (half_w[best] - off_x).clamp(min=0)
    top, bottom = (half_h[best] + off_y).clamp(min=0), (half_h[best] - off_y).clamp(min=0)
    tiny = torch.finfo(torch.float32).tiny
    centerness = torch.sqrt(
        (torch.minimum(left, right) / torch.maximum(left, right).clamp(min=tiny))
        * (torch.minimum(top, bottom) / torch.maximum(top, bottom).clamp(min=tiny))
    )
    return DetectionTargets(
        positive=positive,
        boxes=torch.where(positive[:, None], boxes[best], torch.zeros_like(boxes[best])),
        centerness=torch.where(positive, centerness, torch.zeros_like(centerness)),
    )

"""Test helpers: a batch builder and a tiny detection head implementing the head interface of the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtmedformer.data.batch import Batch


def make_batch(
    masks: torch.Tensor,
    labels: Sequence[int],
    has_mask: Sequence[bool],
    boxes: Sequence[torch.Tensor] | None = None,
    has_boxes: Sequence[bool] | None = None,
) -> Batch:
    """Build a Batch from (B, 1, H, W) masks and per-sample labels (-1 = not annotated)."""
    size = masks.shape[0]
    boxes = list(boxes) if boxes is not None else [torch.zeros(0, 4) for _ in range(size)]
    has_boxes = has_boxes if has_boxes is not None else [False] * size
    return Batch(
        image=torch.zeros(size, 1, *masks.shape[-2:]),
        label=torch.tensor(list(labels), dtype=torch.int64),
        mask=masks.float(),
        boxes=boxes,
        has_label=torch.tensor([lab >= 0 for lab in labels]),
        has_mask=torch.tensor(list(has_mask)),
        has_boxes=torch.tensor(list(has_boxes)),
    )


def box_target(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) xyxy pixel boxes -> (H, W) map, 1 where a pixel centre lies inside a box."""
    height, width = image_size
    ys = torch.arange(height).float().add(0.5).view(-1, 1)  # (H, 1) pixel centres
    xs = torch.arange(width).float().add(0.5).view(1, -1)  # (1, W)
    target = torch.zeros(height, width)
    for x1, y1, x2, y2 in boxes.tolist():
        target = torch.maximum(target, ((xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)).float())
    return target


class FakeDetectionHead(nn.Module):
    """Per-pixel objectness head with the detection-head interface (loss per sample, decode to boxes)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"objectness": self.conv(features)}  # (B, 1, H, W)

    def loss(
        self, outputs: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_size: tuple[int, int]
    ) -> torch.Tensor:
        logits = outputs["objectness"][:, 0]  # (B, 1, H, W) -> (B, H, W)
        losses = []
        for i, sample_boxes in enumerate(boxes):
            target = box_target(sample_boxes, image_size)
            bce = F.binary_cross_entropy_with_logits(logits[i], target, reduction="none")
            positives = target.sum()
            positive_term = (bce * target).sum() / positives.clamp(min=1.0)  # normalised by its own positives
            background_term = (bce * (1 - target)).sum() / (1 - target).sum().clamp(min=1.0)
            losses.append(positive_term + background_term)
        return torch.stack(losses)

    def decode(self, outputs: dict[str, torch.Tensor], image_size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        probs = torch.sigmoid(outputs["objectness"][:, 0])
        result = []
        for p in probs:
            ys, xs = torch.nonzero(p > 0.5, as_tuple=True)
            if ys.numel() == 0:
                result.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)})
                continue
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float().view(1, 4)
            result.append({"boxes": box, "scores": p.max().view(1)})
        return result

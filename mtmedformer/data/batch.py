"""Loaded samples and their collation into a :class:`Batch`, the one input type of model, loss and metrics.

A loaded sample is a ``dict`` with the keys below (MONAI dictionary transforms act on it):

- ``"image"``: float32 tensor ``(1, H, W)`` with intensities in ``[0, 1]``;
- ``"mask"``: float32 tensor ``(1, H, W)`` in ``{0, 1}`` (zeros when not annotated);
- ``"boxes"``: float32 tensor ``(N, 4)``, ``xyxy`` in pixels of the (resized) image (``N = 0`` when not
  annotated or annotated negative);
- ``"label"``: int class index, ``-1`` when not annotated;
- ``"has_label"``, ``"has_mask"``, ``"has_boxes"``: bools saying what is annotated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

IMAGE, MASK, BOXES, LABEL = "image", "mask", "boxes", "label"
HAS_LABEL, HAS_MASK, HAS_BOXES = "has_label", "has_mask", "has_boxes"


@dataclass
class Batch:
    """A collated mini-batch.

    Attributes
    ----------
    image
        ``(B, 1, H, W)`` float32 in ``[0, 1]``.
    label
        ``(B,)`` int64 class indices, ``-1`` where classification is not annotated.
    mask
        ``(B, 1, H, W)`` float32 in ``{0, 1}``; all zero where segmentation is not annotated.
    boxes
        ``B`` tensors of shape ``(N_i, 4)``, ``xyxy`` pixels of the batch's image size.
    has_label, has_mask, has_boxes
        ``(B,)`` bool: which samples carry each annotation. Losses and metrics use these, never the
        content of ``mask``/``boxes``, to tell "not annotated" from "annotated negative".
    """

    image: torch.Tensor
    label: torch.Tensor
    mask: torch.Tensor
    boxes: list[torch.Tensor]
    has_label: torch.Tensor
    has_mask: torch.Tensor
    has_boxes: torch.Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """Return a copy with every tensor on ``device``."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                moved[f.name] = [v.to(device) for v in value]
            else:
                moved[f.name] = value.to(device)
        return Batch(**moved)


def collate_samples(samples: Sequence[dict[str, Any]]) -> Batch:
    """Stack loaded sample dicts (see module docstring) into a :class:`Batch`.

    Raises
    ------
    ValueError
        If ``samples`` is empty or the images differ in size (resize them to one size first).
    """
    if not samples:
        raise ValueError("collate_samples got an empty list of samples")
    sizes = {tuple(s[IMAGE].shape) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"cannot batch images of different sizes {sorted(sizes)}; resize them to one size first")
    image = torch.stack([torch.as_tensor(s[IMAGE], dtype=torch.float32) for s in samples])
    mask = torch.stack([torch.as_tensor(s[MASK], dtype=torch.float32) for s in samples])
    boxes = [torch.as_tensor(s[BOXES], dtype=torch.float32).reshape(-1, 4) for s in samples]
    label = torch.tensor([int(s[LABEL]) for s in samples], dtype=torch.int64)
    flags = {k: torch.tensor([bool(s[k]) for s in samples]) for k in (HAS_LABEL, HAS_MASK, HAS_BOXES)}
    return Batch(image=image, label=label, mask=mask, boxes=boxes, **flags)

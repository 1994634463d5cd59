"""Lesion descriptors and their closed-form probe: the classifier's reading of the predicted lesion.

:class:`LesionDescriptors` turns the segmentation head's mask and the image into six BI-RADS-style shape and
margin numbers; :class:`DescriptorProbe` is a logistic regression on them whose logits add to the classifier's
(:class:`~mtmedformer.models.classification.ClassificationHead`), refitted between epochs by
:mod:`mtmedformer.engine.probe`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LesionDescriptors(nn.Module):
    """Scale-free shape and margin descriptors of the predicted lesion: ``(B, 1, H, W)`` x2 -> ``(B, 6)``.

    Radiologists grade a mass by its shape (oval vs irregular) and margin (circumscribed vs ill-defined or
    spiculated), the BI-RADS descriptors; radiomics computes them from a segmentation. This module computes six
    such numbers from the segmentation head's soft mask ``p`` (detached: no gradient flows back) and the image
    ``x`` as the encoder sees it (per-image standardized), so the classifier can use them as soon as the
    segmentation is roughly right, without the encoder having to learn them from tokens. They feed a
    :class:`DescriptorProbe`, fitted in closed form between epochs on the model's own *predicted* lesions: a fit
    on ground-truth-mask descriptors transfers to predicted lesions only as well as the segmentation is good.
    Why this design, with the measurements: ``docs/decisions/002-descriptor-probe.md``
    (``benchmarks/classification_signal.py`` makes the figures).

    With ``p`` the lesion probability mapped linearly from [0.25, 0.75] to [0, 1] (clamped), ``|g|`` a
    finite-difference gradient magnitude, ``A = sum p`` (pixels), ``P = sum |g(p)|``, the ring
    ``r = maxpool_{2m+1}(p) - p`` (a band of ``margin`` pixels around the lesion) and ``G = mean |g(x)|`` over
    the image, the descriptors are, in order:

    0. ``log(P^2 / (4 pi A))``: outline irregularity (0 for a disc);
    1. ``log(sqrt(A / pi) / (H / 16))``: radius relative to the image;
    2. ``log(sum |g(p)| |g(x)| / P / G)``: image gradient across the outline (margin sharpness);
    3. ``mean_p(x) - mean_r(x)``: contrast of the lesion to its surroundings, in image standard deviations;
    4. ``std_r(x)``: texture of the surroundings (spiculation);
    5. ``log(mean_r |g(x)| / G)``: gradient energy around the lesion.

    Every value is clamped to ``[-clip, clip]`` so an image without a predicted lesion stays finite.
    No parameters.

    Parameters
    ----------
    margin
        Width of the ring around the lesion, input pixels, ``>= 1``. Default 4.
    clip
        Bound on each descriptor. Default 5.

    Raises
    ------
    ValueError
        If ``margin < 1`` or ``clip <= 0``.
    """

    size = 6

    def __init__(self, margin: int = 4, clip: float = 5.0) -> None:
        super().__init__()
        if margin < 1:
            raise ValueError(f"margin must be >= 1 pixel, got {margin}")
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.margin = margin
        self.clip = clip

    @staticmethod
    def _gradient(x: torch.Tensor) -> torch.Tensor:
        # central differences, replicate-padded: (B, 1, H, W) -> (B, 1, H, W)
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
        gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
        return torch.sqrt(gx * gx + gy * gy + 1e-12)

    def forward(self, image: torch.Tensor, lesion_logits: torch.Tensor) -> torch.Tensor:
        """Return ``(B, 6)`` from ``image`` ``(B, 1, H, W)`` and the segmentation logits ``(B, 1, H, W)``."""
        # p <= 0.25 counts as background, >= 0.75 as lesion: the faint probability a segmentation head leaves
        # over the whole image would otherwise add hundreds of pixels to the area and outline.
        p = ((torch.sigmoid(lesion_logits.detach().float()) - 0.25) / 0.5).clamp(0.0, 1.0)
        x = image.detach().float()
        dims = (-3, -2, -1)
        area = p.sum(dims).clamp_min(1.0)
        grad_p, grad_x = self._gradient(p), self._gradient(x)
        perimeter = grad_p.sum(dims).clamp_min(1e-3)
        ring = (F.max_pool2d(p, 2 * self.margin + 1, stride=1, padding=self.margin) - p).clamp_min(0.0)
        ring_area = ring.sum(dims).clamp_min(1.0)
        image_grad = grad_x.mean(dims).clamp_min(1e-6)
        ring_mean = (ring * x).sum(dims) / ring_area
        ring_var = (ring * (x - ring_mean.view(-1, 1, 1, 1)) ** 2).sum(dims) / ring_area
        out = torch.stack(
            [
                torch.log(perimeter**2 / (4 * torch.pi * area)),
                torch.log(torch.sqrt(area / torch.pi) / (x.shape[-2] / 16)),
                torch.log((grad_p * grad_x).sum(dims) / perimeter / image_grad + 1e-6),
                (p * x).sum(dims) / area - ring_mean,
                torch.sqrt(ring_var + 1e-12),
                torch.log((ring * grad_x).sum(dims) / ring_area / image_grad + 1e-6),
            ],
            dim=1,
        )
        return out.clamp(-self.clip, self.clip).to(image.dtype)


class DescriptorProbe(nn.Module):
    """Linear classifier on the lesion descriptors, fitted in closed form between epochs: ``(B, D) -> (B, C)``.

    Why not by the optimizer: the descriptors (:class:`LesionDescriptors`) are fixed functions of the
    predicted mask, of order 1, and separate the classes only once weights of order 1 are learned; at a ViT's
    learning rate that takes far more optimizer steps than a short training budget gives, so a linear layer
    trained online with the model does not get there (``docs/decisions/002-descriptor-probe.md``). The same
    fit done exactly is cheap: :meth:`fit` solves the L2-regularised logistic regression on the descriptors of
    the training images the model has just segmented (``(N, D)`` with small ``D``, a few L-BFGS iterations;
    :mod:`mtmedformer.engine.probe` collects them).

    The fitted values are buffers, not parameters: the optimizer never moves them, and they travel with the
    state dict, so checkpoints keep them and federated averaging averages the sites' fits. All zero (the
    initial state) the probe adds nothing to the logits.

    Buffers: ``mean``, ``std`` ``(D,)`` (standardization of the descriptors, from the last fit), ``weight``
    ``(C, D)`` and ``bias`` ``(C,)`` (on standardized descriptors).

    Parameters
    ----------
    size
        Number of descriptors ``D``.
    num_classes
        Number of classes ``C``.
    l2
        Weight of the squared-norm penalty on ``weight`` (mean cross-entropy + ``l2 * |W|^2``). Default 1e-2.
    """

    def __init__(self, size: int, num_classes: int, l2: float = 1e-2) -> None:
        super().__init__()
        self.l2 = l2
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))
        self.register_buffer("weight", torch.zeros(num_classes, size))
        self.register_buffer("bias", torch.zeros(num_classes))

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` from descriptors ``(B, D)``."""
        z = (descriptors.float() - self.mean) / self.std
        return z @ self.weight.T + self.bias

    @torch.no_grad()
    def fit(self, descriptors: torch.Tensor, labels: torch.Tensor, offset: torch.Tensor, iterations: int = 50) -> float:
        """Refit on ``descriptors`` ``(N, D)`` with class ``labels`` ``(N,)`` given the rest of the model's logits.

        ``offset`` ``(N, C)`` are the classifier's other logits for the same samples (the linear layer on the
        pooled features): the probe is fitted to what they leave unexplained, so the two add up. Minimises mean
        cross-entropy of ``offset + probe(descriptors)`` plus ``l2 * |weight|^2`` with L-BFGS; returns that
        cross-entropy (nats).

        Raises
        ------
        ValueError
            If the shapes disagree or ``N == 0``.
        """
        n = descriptors.shape[0]
        if n == 0 or labels.shape != (n,) or offset.shape != (n, self.weight.shape[0]):
            raise ValueError(
                f"expected descriptors (N, D), labels (N,), offset (N, C) with N > 0; got "
                f"{tuple(descriptors.shape)}, {tuple(labels.shape)}, {tuple(offset.shape)}"
            )
        x = descriptors.float()
        mean = x.mean(0)
        std = x.std(0).clamp_min(1e-3) if n > 1 else torch.ones_like(mean)
        z, offset, labels = (x - mean) / std, offset.float(), labels.long()
        weight = torch.zeros_like(self.weight, requires_grad=True)
        bias = torch.zeros_like(self.bias, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(offset + z @ weight.T + bias, labels) + self.l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(objective)
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.weight.copy_(weight.detach())
        self.bias.copy_(bias.detach())
        return float(F.cross_entropy(offset + z @ self.weight.T + self.bias, labels))

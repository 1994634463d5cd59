"""Classification head: pool the encoder output to one vector per image, then a linear classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtmedformer.config.model import ModelConfig
from mtmedformer.models.resnet_encoder import FeaturePyramid
from mtmedformer.models.vit_encoder import EncoderOutput


class TokenPool(nn.Module):
    """Pool ViT tokens ``(B, 1 + N, d)`` to ``(B, d)``: the class token (``"cls"``) or the patch-token mean.

    Raises
    ------
    ValueError
        If ``mode`` is neither ``"cls"`` nor ``"mean"``.
    """

    def __init__(self, mode: str = "cls") -> None:
        super().__init__()
        if mode not in ("cls", "mean"):
            raise ValueError(f"pooling mode {mode!r} is not one of ['cls', 'mean']")
        self.mode = mode

    def forward(self, features: EncoderOutput) -> torch.Tensor:
        """Return ``(B, d)``."""
        if self.mode == "cls":
            return features.tokens[:, 0]
        return features.tokens[:, 1:].mean(dim=1)


class GlobalAvgPool(nn.Module):
    """Average the coarsest map of a CNN feature pyramid ``(B, C, h, w)`` to ``(B, C)``."""

    def forward(self, features: FeaturePyramid) -> torch.Tensor:
        """Return ``(B, C)``."""
        return features.maps[max(features.maps)].mean(dim=(-2, -1))


class LesionPool(nn.Module):
    """Average the finest-grained encoder features weighted by the segmentation head's lesion probability.

    Malignancy is a property of the lesion (its margin, outline and spiculation), which covers a few percent
    of a mammogram: a class token or a global mean must first learn *where* to look, which a ViT trained from
    scratch on a few hundred images does slowly. The segmentation decoder learns lesion locations within an
    epoch or two; this pool reuses that: with ``p_i`` the mean predicted lesion probability over the pixels of
    feature cell ``i`` (detached, so classification gradients do not bend the segmentation decoder), the pooled
    vector is ``sum_i (p_i + floor) f_i / sum_i (p_i + floor)``. The ``floor`` turns it into the plain mean of
    the cells when no lesion is predicted. It has no parameters, so federated aggregation and neuron matching
    treat it like the mean pool.

    Features are ViT patch tokens ``(B, 1 + N, d)`` on their ``(h, w)`` grid (the class token is left out) or
    the coarsest map ``(B, C, h, w)`` of a CNN feature pyramid.

    Parameters
    ----------
    floor
        Weight every cell gets on top of its lesion probability, ``> 0``. Default 0.01.

    Raises
    ------
    ValueError
        If ``floor <= 0``.
    """

    needs_lesion_logits = True

    def __init__(self, floor: float = 0.01) -> None:
        super().__init__()
        if not floor > 0:
            raise ValueError(f"floor must be > 0, got {floor}")
        self.floor = floor

    @staticmethod
    def feature_map(features: EncoderOutput | FeaturePyramid) -> torch.Tensor:
        """The features as a map ``(B, C, h, w)``."""
        if isinstance(features, EncoderOutput):
            h, w = features.grid
            patches = features.tokens[:, 1:]
            return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)
        return features.maps[max(features.maps)]

    def forward(self, features: EncoderOutput | FeaturePyramid, lesion_logits: torch.Tensor) -> torch.Tensor:
        """Return ``(B, C)``; ``lesion_logits`` are the segmentation logits ``(B, 1, H, W)``."""
        fmap = self.feature_map(features)
        prob = F.adaptive_avg_pool2d(torch.sigmoid(lesion_logits.detach().float()), fmap.shape[-2:])
        weight = (prob + self.floor).to(fmap.dtype)
        return (fmap * weight).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1))


class DecoderLesionPool(nn.Module):
    """Pool the segmentation decoder's maps around the predicted lesion; concatenate the levels.

    Malignancy on a mammogram is written in a lesion's outline, margin and spiculation, a few pixels wide.
    The segmentation decoder's finer levels are convolutions over the image and upsampled encoder states,
    trained to trace the lesion boundary within an epoch or two, so they are where such detail is computed.
    Measured on the synthetic mammograms under a 10-minute budget (README): it ranked test lesions better than
    the class token (AUC 0.65-0.72 against 0.46-0.57), but its training cross-entropy stayed at chance too.

    For each decoder level ``s`` (``(B, C_s, H / s, W / s)``) the pooled vector is
    ``sum_i w_i f_i / sum_i w_i`` with ``w_i = a_i + floor``, where ``a_i`` is the mean over cell ``i`` of the
    predicted lesion probability dilated by ``margin`` pixels (a max filter, so the margin and the roots of
    spicules outside the traced outline count). The probability is detached: classification does not move
    the mask, but its gradient does train the decoder's features. The output is the levels' vectors
    concatenated coarsest first, ``(B, sum_s C_s)``. It has no parameters; the classifier's input axis is the
    concatenation of the decoder levels' channel axes (neuron matching permutes it with them).

    Parameters
    ----------
    channels
        Decoder stride -> channels of that level, as the pyramid's ``channels`` (every level is read).
    margin
        Dilation radius of the lesion probability, input pixels, ``>= 0``. Default 4.
    floor
        Weight every cell gets on top of its lesion probability, ``> 0`` (plain mean without a lesion).
        Default 0.01.

    Raises
    ------
    ValueError
        If ``channels`` is empty, ``margin < 0`` or ``floor <= 0``.
    """

    needs_lesion_logits = True
    needs_decoder_levels = True

    def __init__(self, channels: dict[int, int], margin: int = 4, floor: float = 0.01) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one decoder level")
        if margin < 0:
            raise ValueError(f"margin must be >= 0 pixels, got {margin}")
        if not floor > 0:
            raise ValueError(f"floor must be > 0, got {floor}")
        self.strides = sorted(channels, reverse=True)  # coarsest first, as the decoder computes them
        self.out_features = sum(channels.values())
        self.margin = margin
        self.floor = floor

    def forward(self, levels: dict[int, torch.Tensor], lesion_logits: torch.Tensor) -> torch.Tensor:
        """Return ``(B, sum_s C_s)`` from the decoder ``levels`` and the segmentation logits ``(B, 1, H, W)``."""
        prob = torch.sigmoid(lesion_logits.detach().float())
        if self.margin:
            prob = F.max_pool2d(prob, 2 * self.margin + 1, stride=1, padding=self.margin)
        pooled = []
        for stride in self.strides:
            fmap = levels[stride]
            weight = (F.adaptive_avg_pool2d(prob, fmap.shape[-2:]) + self.floor).to(fmap.dtype)
            pooled.append((fmap * weight).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1)))
        return torch.cat(pooled, dim=1)


class LesionDescriptors(nn.Module):
    """Scale-free shape and margin descriptors of the predicted lesion: ``(B, 1, H, W)`` x2 -> ``(B, 6)``.

    Radiologists grade a mass by its shape (oval vs irregular) and margin (circumscribed vs ill-defined or
    spiculated), the BI-RADS descriptors; radiomics computes them from a segmentation. This module computes six
    such numbers from the segmentation head's soft mask ``p`` (detached: no gradient flows back) and the image
    ``x`` as the encoder sees it (per-image standardized), so a linear classifier can use them from the moment
    the segmentation is roughly right, long before a ViT trained from scratch learns them from tokens. Measured
    on the synthetic mammograms (``benchmarks/classification_signal.py``): features of this kind from
    ground-truth masks separate benign from malignant with test AUC 0.95, and a logistic regression fitted on
    these six descriptors of a 5-minute model's *predicted* lesions reaches 0.78 (``--checkpoint``), while
    a linear layer trained on them online with the model for 10 minutes had not learned to use them (README):
    they feed a :class:`DescriptorProbe`, fitted in closed form between epochs. It is fitted on the model's own
    predicted lesions: a fit on ground-truth-mask descriptors transfers to predicted lesions only as well as
    the segmentation is good (test AUC 0.46 after 5 epochs, 0.81 after 10; ``--checkpoint``).

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
    learning rate (3e-4, AdamW) that takes thousands of steps, more than a 10-minute CPU budget gives, and
    measured on the synthetic mammograms the training cross-entropy of such a layer stayed at chance (README).
    The same fit done exactly is cheap: :meth:`fit` solves the L2-regularised logistic regression on the
    descriptors of the training images the model has just segmented, in milliseconds
    (``mtmedformer.engine.probe``); fitted that way, the descriptors of models trained for 5-10 minutes rank
    test lesions with AUC 0.76-0.83 (``benchmarks/classification_signal.py --checkpoint``).

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


class ClassificationHead(nn.Module):
    """Image-level logits ``(B, num_classes)`` from a pooled feature vector.

    Parameters
    ----------
    pool
        Module mapping the encoder output to ``(B, in_features)`` (:class:`TokenPool`, :class:`GlobalAvgPool`,
        or :class:`LesionPool`, which also reads the segmentation logits).
    in_features
        Width of the pooled vector.
    num_classes
        Number of classes (>= 2).
    dropout
        Dropout on the pooled vector. Default 0.
    descriptors
        Optional :class:`LesionDescriptors`: their :class:`DescriptorProbe` (fitted between epochs, see there)
        adds its logits to those of the linear layer on the pooled vector.

    Raises
    ------
    ValueError
        If ``num_classes < 2``, ``in_features < 1`` or ``dropout`` is outside [0, 1).
    """

    def __init__(
        self,
        pool: nn.Module,
        in_features: int,
        num_classes: int,
        dropout: float = 0.0,
        descriptors: LesionDescriptors | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.pool = pool
        self.descriptors = descriptors
        self.probe = DescriptorProbe(descriptors.size, num_classes) if descriptors is not None else None
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    @property
    def needs_lesion_logits(self) -> bool:
        """True when the pool or the descriptors read the segmentation head's logits (that head runs first)."""
        return self.descriptors is not None or bool(getattr(self.pool, "needs_lesion_logits", False))

    @property
    def needs_decoder_levels(self) -> bool:
        """True when the pool reads the segmentation decoder's maps instead of the encoder output."""
        return bool(getattr(self.pool, "needs_decoder_levels", False))

    def forward(
        self,
        features: EncoderOutput | FeaturePyramid,
        image: torch.Tensor,
        lesion_logits: torch.Tensor | None = None,
        decoder_levels: dict[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Return class logits ``(B, num_classes)``.

        ``image`` (as the encoder sees it) is read by the lesion descriptors only; ``lesion_logits``
        ``(B, 1, H, W)`` are required by the descriptors, a
        :class:`LesionPool` or :class:`DecoderLesionPool`, ``decoder_levels`` (the segmentation decoder's maps by
        stride) by the latter; both are ignored otherwise.

        Raises
        ------
        ValueError
            If the pool needs lesion logits or decoder levels and they are not given.
        """
        if self.needs_lesion_logits and lesion_logits is None:
            raise ValueError("this classification head pools by lesion probability: pass the segmentation logits")
        if self.needs_decoder_levels:
            if decoder_levels is None:
                raise ValueError("this classification head reads the segmentation decoder: pass its levels")
            pooled = self.pool(decoder_levels, lesion_logits)
        elif getattr(self.pool, "needs_lesion_logits", False):
            pooled = self.pool(features, lesion_logits)
        else:
            pooled = self.pool(features)
        logits = self.fc(self.drop(pooled))
        if self.probe is not None:  # the descriptor probe's logits add to the learned classifier's
            logits = logits + self.probe(self.descriptors(image, lesion_logits)).to(logits.dtype)
        return logits


def classification_head(
    cfg: ModelConfig,
    encoder_pool: nn.Module | None,
    encoder_width: int,
    segmentation: nn.Module | None,
    num_classes: int,
) -> ClassificationHead:
    """Build the classification head ``cfg.cls_pool`` asks for.

    ``encoder_pool`` (width ``encoder_width``) serves ``cls``/``mean``; ``lesion`` pools the encoder's finest
    features by lesion probability; ``decoder`` reads ``segmentation`` (a
    :class:`~mtmedformer.models.segmentation.SegmentationHead`, required by both lesion pools).

    Raises
    ------
    ValueError
        If a lesion pool is asked for without a segmentation head, or ``cls``/``mean`` without ``encoder_pool``.
    """
    if cfg.cls_pool in ("lesion", "decoder") and segmentation is None:
        raise ValueError(f"cls_pool {cfg.cls_pool!r} reads the segmentation head: enable the segmentation task")
    if cfg.cls_pool == "decoder":
        pool: nn.Module = DecoderLesionPool(segmentation.pyramid.channels)
        width = pool.out_features
    elif cfg.cls_pool == "lesion":
        pool, width = LesionPool(), encoder_width
    elif encoder_pool is None:
        raise ValueError(f"cls_pool {cfg.cls_pool!r} needs an encoder pool")
    else:
        pool, width = encoder_pool, encoder_width
    descriptors = LesionDescriptors() if cfg.cls_descriptors else None
    if descriptors is not None and segmentation is None:
        raise ValueError("cls_descriptors describe the segmentation head's lesion: enable the segmentation task")
    return ClassificationHead(pool, width, num_classes, dropout=cfg.dropout, descriptors=descriptors)

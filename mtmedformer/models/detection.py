"""Dense anchor-free lesion detection head (FCOS-style) with per-sample loss and box decoding.

FCOS: Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019; focal loss: Lin et al.,
"Focal Loss for Dense Object Detection", ICCV 2017.

Why anchor-free instead of MONAI's RetinaNet components (``monai.apps.detection``): lesions here are one class
of very different sizes (micro-calcification clusters of a few pixels to pneumonia opacities covering a lung),
and the hybrid multi-task loss needs a *per-sample* detection loss that can be masked by ``has_boxes`` and that
learns "no lesion" from images without boxes. MONAI's ``RetinaNetDetector`` returns batch-reduced losses behind
an anchor generator, ATSS matcher and hard-negative sampler tuned per data set (anchor shapes). A single-level
FCOS head on a stride-4 map (upsampled from the encoder by the same UNETR-style decoder as segmentation) needs
no anchor tuning, gives small lesions positive locations, and its loss decomposes per image. MONAI still
provides the box maths (``box_pair_giou``, ``non_max_suppression``) and the focal loss.

Per location the head predicts a lesion logit, four distances ``(l, t, r, b)`` in pixels from the location
to the box sides (``softplus`` of the regression output times the stride: positive, smooth, scale-free), and
a centre-ness logit. Score = ``sqrt(sigmoid(cls) * sigmoid(centerness))``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.data.box_utils import box_pair_giou, non_max_suppression
from monai.losses import FocalLoss
from monai.networks.blocks import UnetBasicBlock
from torch import nn

from mtmedformer.config.model import DetectionConfig
from mtmedformer.models.decoder import UpDecoder
from mtmedformer.models.detection_targets import assign_targets, location_centers
from mtmedformer.models.resnet_encoder import FeaturePyramid
from mtmedformer.models.vit_encoder import EncoderOutput

CLS_LOGITS, LTRB, CENTERNESS = "cls_logits", "ltrb", "centerness"
"""Keys of the raw output dict of :class:`DetectionHead`."""


def _size_pair(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def _check_boxes(boxes: torch.Tensor, index: int) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes[{index}] must have shape (N, 4) xyxy, got {tuple(boxes.shape)}")
    if not torch.isfinite(boxes).all():
        raise ValueError(f"boxes[{index}] contains NaN or infinite coordinates")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise ValueError(f"boxes[{index}] has boxes with x2 < x1 or y2 < y1; boxes must be xyxy pixels")


class DetectionHead(nn.Module):
    """FCOS-style lesion detector on one stride-``cfg.stride`` feature map.

    Parameters
    ----------
    pyramid
        Skip-path module built with ``out_stride=cfg.stride``.
    decoder
        :class:`UpDecoder` from the pyramid's bottleneck down to ``cfg.stride``.
    cfg
        Detection settings (stride, widths, loss weights, decoding thresholds).
    norm
        MONAI norm name of the conv tower. Default ``"instance"``.

    Raises
    ------
    ValueError
        If the decoder does not end at ``cfg.stride``.
    """

    def __init__(self, pyramid: nn.Module, decoder: UpDecoder, cfg: DetectionConfig, norm: str = "instance") -> None:
        super().__init__()
        end_stride = decoder.strides[-1] if decoder.strides else pyramid.bottleneck_stride
        if end_stride != cfg.stride:
            raise ValueError(f"the detection decoder ends at stride {end_stride}, expected cfg.stride={cfg.stride}")
        self.cfg = cfg
        self.stride = cfg.stride
        channels = cfg.feature_size * cfg.stride
        self.pyramid = pyramid
        self.decoder = decoder
        self.tower = UnetBasicBlock(
            spatial_dims=2,
            in_channels=decoder.out_channels,
            out_channels=channels,
            kernel_size=3,
            stride=1,
            norm_name=norm,
        )
        self.cls_logits = nn.Conv2d(channels, 1, kernel_size=3, padding=1)
        self.bbox_reg = nn.Conv2d(channels, 4, kernel_size=3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, kernel_size=3, padding=1)
        for conv in (self.cls_logits, self.bbox_reg, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        # RetinaNet prior: every location starts at foreground probability prior_prob, so the focal loss of the
        # many background locations does not swamp the first updates.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))
        self.focal = FocalLoss(gamma=cfg.focal_gamma, alpha=cfg.focal_alpha, reduction="none")

    def forward(self, features: EncoderOutput | FeaturePyramid, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the raw dense outputs for ``image`` ``(B, 1, H, W)`` (``h = H / stride``, ``w = W / stride``).

        Returns
        -------
        dict
            ``"cls_logits"`` ``(B, 1, h, w)`` lesion logits; ``"ltrb"`` ``(B, 4, h, w)`` distances in pixels
            (> 0) from each location to the left, top, right, bottom box sides; ``"centerness"`` ``(B, 1, h, w)``
            centre-ness logits.
        """
        bottleneck, skips = self.pyramid(features, image)
        x = self.tower(self.decoder(bottleneck, skips))
        return {
            CLS_LOGITS: self.cls_logits(x),
            LTRB: F.softplus(self.bbox_reg(x)) * self.stride,
            CENTERNESS: self.centerness(x),
        }

    def _grid(self, outputs: dict[str, torch.Tensor], image_size: int | tuple[int, int]) -> tuple[int, int]:
        missing = [k for k in (CLS_LOGITS, LTRB, CENTERNESS) if k not in outputs]
        if missing:
            raise ValueError(f"detection outputs lack {missing}; pass the dict returned by the detection head")
        height, width = _size_pair(image_size)
        grid = (int(outputs[CLS_LOGITS].shape[-2]), int(outputs[CLS_LOGITS].shape[-1]))
        if (grid[0] * self.stride, grid[1] * self.stride) != (height, width):
            raise ValueError(
                f"a {grid[0]}x{grid[1]} detection map at stride {self.stride} does not cover image_size "
                f"{height}x{width}; pass the size of the images given to the model"
            )
        return grid

    def loss_terms(
        self,
        outputs: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_size: int | tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """Return the unweighted per-sample loss terms, each ``(B,)``.

        ``"classification"``: sigmoid focal loss summed over all locations; ``"box"``: ``1 - GIoU`` summed
        over positive locations; ``"centerness"``: BCE summed over positive locations. Each term of sample
        ``i`` is divided by ``max(1, P_i)``, its own number of positive locations, so an image without boxes
        contributes its background focal term (learning "no lesion") and zero box/centre-ness terms.

        Parameters
        ----------
        outputs
            The dict returned by :meth:`forward`.
        boxes
            ``B`` tensors ``(N_i, 4)``, ``xyxy`` pixels of the model input; ``N_i = 0`` for no lesion.
        image_size
            ``(H, W)`` (or ``H`` for square images) of the model input.

        Raises
        ------
        ValueError
            If the outputs do not match ``image_size``, ``len(boxes)`` is not the batch size, or boxes are
            malformed.
        """
        grid = self._grid(outputs, image_size)
        cls_logits = outputs[CLS_LOGITS]
        batch = cls_logits.shape[0]
        if len(boxes) != batch:
            raise ValueError(f"got {len(boxes)} box tensors for a batch of {batch} images")
        device = cls_logits.device
        centers = location_centers(grid, self.stride, device)  # (L, 2)
        ltrb = outputs[LTRB].flatten(2).transpose(1, 2)  # (B, L, 4)
        ctr_logits = outputs[CENTERNESS].flatten(1)  # (B, L)
        cls_target = torch.zeros(batch, grid[0] * grid[1], device=device)
        box_terms, ctr_terms, norms = [], [], []
        for i, sample_boxes in enumerate(boxes):
            _check_boxes(sample_boxes, i)
            targets = assign_targets(sample_boxes.to(device), grid, self.stride, self.cfg.center_radius)
            pos = targets.positive
            cls_target[i] = pos.to(cls_target.dtype)
            norm = float(max(1, targets.num_positive))
            norms.append(norm)
            if targets.num_positive == 0:
                box_terms.append(ltrb.new_zeros(()))
                ctr_terms.append(ltrb.new_zeros(()))
                continue
            pred = torch.cat([centers[pos] - ltrb[i, pos, :2], centers[pos] + ltrb[i, pos, 2:]], dim=1)  # (P, 4)
            giou = box_pair_giou(pred, targets.boxes[pos])  # (P,)
            box_terms.append((1.0 - giou).sum() / norm)
            ctr = F.binary_cross_entropy_with_logits(ctr_logits[i, pos], targets.centerness[pos], reduction="sum")
            ctr_terms.append(ctr / norm)
        focal = self.focal(cls_logits, cls_target.view_as(cls_logits)).sum(dim=(1, 2, 3))  # (B,)
        return {
            "classification": focal / torch.tensor(norms, device=device, dtype=focal.dtype),
            "box": torch.stack(box_terms).to(focal.dtype),
            "centerness": torch.stack(ctr_terms).to(focal.dtype),
        }

    def loss(
        self,
        outputs: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_size: int | tuple[int, int],
    ) -> torch.Tensor:
        """Return the per-sample detection loss ``(B,)``: focal + ``box_weight`` * GIoU + ``centerness_weight`` * BCE.

        See :meth:`loss_terms` for the terms, their normalisation and what is raised. Mask the result by
        ``has_boxes`` to drop samples whose boxes are not annotated.
        """
        terms = self.loss_terms(outputs, boxes, image_size)
        return (
            terms["classification"]
            + self.cfg.box_weight * terms["box"]
            + self.cfg.centerness_weight * terms["centerness"]
        )

    @torch.no_grad()
    def decode(
        self, outputs: dict[str, torch.Tensor], image_size: int | tuple[int, int]
    ) -> list[dict[str, torch.Tensor]]:
        """Turn raw outputs into boxes: score threshold, top-k, NMS and the detection cap from the config.

        Returns
        -------
        list of dict
            Per image ``{"boxes": (N, 4) float xyxy pixels clipped to the image, "scores": (N,) in [0, 1]}``,
            best first, ``N <= cfg.max_detections``.

        Raises
        ------
        ValueError
            If the outputs do not match ``image_size``.
        """
        grid = self._grid(outputs, image_size)
        height, width = _size_pair(image_size)
        centers = location_centers(grid, self.stride, outputs[CLS_LOGITS].device)  # (L, 2)
        cls_prob = torch.sigmoid(outputs[CLS_LOGITS].flatten(1).float())  # (B, L)
        ctr_prob = torch.sigmoid(outputs[CENTERNESS].flatten(1).float())  # (B, L)
        scores_all = torch.sqrt(cls_prob * ctr_prob)  # (B, L)
        ltrb_all = outputs[LTRB].flatten(2).transpose(1, 2).float()  # (B, L, 4)
        results = []
        for scores, ltrb in zip(scores_all, ltrb_all, strict=True):
            keep = torch.nonzero(scores > self.cfg.score_threshold).squeeze(1)
            if keep.numel() > self.cfg.pre_nms_top_k:
                keep = keep[scores[keep].topk(self.cfg.pre_nms_top_k).indices]
            boxes = torch.cat([centers[keep] - ltrb[keep, :2], centers[keep] + ltrb[keep, 2:]], dim=1)  # (K, 4)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            kept = non_max_suppression(boxes, scores[keep], self.cfg.nms_iou, max_proposals=self.cfg.max_detections)
            kept = torch.as_tensor(kept, dtype=torch.long, device=boxes.device)
            results.append({"boxes": boxes[kept], "scores": scores[keep][kept]})
        return results

"""Self-supervised start of the ViT encoder: masked image modelling on the sites' own unlabelled images.

SimMIM (Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022): random square blocks
of patches are replaced by a learned mask token before the transformer, a linear layer predicts each patch's
pixels from its output token, and the loss is the L1 error on the masked patches only. Labels are never
read, so every image of the training split counts, annotated or not. Why SimMIM rather than MAE: the encoder
sees the full token grid in pre-training as in fine-tuning (the dense heads read every token), and the
decoder is one linear layer that is thrown away.

The input is what the multi-task model feeds its encoder (per-image standardisation when
``model.input_norm`` is ``image``), and the target is that standardised image. The encoder's LayerNorms use
the checkpoint epsilon of :mod:`mtmedformer.models.pretrained`, so the written file loads through
``model.pretrained`` unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from mtmedformer.atomic import atomic_torch_save
from mtmedformer.config import ExperimentConfig, to_dict
from mtmedformer.engine.device import resolve_device
from mtmedformer.engine.loop import autocast_context
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.trainer import make_loader
from mtmedformer.errors import ConfigError
from mtmedformer.models import build_model
from mtmedformer.models.multitask import standardize_per_image
from mtmedformer.models.pretrained import use_checkpoint_norm_eps
from mtmedformer.models.vit_encoder import ViTEncoder

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "mtmedformer-mim-encoder"


@dataclass(frozen=True)
class MimConfig:
    """Settings of one masked-image-modelling pre-training run (read once from the command line).

    Attributes
    ----------
    minutes
        Wall-clock budget in minutes; the run stops after the step that crosses it.
    max_epochs
        Upper bound on passes over the images (the budget usually ends the run first).
    mask_ratio
        Share of mask blocks hidden per image (SimMIM: 0.6).
    mask_block
        Side of a square mask block in pixels; a multiple of the patch size (SimMIM: 32 for patch 16).
    lr, weight_decay
        AdamW settings (SimMIM uses weight decay 0.05).
    """

    minutes: float = 3.0
    max_epochs: int = 1000
    mask_ratio: float = 0.6
    mask_block: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        for name in ("minutes", "mask_ratio", "lr", "weight_decay"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.minutes <= 0:
            raise ConfigError(f"--minutes must be > 0, got {self.minutes}")
        if self.max_epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.max_epochs}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"--mask-ratio must be in (0, 1), got {self.mask_ratio}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"--lr must be > 0 and weight decay >= 0, got {self.lr}, {self.weight_decay}")


def block_mask(batch: int, grid: tuple[int, int], block: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Random SimMIM mask ``(batch, h, w)`` bool: ``round(ratio * blocks)`` square blocks of ``block`` patches.

    Raises
    ------
    ConfigError
        If the patch grid is not a multiple of ``block``.
    """
    height, width = grid
    if height % block or width % block:
        raise ConfigError(
            f"--mask-block of {block} patches does not tile the {height}x{width} patch grid; use a divisor"
        )
    blocks = (height // block) * (width // block)
    hidden = max(1, round(ratio * blocks))
    scores = torch.rand(batch, blocks, generator=generator)
    chosen = scores.argsort(dim=1)[:, :hidden]  # (B, hidden) block indices
    mask = torch.zeros(batch, blocks, dtype=torch.bool).scatter_(1, chosen, True)
    mask = mask.reshape(batch, height // block, width // block)  # (B, h / k, w / k)
    return mask.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)  # (B, h, w)


def patchify(image: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, 1, H, W)`` -> ``(B, N, p * p)`` patches in the encoder's row-major token order."""
    batch, _, height, width = image.shape
    x = image.reshape(batch, height // patch, patch, width // patch, patch)  # (B, h, p, w, p)
    return x.permute(0, 1, 3, 2, 4).reshape(batch, (height // patch) * (width // patch), patch * patch)


class SimMIM(nn.Module):
    """An encoder with a mask token and a linear pixel decoder (SimMIM).

    Parameters
    ----------
    encoder
        The ViT encoder to pre-train (its parameters are trained in place).
    standardize
        Standardise each image before the encoder, as the multi-task model does (``input_norm: image``).
    """

    def __init__(self, encoder: ViTEncoder, standardize: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.standardize = standardize
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.Linear(encoder.embed_dim, encoder.patch_size**2)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return the mean L1 error on the masked patches of ``image`` ``(B, 1, H, W)``; ``mask`` is ``(B, h, w)``."""
        if self.standardize:
            image = standardize_per_image(image)
        enc = self.encoder
        x = enc.patch_embed(image)  # (B, d, h, w)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.flatten(2).transpose(1, 2)  # (B, N, d)
        hidden = mask.reshape(mask.shape[0], -1, 1).to(x.dtype)  # (B, N, 1), 1 = masked
        x = x * (1 - hidden) + self.mask_token.to(x.dtype) * hidden
        cls = enc.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, d)
        x = enc.pos_drop(torch.cat([cls, x], dim=1) + enc.position_embedding(grid))  # (B, 1 + N, d)
        for block in enc.blocks:
            x = block(x)
        pred = self.decoder(enc.norm(x)[:, 1:]).float()  # (B, N, p * p)
        target = patchify(image.float(), enc.patch_size)  # (B, N, p * p)
        error = (pred - target).abs().mean(dim=-1, keepdim=True)  # (B, N, 1)
        return (error * hidden).sum() / hidden.sum().clamp_min(1.0)


@dataclass
class PretrainResult:
    """What :func:`pretrain` did: where it wrote, steps, epochs, seconds and the last epoch's mean loss."""

    path: Path
    steps: int
    epochs: int
    seconds: float
    last_loss: float


def pretrain(cfg: ExperimentConfig, images: Dataset, out: str | Path, mim: MimConfig) -> PretrainResult:
    """Pre-train the configured ViT encoder with SimMIM on ``images`` and write it where ``model.pretrained`` reads.

    Parameters
    ----------
    cfg
        The experiment config: model (``arch: vit``), batch size, precision, threads, seed, device.
    images
        A dataset of samples with an ``"image"``; labels, masks and boxes are ignored.
    out
        Checkpoint path (``.pt``): ``{"kind", "encoder": state dict, "config", "mim", "steps", ...}``.
    mim
        The pre-training settings.

    Raises
    ------
    ConfigError
        If the model is not a ViT, or the mask block does not tile the patch grid.
    """
    if cfg.model.arch != "vit":
        raise ConfigError("mtmedformer pretrain pre-trains the ViT encoder: set model.arch to vit")
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    generator = seed_everything(cfg.train.seed)
    encoder = build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes)).encoder
    use_checkpoint_norm_eps(encoder)
    block = mim.mask_block // encoder.patch_size
    if block < 1 or mim.mask_block % encoder.patch_size:
        raise ConfigError(f"--mask-block {mim.mask_block} must be a multiple of model.patch_size {encoder.patch_size}")
    device = resolve_device(cfg.train.device)
    model = SimMIM(encoder, standardize=cfg.model.input_norm == "image").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=mim.lr, weight_decay=mim.weight_decay)
    loader = make_loader(images, cfg, train=True, generator=generator)
    mask_generator = torch.Generator().manual_seed(cfg.train.seed + 1)
    start = time.monotonic()
    deadline = start + 60.0 * mim.minutes
    steps = epochs = 0
    last_loss = math.nan
    log.info("SimMIM pre-training on %d images for at most %.1f min", len(images), mim.minutes)
    while epochs < mim.max_epochs and time.monotonic() < deadline:
        losses = []
        for batch in loader:
            image = batch.image.to(device)
            mask = block_mask(image.shape[0], encoder.grid, block, mim.mask_ratio, mask_generator).to(device)
            with autocast_context(cfg.train.precision, device):
                loss = model(image, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            losses.append(float(loss.detach()))
            if time.monotonic() >= deadline:
                break
        epochs += 1
        last_loss = sum(losses) / max(1, len(losses))
        log.info("SimMIM epoch %d: L1 %.4f (%d steps, %.0f s)", epochs, last_loss, steps, time.monotonic() - start)
    seconds = time.monotonic() - start
    path = Path(out)
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    atomic_torch_save(path, {
        "kind": CHECKPOINT_KIND, "encoder": state, "config": to_dict(cfg), "mim": asdict(mim),
        "steps": steps, "epochs": epochs, "seconds": seconds, "last_loss": last_loss,
    })  # fmt: skip
    return PretrainResult(path=path, steps=steps, epochs=epochs, seconds=seconds, last_loss=last_loss)


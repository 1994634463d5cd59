"""What one training-throughput measurement runs: the configuration, the model, a fixed batch and one step.

:class:`RunSpec` names a configuration (ViT preset, image size, batch, enabled heads, precision, AdamW kernel);
:func:`build_bench` builds the project's own model, hybrid loss and optimizer for it, exactly as training
builds them, plus a fully annotated random batch; :func:`train_step` is one training step through the
engine's precision path. Measuring lives in :mod:`benchmarks.throughput_measure`, the command line in
:mod:`benchmarks.train_throughput`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import record_function
from torch.utils.flop_counter import FlopCounterMode

from mtmedformer import TASKS
from mtmedformer.config import ExperimentConfig, config_from_dict
from mtmedformer.data.batch import Batch
from mtmedformer.engine.loop import as_float32, autocast_context
from mtmedformer.engine.optim import build_optimizer
from mtmedformer.engine.setup import build_model_and_loss

HEADS: dict[str, tuple[str, ...]] = {"all": TASKS, "cls": ("classification",)}
"""Benchmark head sets: all three task heads, or the encoder plus the classification head only."""

ADAMW_IMPLS = ("default", "foreach", "fused")
"""AdamW implementations: ``default`` is what :func:`mtmedformer.engine.optim.build_optimizer` builds (the
optimizer training uses; fused AdamW today), the others re-make it with ``foreach=True`` / ``fused=True``."""

PRECISIONS = ("fp32", "bf16")
"""Training precisions, the values of ``train.precision`` (see :func:`mtmedformer.engine.loop.autocast_context`)."""


# --------------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class RunSpec:
    """One benchmark configuration.

    Attributes
    ----------
    preset
        ViT width preset (``tiny`` or ``small``; ``base`` works but is slow on a CPU).
    image_size
        Side of the square input images, pixels (a multiple of ``patch_size``).
    batch_size
        Images per training step.
    heads
        ``"all"`` (classification, segmentation, detection) or ``"cls"`` (encoder + classification head).
    patch_size
        ViT patch side, pixels. Default 16.
    depth
        Transformer blocks; None = the preset's depth (12).
    warmup_steps
        Untimed steps before timing; the first one is the FLOP-counted step. Default 2.
    timed_steps
        Timed steps; throughput uses their median. Default 5.
    threads
        ``torch.set_num_threads`` value. Default 1.
    profile_steps
        Extra steps profiled with ``torch.profiler`` after timing (0 = no profile). Default 0.
    seed
        Seeds the model initialisation and the random batch. Default 0.
    precision
        ``train.precision`` of the step, one of :data:`PRECISIONS`: ``"fp32"`` (default) or ``"bf16"`` (the
        model forward under bfloat16 autocast, outputs cast back to float32 for the loss; weights, gradients and
        the optimizer stay float32), exactly as :func:`mtmedformer.engine.loop.train_epoch` does it.
    adamw
        AdamW implementation, one of :data:`ADAMW_IMPLS`. Default ``"default"`` (what
        :func:`mtmedformer.engine.optim.build_optimizer` builds today).
    """

    preset: str = "tiny"
    image_size: int = 128
    batch_size: int = 32
    heads: str = "all"
    patch_size: int = 16
    depth: int | None = None
    warmup_steps: int = 2
    timed_steps: int = 5
    threads: int = 1
    profile_steps: int = 0
    seed: int = 0
    precision: str = "fp32"
    adamw: str = "default"

    def __post_init__(self) -> None:
        if self.heads not in HEADS:
            raise ValueError(f"heads must be one of {list(HEADS)}, got {self.heads!r}")
        for name in ("image_size", "batch_size", "patch_size", "warmup_steps", "timed_steps", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.profile_steps < 0:
            raise ValueError(f"profile_steps must be >= 0, got {self.profile_steps}")
        if self.adamw not in ADAMW_IMPLS:
            raise ValueError(f"adamw must be one of {list(ADAMW_IMPLS)}, got {self.adamw!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")

    @property
    def optimizer(self) -> str:
        """Optimizer column: ``adamw`` (what training builds) or ``adamw-foreach`` / ``adamw-fused``."""
        return "adamw" if self.adamw == "default" else f"adamw-{self.adamw}"

    @property
    def config(self) -> str:
        """The configuration without its precision, e.g. ``tiny/128px/all/b32`` (``/adamw-fused`` appended when
        the optimizer is not the default); the rows of one configuration in two precisions share it."""
        base = f"{self.preset}/{self.image_size}px/{self.heads}/b{self.batch_size}"
        return base if self.adamw == "default" else f"{base}/{self.optimizer}"

    @property
    def label(self) -> str:
        """Short name with the precision, e.g. ``tiny/128px/all/b32/bf16``."""
        return f"{self.config}/{self.precision}"


# ------------------------------------------------------------------------------------------------ building


def experiment_config(spec: RunSpec) -> ExperimentConfig:
    """Return the experiment config of ``spec``: defaults plus its image size, preset, depth and heads."""
    model: dict[str, Any] = {"preset": spec.preset, "patch_size": spec.patch_size, "tasks": list(HEADS[spec.heads])}
    if spec.depth is not None:
        model["depth"] = spec.depth
    return config_from_dict(
        {"data": {"image_size": spec.image_size}, "model": model, "train": {"batch_size": spec.batch_size}}
    )


def make_batch(batch_size: int, image_size: int, num_classes: int = 2, seed: int = 0) -> Batch:
    """Fabricate a fully annotated random batch.

    Each image ``(1, S, S)`` is uniform noise in ``[0, 1]`` with one square lesion (side ``S/8 .. S/4``, random
    place) that is both its mask and its only box (``xyxy`` pixels, right/bottom edges exclusive); labels are
    uniform in ``[0, num_classes)``; every ``has_*`` flag is True.

    Raises
    ------
    ValueError
        If ``image_size < 8`` (no room for a lesion) or ``batch_size < 1``.
    """
    if image_size < 8 or batch_size < 1:
        raise ValueError(f"need image_size >= 8 and batch_size >= 1, got {image_size} and {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch_size, 1, image_size, image_size, generator=gen)
    mask = torch.zeros(batch_size, 1, image_size, image_size)
    boxes = []
    low, high = max(1, image_size // 8), max(2, image_size // 4)
    for i in range(batch_size):
        side = int(torch.randint(low, high + 1, (1,), generator=gen))
        x0, y0 = (int(v) for v in torch.randint(0, image_size - side + 1, (2,), generator=gen))
        mask[i, 0, y0 : y0 + side, x0 : x0 + side] = 1.0
        boxes.append(torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float32))
    flags = torch.ones(batch_size, dtype=torch.bool)
    label = torch.randint(0, num_classes, (batch_size,), generator=gen)
    return Batch(
        image=image,
        label=label,
        mask=mask,
        boxes=boxes,
        has_label=flags,
        has_mask=flags.clone(),
        has_boxes=flags.clone(),
    )


@dataclass
class Bench:
    """What one training step needs: model, hybrid loss, optimizer, a fixed batch, and the precision."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batch: Batch
    precision: str = "fp32"


def build_bench(spec: RunSpec) -> Bench:
    """Build model and loss (:func:`~mtmedformer.engine.setup.build_model_and_loss`), the training optimizer
    (:func:`~mtmedformer.engine.optim.build_optimizer`, re-made with ``spec.adamw``) and a random batch."""
    torch.manual_seed(spec.seed)
    cfg = experiment_config(spec)
    objects = build_model_and_loss(cfg)
    optimizer = build_optimizer({"model": objects.model, "loss": objects.loss_fn}, cfg.train)
    if spec.adamw != "default":
        # Same parameter groups, learning rate and decay as training; only the kernel implementation changes.
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
        optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, **{spec.adamw: True})
    objects.model.train()
    objects.loss_fn.train()
    batch = make_batch(spec.batch_size, spec.image_size, len(cfg.data.classes), seed=spec.seed)
    return Bench(objects.model, objects.loss_fn, optimizer, batch, spec.precision)


def forward_and_loss(bench: Bench, counter: FlopCounterMode | None = None) -> torch.Tensor:
    """Model forward in ``bench.precision`` (FLOP-counted by ``counter`` if given), then the float32 hybrid loss."""
    # The engine's own precision path (mtmedformer.engine.loop.train_epoch): forward under autocast_context,
    # outputs cast back to float32 outside it, loss in float32.
    with record_function("bench/forward"), counter if counter is not None else contextlib.nullcontext():
        with autocast_context(bench.precision, bench.batch.image.device):
            outputs = bench.model(bench.batch.image)
    with record_function("bench/loss"):
        return bench.loss_fn(as_float32(outputs), bench.batch).total


def train_step(bench: Bench) -> torch.Tensor:
    """One training step: forward (in ``bench.precision``), hybrid loss, backward, optimizer step.

    Returns the detached total loss. Gradient clipping and the finite-gradient check of the engine are left out.
    """
    bench.optimizer.zero_grad(set_to_none=True)
    total = forward_and_loss(bench)
    with record_function("bench/backward"):
        total.backward()
    with record_function("bench/optimizer"):
        bench.optimizer.step()
    return total.detach()

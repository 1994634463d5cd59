"""Checkpoints that carry their config, so a model can be rebuilt from its file alone (as nanoGPT does)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtmedformer.atomic import atomic_torch_save
from mtmedformer.config import ExperimentConfig, config_from_dict, to_dict
from mtmedformer.config.retired import drop_retired_keys
from mtmedformer.engine.device import to_cpu
from mtmedformer.errors import MTMedFormerError

FORMAT = "mtmedformer-checkpoint"
FORMAT_VERSION = 1
_SHOWN_KEYS = 5  # tensor names quoted per kind of problem in an error message


class CheckpointError(MTMedFormerError):
    """A checkpoint file is missing, corrupt, or not an MTMedFormer checkpoint."""


@dataclass
class Checkpoint:
    """The content of a checkpoint file.

    Attributes
    ----------
    config
        The experiment config the model was built and trained with.
    model_state
        ``model.state_dict()``.
    loss_state
        ``loss_fn.state_dict()`` (learned task weights), or empty.
    optimizer_state, scheduler_state
        For resuming training; None in exported models.
    epoch
        Epochs (or federated rounds) completed.
    metrics
        Validation metrics at save time.
    extra
        Anything else the writer needs to resume (e.g. metric history, RNG states).
    operating_point
        The binary classifier's threshold chosen on the validation split, ``{"threshold", "rule",
        "fallback"}`` (:class:`~mtmedformer.metrics.OperatingPoint`), or empty when none was chosen (a file
        written before thresholds were stored, a run without a validation split): read it with
        :meth:`classification_threshold`.
    path
        The file it was read from (named in error messages), or None.
    """

    config: ExperimentConfig
    model_state: dict[str, torch.Tensor]
    loss_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    scheduler_state: dict[str, Any] | None
    epoch: int
    metrics: dict[str, Any]
    extra: dict[str, Any]
    path: Path | None = None
    operating_point: dict[str, Any] = field(default_factory=dict)

    def classification_threshold(self) -> float | None:
        """The class-1 probability threshold to evaluate this model at, or None without binary classification.

        The stored (validation-chosen) threshold; else, for a checkpoint without one, the config's fixed
        ``train.operating_point.threshold`` (0.5 in files written before the setting existed).
        """
        if "classification" not in self.config.model.tasks or len(self.config.data.classes) != 2:
            return None
        stored = self.operating_point.get("threshold")
        return float(stored) if stored is not None else self.config.train.operating_point.threshold

    def describe_model(self) -> str:
        """The config settings that decide the model's tensor shapes, for error messages."""
        m = self.config.model
        return (
            f"model.arch={m.arch}, model.preset={m.preset}, model.patch_size={m.patch_size}, model.depth={m.depth}, "
            f"model.tasks={list(m.tasks)}, data.image_size={self.config.data.image_size}, "
            f"data.classes={list(self.config.data.classes)}"
        )


def save_checkpoint(
    path: str | Path,
    *,
    config: ExperimentConfig,
    model: nn.Module | Mapping[str, torch.Tensor],
    epoch: int,
    metrics: dict[str, Any] | None = None,
    loss_fn: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: dict[str, Any] | None = None,
    operating_point: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (a crash mid-write leaves the previous file intact).

    ``model`` is the model or its state dict (the server holds global weights without a module).
    ``operating_point`` is the validation-chosen threshold (:meth:`~mtmedformer.metrics.OperatingPoint.as_dict`),
    or None when none was chosen.
    """
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": to_dict(config),
        # CPU tensors: a checkpoint written on a GPU machine opens anywhere.
        "model": to_cpu(model.state_dict() if isinstance(model, nn.Module) else dict(model)),
        "loss": to_cpu(loss_fn.state_dict()) if loss_fn is not None else {},
        "optimizer": to_cpu(optimizer.state_dict()) if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
        "extra": dict(extra or {}),
        "operating_point": dict(operating_point or {}),
    }
    atomic_torch_save(path, payload)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, not an MTMedFormer checkpoint of a known version, or its model or
        loss tensors hold NaN or infinity (the message names them).
    ConfigError
        If its config is not valid for this version, e.g. it was trained with a removed model variant (keys of
        removed settings at their kept value are dropped: :mod:`mtmedformer.config.retired`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a best.pt/last.pt written by a training run")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/unsafe files
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an MTMedFormer checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('version')}; this version reads {FORMAT_VERSION}"
        )
    for part in ("model", "loss"):
        _check_finite(payload.get(part) or {}, part, path)
    operating_point = payload.get("operating_point") or {}  # absent in files written before it was stored
    _check_threshold(operating_point, path)
    return Checkpoint(
        config=config_from_dict(drop_retired_keys(payload["config"])),
        model_state=payload["model"],
        loss_state=payload.get("loss") or {},
        optimizer_state=payload.get("optimizer"),
        scheduler_state=payload.get("scheduler"),
        epoch=int(payload["epoch"]),
        metrics=payload.get("metrics") or {},
        extra=payload.get("extra") or {},
        path=path,
        operating_point=dict(operating_point),
    )


def _shown(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN_KEYS} more" if len(names) > _SHOWN_KEYS else ""
    return ", ".join(names[:_SHOWN_KEYS]) + more


def _check_finite(state: Mapping[str, Any], part: str, path: Path) -> None:
    """Reject a checkpoint whose floating-point tensors hold NaN or infinity, naming them."""
    bad = [
        name
        for name, tensor in state.items()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} has NaN or infinite values in {len(bad)} {part} tensor(s): {_shown(bad)}; "
            "the run that wrote it diverged or the file was damaged: use an earlier checkpoint or retrain"
        )


def _check_threshold(operating_point: Any, path: Path) -> None:
    """Reject a stored operating point that is not a mapping with a threshold in ``[0, 1]`` (or none)."""
    value = operating_point.get("threshold") if isinstance(operating_point, Mapping) else None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    valid = value is None or (number and math.isfinite(value) and 0 <= value <= 1)
    if not isinstance(operating_point, Mapping) or not valid:
        raise CheckpointError(
            f"checkpoint {path} holds an invalid classification threshold ({operating_point!r}); "
            "the file was damaged or edited: use the checkpoint as its training run wrote it"
        )


def load_model_state(checkpoint: Checkpoint, model: nn.Module, loss_fn: nn.Module | None = None) -> None:
    """Load the checkpoint's weights into ``model`` (and learned loss weights into ``loss_fn``), strictly.

    ``model`` is normally built from ``checkpoint.config``; a checkpoint whose config and weights disagree
    (an edited file, or weights saved from another model) would otherwise fail inside ``load_state_dict``
    with a long traceback.

    Raises
    ------
    CheckpointError
        Naming the missing, unexpected and wrongly shaped tensors, and the checkpoint's model settings.
    """
    targets = [("model", model, checkpoint.model_state)]
    if loss_fn is not None and checkpoint.loss_state:
        targets.append(("loss", loss_fn, checkpoint.loss_state))
    for part, module, state in targets:
        expected = module.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        shapes = [
            f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
            for k, v in expected.items()
            if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(v.shape)
        ]
        problems = [
            f"{label}: {_shown(names)}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if names
        ]
        if problems:
            raise CheckpointError(
                f"checkpoint {checkpoint.path}: its {part} weights do not fit the {part} its config builds "
                f"({checkpoint.describe_model()}); {'; '.join(problems)}. The config stored in the file does not "
                "describe its weights: use the checkpoint as its training run wrote it"
            )
        module.load_state_dict(state)

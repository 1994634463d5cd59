"""Training section of the experiment config: optimisation, budget, seeds and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mtmedformer.config.loader import FieldError, reject_non_finite

OperatingRule = Literal["youden", "target_sensitivity", "fixed"]
_DEFAULT_TARGET_SENSITIVITY = 0.9


@dataclass(frozen=True)
class OperatingPointConfig:
    """How the binary classifier's probability threshold is chosen on the validation split.

    A sample is predicted positive (class 1) when its class-1 probability is ``>=`` the threshold. The
    threshold is chosen after every validation pass, stored in the checkpoints and applied unchanged to the
    test split and by ``mtmedformer evaluate`` (:mod:`mtmedformer.metrics.operating_point`). Multi-class
    classifiers always predict the argmax and ignore this section.
    """

    # youden: maximise sensitivity + specificity - 1; target_sensitivity: the largest threshold that keeps
    # validation sensitivity >= target_sensitivity; fixed: always use `threshold`.
    rule: OperatingRule = "youden"
    target_sensitivity: float = _DEFAULT_TARGET_SENSITIVITY  # in (0, 1); only with rule: target_sensitivity
    # The fixed rule's threshold, in (0, 1); also the fallback when the validation split cannot choose one
    # (a single class, no labelled sample) and the threshold of checkpoints written without a chosen one.
    threshold: float = 0.5

    def __post_init__(self) -> None:
        reject_non_finite(self)
        for name in ("target_sensitivity", "threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise FieldError(name, f"must be in (0, 1), got {getattr(self, name)}")
        if self.rule != "target_sensitivity" and self.target_sensitivity != _DEFAULT_TARGET_SENSITIVITY:
            raise FieldError(
                "target_sensitivity",
                f"is only used with rule 'target_sensitivity', the rule is '{self.rule}'; "
                "remove target_sensitivity or set rule: target_sensitivity",
            )


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained (centrally, locally at a site, or per federated round)."""

    epochs: int = 20  # passes over the training split (per federated round: see federated.local_epochs)
    batch_size: int = 16  # images per optimisation step
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.05  # decoupled weight decay (AdamW) or L2 (SGD); not applied to norms/biases
    momentum: float = 0.9  # SGD momentum (ignored by AdamW)
    scheduler: Literal["cosine", "constant"] = "cosine"  # per-step schedule after warm-up
    # what the cosine decays over: all `epochs` ("epochs"), or the `max_minutes` budget ("budget": the lr reaches
    # 0 when time runs out, whichever of the two ends comes first), so a time-capped run still anneals
    schedule_over: Literal["epochs", "budget"] = "epochs"
    warmup_steps: int = 20  # linear warm-up from 0 to lr, in optimisation steps
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping
    max_minutes: float | None = None  # wall-clock training budget; stops mid-epoch when reached
    seed: int = 0  # seeds model init, data order and augmentation
    threads: int | None = None  # torch intra-op threads; None = leave torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when torch sees a GPU, else the CPU
    precision: Literal["fp32", "bf16"] = "fp32"  # training forward pass: float32, or bfloat16 autocast (AMX CPUs, GPUs)
    monitor: str = "mean_score"  # validation metric that picks the best checkpoint (higher is better)
    eval_every: int = 1  # validate every this many epochs (and always after the last)
    output_dir: str = "runs/train"  # run folder: checkpoints, history, plots, resolved config
    progress: bool = True  # show progress bars
    # binary classification: how the probability threshold is chosen on the validation split
    operating_point: OperatingPointConfig = field(default_factory=OperatingPointConfig)

    def __post_init__(self) -> None:
        reject_non_finite(self)
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise FieldError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise FieldError("momentum", f"must be in [0, 1), got {self.momentum}")
        if self.warmup_steps < 0:
            raise FieldError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise FieldError("grad_clip", f"must be > 0 or null, got {self.grad_clip}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise FieldError("max_minutes", f"must be > 0 or null, got {self.max_minutes}")
        if self.schedule_over == "budget" and self.max_minutes is None:
            raise FieldError("schedule_over", "'budget' decays over max_minutes; set max_minutes or use 'epochs'")
        if self.threads is not None and self.threads < 1:
            raise FieldError("threads", f"must be >= 1 or null, got {self.threads}")

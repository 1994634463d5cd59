"""Names of the records and metrics exchanged between the ClientApp and the server-side strategies.

Client and strategy import these constants instead of repeating strings, so a renamed key cannot silently
break weighting. Every count is a number of samples (images), never of batches.
"""

from __future__ import annotations

from mtmedformer import TASKS

ARRAYS = "arrays"  # ArrayRecord: model state_dict
CONFIG = "config"  # ConfigRecord: server -> client round settings
METRICS = "metrics"  # MetricRecord: client -> server numbers
SITE = "site"  # ConfigRecord: client -> server, {"site-name": str}
PRIOR_EVAL = "prior-eval"  # ConfigRecord: client -> server, evaluation of the received model before training

NUM_EXAMPLES = "num-examples"  # images the client trained (or evaluated) on: FedAvg's weight
SERVER_ROUND = "server-round"
RUN_NAME = "run-name"  # server -> client: the experiment run's name (its results folder; kept by resumes)
LOCAL_EPOCHS = "local-epochs"
LOCAL_STEPS = "local-steps"
PROXIMAL_MU = "proximal-mu"  # set by Flower's FedProx
SITE_NAME = "site-name"
TRAIN_SECONDS = "train-seconds"  # wall time of local training (compute critical path of a round)
EVAL_SECONDS = "eval-seconds"  # wall time of an evaluation at the site
EVALUATE_SPLIT = "eval-split"  # server -> client: split to evaluate on
PRIOR_EVAL_SPLIT = "prior-eval-split"  # server -> client in a train message: evaluate the received model first
# server -> client in the final test evaluate message: the binary classifier's threshold, aggregated from the
# sites' validation-chosen ones (server/operating_point.py)
CLASSIFICATION_THRESHOLD = "classification-threshold"
SECAGG_ARRAY_NAMES = "secagg-array-names"  # server -> client in a SecAgg+ FitIns: state-dict names, one per line
LOSS = "loss"


def task_count_key(task: str) -> str:
    """Metric key of the number of samples annotated for ``task`` that the client used."""
    return f"{task}/num-examples"


def task_trained_key(task: str) -> str:
    """Metric key that is 1.0 when the client trained ``task`` this round, else 0.0."""
    return f"{task}/trained"


def task_loss_key(task: str) -> str:
    """Metric key of the client's mean local training loss for ``task``."""
    return f"{task}/loss"


def task_counts(metrics: dict[str, float]) -> dict[str, int]:
    """Per-task sample counts read from a client's metric record (missing = 0)."""
    return {task: int(metrics.get(task_count_key(task), 0)) for task in TASKS}

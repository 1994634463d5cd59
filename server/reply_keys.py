"""The metric keys the project's ClientApp sends, so that screening can refuse replies that carry other ones.

A training reply always carries the same keys (``client/app.py``: counts, flags and losses of every task), so
its set must equal :func:`train_metric_keys`; Flower's strategies refuse replies whose keys differ from each
other's, and a reply the screening accepts must never make aggregation fail. An evaluation reply carries the
evaluator's metrics of the model's tasks and, per task, a loss only when the site's split has samples of that
task: :func:`evaluation_metric_keys` requires the first and allows the second. A client metric added to the
ClientApp must be added here too (the screening tests fail until it is).
"""

from __future__ import annotations

from mtmedformer import TASKS
from mtmedformer.config import ExperimentConfig
from mtmedformer.metrics import MultiTaskEvaluator
from mtmedformer.metrics.evaluator import THRESHOLD_KEYS
from strategies import keys
from strategies.validation import MetricKeys


def train_metric_keys() -> MetricKeys:
    """Keys of a training reply: ``num-examples``, ``train-seconds``, ``loss``, and per task count, flag, loss."""
    names = {keys.NUM_EXAMPLES, keys.TRAIN_SECONDS, keys.LOSS}
    for task in TASKS:
        names |= {keys.task_count_key(task), keys.task_trained_key(task), keys.task_loss_key(task)}
    return MetricKeys(frozenset(names), frozenset(names))


def evaluation_metric_keys(cfg: ExperimentConfig) -> MetricKeys:
    """Keys of an evaluation reply for ``cfg``'s tasks and classes (also of a fused evaluation).

    A binary classifier's replies also carry the metrics at the operating point (``classification/threshold``,
    ``classification/*_at_threshold``), and validation replies whether the site fell back to the fixed one.
    """
    evaluator = MultiTaskEvaluator(tuple(cfg.model.tasks), len(cfg.data.classes)).compute()  # nothing seen: keys only
    required = {k for k in evaluator if not k.endswith("/n")}
    required |= {keys.NUM_EXAMPLES, keys.EVAL_SECONDS, keys.LOSS, "mean_score"}
    required |= {keys.task_count_key(task) for task in TASKS}
    optional = {keys.task_loss_key(task) for task in cfg.model.tasks}
    if "classification" in cfg.model.tasks and len(cfg.data.classes) == 2:  # client/app.py: the operating point
        required |= {"classification/threshold", *(f"classification/{k}_at_threshold" for k in THRESHOLD_KEYS)}
        optional.add("classification/threshold_fallback")  # a validation reply: the site chose the threshold
    return MetricKeys(frozenset(required), frozenset(required | optional))

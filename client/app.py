"""ClientApp (``client.app:app``): one hospital's local training and evaluation of the global model.

The server sends, each round, the global weights (ArrayRecord) and a ConfigRecord with the round number and
the resolved experiment config as YAML; the site's own settings come from the SuperNode's ``--node-config``
(``data-manifest``, ``site-name``) or, in simulation, from ``partition-id``/``num-partitions``. All
PyTorch work is done by ``mtmedformer`` (no Flower there); this module only translates Messages.
"""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from client.secure_aggregation import secure_aggregation_mod
from client.site import SiteSession, open_session
from mtmedformer import TASKS
from mtmedformer.engine.device import to_cpu
from mtmedformer.engine.local import train_locally
from mtmedformer.engine.loop import evaluate
from mtmedformer.logs import setup_logging
from mtmedformer.privacy import clip_and_noise
from strategies import keys
from strategies.packing import packing_mod

log = logging.getLogger(__name__)
setup_logging()
# Model arrays travel packed (strategies/packing.py); SecAgg+ messages go through Flower's protocol mod.
app = ClientApp(mods=[packing_mod, secure_aggregation_mod])


def _reply(msg: Message, session: SiteSession, metrics: dict[str, float], arrays: ArrayRecord | None) -> Message:
    content = RecordDict({keys.METRICS: MetricRecord(metrics), keys.SITE: ConfigRecord({keys.SITE_NAME: session.name})})
    if arrays is not None:
        content[keys.ARRAYS] = arrays
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on the site's training split and reply with the new weights.

    The MetricRecord holds ``num-examples`` (training images), per task the annotated-image count and a 0/1
    "trained" flag, per-task and total losses, and the local wall time ``train-seconds``. With
    ``federated.privacy.dp`` the weights are clipped and noised here, before they leave the site (the metrics
    are not).
    """
    session = open_session(msg, context)
    config = msg.content[keys.CONFIG]
    cfg = session.cfg
    saved = session.saved_state(before_round=session.server_round)  # what the site kept after its last round
    model, loss_fn = session.model_and_loss(msg.content[keys.ARRAYS], saved)
    prior = None
    if keys.PRIOR_EVAL_SPLIT in config:  # fused evaluation: score the received global before changing it
        prior = _evaluation_metrics(session, model, loss_fn, str(config[keys.PRIOR_EVAL_SPLIT]))
    counts = session.data.train.task_counts()
    epochs = int(config.get(keys.LOCAL_EPOCHS, cfg.federated.local_epochs))
    result = train_locally(
        model, loss_fn, session.data.train, cfg,
        epochs=epochs,
        first_epoch=(session.server_round - 1) * epochs,
        max_steps=cfg.federated.local_steps,
        seed=session.round_seed(),
        proximal_mu=float(config.get(keys.PROXIMAL_MU, 0.0)),
        optimizer_state=saved.optimizer if cfg.federated.keep_optimizer_state else None,
    )
    session.save_local_state(loss_fn, result.optimizer_state)
    metrics: dict[str, float] = {
        keys.NUM_EXAMPLES: len(session.data.train),
        keys.TRAIN_SECONDS: result.seconds,
        keys.LOSS: result.loss,
    }
    for task in TASKS:
        trained = task in model.tasks and counts.get(task, 0) > 0
        metrics[keys.task_count_key(task)] = counts.get(task, 0) if trained else 0
        metrics[keys.task_trained_key(task)] = 1.0 if trained else 0.0
        metrics[keys.task_loss_key(task)] = result.task_losses.get(task, float("nan"))
    state = to_cpu(model.state_dict())
    dp = cfg.federated.privacy.dp
    if dp is not None:  # client-side DP: the weights leave the site clipped and noised (docs/privacy.md)
        received = msg.content[keys.ARRAYS].to_torch_state_dict()
        state = clip_and_noise(state, received, dp.clip_norm, dp.noise_multiplier).state
    reply = _reply(msg, session, metrics, ArrayRecord(state))
    if prior is not None:  # a ConfigRecord: Flower's strategies expect exactly one MetricRecord per reply
        reply.content[keys.PRIOR_EVAL] = ConfigRecord(prior)
    return reply


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the site's validation split (or ``eval-split`` from the config).

    Metrics are flat ``"<task>/<metric>"`` numbers with ``"<task>/num-examples"`` counts, so the server can
    weight each task by the samples annotated for it; undefined values (e.g. AUC on a single-class split) are
    NaN and left out of the server's averages. A binary classifier is also scored at an operating point:
    on the validation split the site chooses the threshold (``train.operating_point``), on other splits it
    applies ``classification-threshold`` from the config (the server's aggregate of the sites' validation
    thresholds), or the fixed ``train.operating_point.threshold`` when none is sent.
    """
    session = open_session(msg, context)
    config = msg.content[keys.CONFIG]
    split = str(config.get(keys.EVALUATE_SPLIT, "val"))
    threshold = config.get(keys.CLASSIFICATION_THRESHOLD)
    # The evaluated global follows round server_round's training: the site's state after that round.
    saved = session.saved_state(before_round=session.server_round + 1)
    model, loss_fn = session.model_and_loss(msg.content[keys.ARRAYS], saved)
    metrics = _evaluation_metrics(session, model, loss_fn, split, None if threshold is None else float(threshold))
    return _reply(msg, session, metrics, None)


# Message kind -> handler: what client/entry.py and the warm server (client/warm_server.py) dispatch to.
HANDLERS = {"train": train, "evaluate": evaluate_global}


def _evaluation_metrics(
    session: SiteSession, model: nn.Module, loss_fn: nn.Module, split: str, threshold: float | None = None
) -> dict[str, float]:
    """Evaluate ``model`` on the site's ``split`` (its training split if it has none); flat metric dict.

    On ``"val"`` the site chooses the classification threshold; a site that cannot (a single class) reports
    ``classification/threshold`` as NaN, so the server's count-weighted mean leaves it out, and its
    ``*_at_threshold`` values are at the fixed threshold. On other splits ``threshold`` (or the fixed one) is
    applied.
    """
    dataset = {"val": session.data.val, "test": session.data.test, "train": session.data.train}.get(split)
    if dataset is None or len(dataset) == 0:
        dataset = session.data.train
        log.warning("site %s has no '%s' split: evaluating on its training split", session.name, split)
    start = time.monotonic()
    operating_point = session.cfg.train.operating_point
    choose = split == "val"
    values = evaluate(
        model, session.loader(dataset), len(session.cfg.data.classes), loss_fn=loss_fn,
        choose_threshold=operating_point if choose else None,
        threshold=None if choose else (operating_point.threshold if threshold is None else threshold),
    )
    if values.get("classification/threshold_fallback"):
        values["classification/threshold"] = None  # not chosen here: NaN, left out of the server's mean
    metrics: dict[str, float] = {keys.NUM_EXAMPLES: len(dataset), keys.EVAL_SECONDS: time.monotonic() - start}
    for key, value in values.items():
        if key.endswith("/n"):
            metrics[keys.task_count_key(key.split("/")[0])] = float(value or 0)
        elif key != "num_examples":
            metrics[key] = float("nan") if value is None else float(value)
    for task in TASKS:
        metrics.setdefault(keys.task_count_key(task), 0.0)
    return metrics

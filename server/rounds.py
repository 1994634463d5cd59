"""The federated round loop: sample, train, screen replies, aggregate, evaluate, record, checkpoint.

Flower's ``Strategy.start`` always begins at round 1 and keeps its history in memory; this loop calls the
same strategy hooks (``configure_train``, ``aggregate_train``, ``configure_evaluate``, through
:class:`strategies.server_strategy.ServerStrategy`) but checkpoints after every round, so a killed server
resumes at the next round with the same history, and it screens every reply (``server/screening.py``) before
aggregation so that a failed, late or malformed client update never reaches the global model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from mtmedformer.config import ExperimentConfig, to_dict
from mtmedformer.engine.checkpoint import save_checkpoint
from mtmedformer.engine.loop import primary_score
from server.cross_site import save_local_models
from server.exchange import send_and_receive
from server.operating_point import federated_operating_point, validation_threshold
from server.privacy import round_privacy
from server.reply_keys import evaluation_metric_keys, train_metric_keys
from server.results import AGGREGATE, write_results
from server.screening import Expectations, Screened, pinned_counts, screen_replies
from server.secure_aggregation import secure_round
from server.state import ServerState
from strategies import keys
from strategies.metric_aggregation import aggregate_task_metrics
from strategies.packing import pack_content
from strategies.server_strategy import ServerStrategy
from strategies.validation import check_update

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Validation:
    """Validation metrics of one round's global model, aggregated over the sites.

    With fused evaluation, round ``r``'s global is evaluated by the sites when they receive it for training in
    round ``r + 1``; until then it is pending, and its metrics arrive one round late.

    Attributes
    ----------
    round
        The round whose global model was evaluated.
    metrics
        Weighted metrics over the sites and ``mean_score`` (empty when no site evaluated it).
    """

    round: int
    metrics: dict[str, float]


def _bytes_of(messages: list[Message]) -> int:
    """Bytes of the model arrays the messages carry."""
    return sum(m.content[keys.ARRAYS].count_bytes() for m in messages if m.has_content() and keys.ARRAYS in m.content)


def _numpy_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _as_reference_dtypes(arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Weighted averaging turns integer buffers (e.g. BatchNorm's num_batches_tracked) into floats: cast back.
    return {k: np.asarray(v).astype(reference[k].dtype) if k in reference else np.asarray(v) for k, v in arrays.items()}


class RoundLoop:
    """Runs rounds ``state.round + 1 .. cfg.federated.rounds`` and keeps ``run_dir`` up to date.

    Parameters
    ----------
    grid
        Flower grid to reach the sites.
    strategy
        The aggregation strategy (``server/strategy_factory.py``).
    cfg
        The experiment config.
    run_dir
        Results folder (checkpoints, history, report).
    state
        Where to start (a fresh state at round 0, or one loaded to resume).
    server_evaluate
        Optional ``(round, state_dict, threshold) -> metrics`` evaluation of the global model at the server;
        ``threshold`` is the classification threshold aggregated from that round's validation, or None where it
        is not known yet (fused evaluation before the last round: the model's validation comes a round later).
    stop_after
        Stop after this round even if more are configured (used by tests to simulate a killed server).
    """

    def __init__(
        self,
        grid: Grid,
        strategy: ServerStrategy,
        cfg: ExperimentConfig,
        run_dir: Path,
        state: ServerState,
        server_evaluate: Callable[[int, dict[str, torch.Tensor], float | None], dict[str, Any]] | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.grid, self.strategy, self.cfg, self.run_dir, self.state = grid, strategy, cfg, run_dir, state
        self.server_evaluate = server_evaluate
        self.stop_after = stop_after
        self.experiment_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        self.bytes_sent = self.bytes_received = 0  # model arrays moved this round
        self.aggregate_seconds = 0.0  # this round's strategy.aggregate_train wall time
        self.train_keys, self.evaluation_keys = train_metric_keys(), evaluation_metric_keys(cfg)

    def _config(self, server_round: int, **extra: Any) -> ConfigRecord:
        return ConfigRecord(
            {
                "experiment": self.experiment_yaml,
                keys.LOCAL_EPOCHS: self.cfg.federated.local_epochs,
                keys.SERVER_ROUND: server_round,
                keys.RUN_NAME: self.run_dir.name,  # sites key their state files by it (client/site_state.py)
                **extra,
            }
        )

    def _exchange(self, sent: list[Message]) -> list[Message]:
        """Send ``sent`` (packed when ``federated.pack_arrays``) and return the replies as they arrived.

        Replies stay packed until :func:`~server.screening.screen_replies` decodes and checks them.
        """
        if self.cfg.federated.pack_arrays:
            for msg in sent:
                pack_content(msg.content)
        return send_and_receive(self.grid, sent, self.cfg.federated.round_timeout_s)

    def _record(self, server_round: int, phase: str, site: str, metrics: dict[str, Any]) -> None:
        self.state.history.append({"round": server_round, "phase": phase, "site": site, **metrics})

    def _expectations(self, phase: str, prior: bool = False) -> Expectations:
        """Keys, bounds and pinned counts the replies of an exchange of ``phase`` are screened against."""
        history, limits = self.state.history, self.cfg.federated.screening
        if phase == "train":
            return Expectations(
                self.train_keys, self.evaluation_keys, limits, pinned_counts(history, "train"),
                pinned_counts(history, "val") if prior else {},
            )
        return Expectations(self.evaluation_keys, None, limits, pinned_counts(history, phase))

    def _record_sites(
        self, rnd: int, phase: str, failures: list[dict[str, Any]], rows: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Log and record every failure of ``phase``, and record each accepted site's metrics."""
        for failure in failures:
            action = failure.get("action", "rejected")
            log.warning("round %d: %s reply of site %s %s: %s", rnd, phase, failure["site"], action, failure["reason"])
            details = {"node_id": failure["node_id"], "reason": failure["reason"], "failed_phase": phase}
            if "action" in failure:
                details["action"] = action
            self._record(rnd, "failure", failure["site"], details)
        for site, metrics in rows:
            self._record(rnd, phase, site, metrics)

    def _train(self, rnd: int, prior_split: str | None = None) -> tuple[dict[str, float], Screened]:
        """Train round ``rnd``; with ``prior_split`` the sites first evaluate the received model on that split."""
        if self.cfg.federated.privacy.secure_aggregation:
            return self._train_secure(rnd)
        reference = _numpy_state(self.state.global_state)
        extra = {keys.PRIOR_EVAL_SPLIT: prior_split} if prior_split else {}
        arrays = ArrayRecord(self.state.global_state)
        sent = self.strategy.configure_train(rnd, arrays, self._config(rnd, **extra), self.grid)
        self.bytes_sent += _bytes_of(sent)
        replies = self._exchange(sent)
        self.bytes_received += _bytes_of(replies)
        prior = prior_split is not None
        screened = screen_replies(
            sent, replies, self.state.node_sites, reference, prior_eval=prior, expect=self._expectations("train", prior)
        )
        self._record_sites(rnd, "train", screened.failures, [(r.site, dict(r.metrics)) for r in screened.accepted])
        if rnd == self.cfg.federated.rounds and self.cfg.federated.cross_site_evaluation:
            save_local_models(self.run_dir, self.cfg, rnd, screened.accepted)  # before aggregation touches them
        if not self._enough(rnd, len(screened.accepted), len(sent)):
            return {}, screened
        began = time.monotonic()
        try:
            aggregate = self.strategy.aggregate_train(rnd, screened.accepted)
        except Exception as err:  # screened replies should never do this: keep the round (and the server) alive
            log.exception("round %d: aggregation failed; the global model is kept unchanged", rnd)
            self._record(rnd, "failure", AGGREGATE, {"node_id": 0, "reason": f"aggregation failed: {err!r}"[:300],
                                                     "failed_phase": "aggregate"})
            return aggregate_task_metrics(r.metrics for r in screened.accepted), screened
        finally:
            self.aggregate_seconds = time.monotonic() - began
        if aggregate.arrays is not None:
            self._apply(rnd, _as_reference_dtypes(aggregate.arrays, reference), reference)
        return self._record_train(rnd, screened, aggregate.metrics), screened

    def _train_secure(self, rnd: int) -> tuple[dict[str, float], Screened]:
        """Train round ``rnd`` through SecAgg+: the server learns the sites' mean update, never one site's."""
        reference = _numpy_state(self.state.global_state)
        sent = self.strategy.configure_train(rnd, ArrayRecord(self.state.global_state), self._config(rnd), self.grid)
        secure = secure_round(self.grid, sent, reference, self.cfg.federated.privacy.secagg, rnd,
                              self.state.node_sites, self.cfg.federated.round_timeout_s)
        screened = Screened(accepted=secure.sites, failures=secure.failures)
        self._record_sites(rnd, "train", screened.failures, [(r.site, dict(r.metrics)) for r in screened.accepted])
        if secure.update is None or not self._enough(rnd, len(screened.accepted), len(sent)):
            return {}, screened
        candidate = {k: reference[k] + secure.update[k] for k in reference}
        self._apply(rnd, _as_reference_dtypes(candidate, reference), reference)
        return self._record_train(rnd, screened, {}), screened

    def _enough(self, rnd: int, usable: int, sampled: int) -> bool:
        """Whether ``usable`` updates reach ``federated.min_train_nodes``; logs when they do not."""
        if usable >= self.cfg.federated.min_train_nodes:
            return True
        log.error(
            "round %d: only %d of %d sites returned usable updates (< federated.min_train_nodes=%d); "
            "the global model is kept unchanged",
            rnd,
            usable,
            sampled,
            self.cfg.federated.min_train_nodes,
        )
        return False

    def _apply(self, rnd: int, candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
        """Make ``candidate`` the global model unless the post-aggregation check rejects it."""
        problem = check_update(candidate, reference, self.cfg.federated.screening)
        if problem is None:
            self.state.global_state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in candidate.items()}
        else:
            log.error("round %d: aggregate rejected (%s); global model kept", rnd, problem)

    def _record_train(self, rnd: int, screened: Screened, strategy_metrics: dict[str, Any]) -> dict[str, float]:
        """Record and return the round's aggregated training metrics (plus the strategy's own diagnostics)."""
        train_metrics = aggregate_task_metrics(r.metrics for r in screened.accepted)
        # Strategy diagnostics (e.g. matching/...) that the clients' metrics do not have.
        train_metrics.update({k: v for k, v in strategy_metrics.items() if k not in train_metrics})
        self._record(rnd, "train", AGGREGATE, train_metrics)
        return train_metrics

    def evaluate_split(self, rnd: int, split: str) -> dict[str, float]:
        """Evaluate the global model on every sampled site's ``split``; record per-site and weighted metrics.

        Other splits than ``"val"`` are scored at the classification threshold aggregated from round ``rnd``'s
        validation (:mod:`server.operating_point`), when there is one; the sites choose it on ``"val"``.
        """
        arrays = ArrayRecord(self.state.global_state)
        extra: dict[str, Any] = {keys.EVALUATE_SPLIT: split}
        threshold = validation_threshold(self.state.history, rnd) if split != "val" else None
        if threshold is not None:
            extra[keys.CLASSIFICATION_THRESHOLD] = threshold
        config = self._config(rnd, **extra)
        sent = self.strategy.configure_evaluate(rnd, arrays, config, self.grid)
        if not sent:
            return {}
        self.bytes_sent += _bytes_of(sent)
        replies = self._exchange(sent)
        phase = "val" if split == "val" else split
        screened = screen_replies(sent, replies, self.state.node_sites, None, expect=self._expectations(phase))
        rows = [(r.site, dict(r.metrics)) for r in screened.accepted]
        return self._record_evaluation(rnd, phase, screened.failures, rows)

    def evaluate_everywhere(
        self, state: Mapping[str, torch.Tensor], split: str = "test"
    ) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
        """Evaluate the model ``state`` on ``split`` of every connected site (not a sample); screened replies.

        For cross-site evaluation (:mod:`server.cross_site`), after the last round: the model need not be the
        global one. Scored at the last round's validation threshold, as the final test evaluation is; failures
        are logged and recorded in the history (``failed_phase`` ``cross_site``), never raised.
        """
        rnd = self.state.round
        extra: dict[str, Any] = {keys.EVALUATE_SPLIT: split}
        threshold = validation_threshold(self.state.history, rnd)
        if threshold is not None:
            extra[keys.CLASSIFICATION_THRESHOLD] = threshold
        content = RecordDict({keys.ARRAYS: ArrayRecord(dict(state)), keys.CONFIG: self._config(rnd, **extra)})
        sent = [Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=node)
                for node in sorted(self.grid.get_node_ids())]
        replies = self._exchange(sent)
        screened = screen_replies(sent, replies, self.state.node_sites, None, expect=self._expectations(split))
        self._record_sites(rnd, "cross_site", screened.failures, [])
        return [(r.site, dict(r.metrics)) for r in screened.accepted], screened.failures

    def _prior_evaluation(self, rnd: int, trained: Screened) -> tuple[Validation, dict[str, float]]:
        """Record the evaluation of round ``rnd``'s global that the sites ran before training round ``rnd + 1``.

        Returns the validation and, per site, the seconds its evaluation took. Sites whose training reply was
        rejected are missing here too (their failure is already recorded).
        """
        rows = [(r.site, dict(r.prior_eval)) for r in trained.accepted if r.prior_eval is not None]
        seconds = {site: float(metrics.get(keys.EVAL_SECONDS, 0.0)) for site, metrics in rows}
        return Validation(rnd, self._record_evaluation(rnd, "val", trained.prior_failures, rows)), seconds

    def _record_evaluation(
        self, rnd: int, phase: str, failures: list[dict[str, Any]], rows: list[tuple[str, dict[str, Any]]]
    ) -> dict[str, float]:
        """Record per-site and weighted evaluation metrics of round ``rnd``'s global model; return the latter."""
        self._record_sites(rnd, phase, failures, rows)
        metrics = aggregate_task_metrics(m for _, m in rows) if rows else {}
        if metrics:
            finite = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
            metrics["mean_score"] = primary_score(finite, self.cfg.model.tasks)
            self._record(rnd, phase, AGGREGATE, metrics)
        return metrics

    def _save_model(self, validation: Validation, state: dict[str, torch.Tensor]) -> None:
        """Write the evaluated round's global model ``state`` with its metrics; also as best.pt when it is the best."""
        rnd, val = validation.round, validation.metrics
        model_ckpt = {
            "config": self.cfg, "epoch": rnd, "metrics": {k: v for k, v in val.items() if v is not None},
            "operating_point": federated_operating_point(val, self.cfg),  # the sites' validation thresholds
        }
        save_checkpoint(self.run_dir / "checkpoints" / f"round_{rnd:03d}.pt", model=state, **model_ckpt)
        score = val.get(self.cfg.train.monitor)
        if score is not None and not math.isnan(score) and (not self.state.best or score > self.state.best["score"]):
            self.state.best = {"round": rnd, "score": float(score)}
            save_checkpoint(self.run_dir / "checkpoints" / "best.pt", model=state, **model_ckpt)

    def _checkpoint(self, rnd: int, validation: Validation | None) -> None:
        """Close round ``rnd``: its model file when its validation is known, results files, then the state."""
        if validation is not None:
            self._save_model(validation, self.state.global_state)
        self.state.round = rnd
        self.state.strategy = self.strategy.state_dict()
        write_results(self.run_dir, self.state.history)
        self.state.save(self.run_dir / "server_state.pt")  # last: the state never points past the files above

    def _round_costs(self, rnd: int, seconds: float, n_ok: int, prior: dict[str, float]) -> dict[str, float]:
        """Round wall time against the clients' critical path, and bytes moved, for the overhead benchmark.

        The critical path is what the round can not beat when every site computes in parallel: the slowest
        site's local training (plus, with fused evaluation, its evaluation of the received model before
        training: ``prior`` maps site -> those seconds), plus the slowest site's separate evaluation when the
        round has one. Bytes count the model arrays in every message sent (train and evaluate) and every
        training reply received.
        """
        rows = [r for r in self.state.history if r["round"] == rnd and r["site"] != AGGREGATE]
        train = [
            float(r.get(keys.TRAIN_SECONDS, 0.0)) + prior.get(r["site"], 0.0) for r in rows if r["phase"] == "train"
        ]
        evals = [float(r.get(keys.EVAL_SECONDS, 0.0)) for r in rows if r["phase"] == "val"]
        critical = max(train, default=0.0) + max(evals, default=0.0)
        return {
            "time/round_s": seconds,
            "time/client_critical_s": critical,
            "time/overhead_ratio": seconds / critical if critical > 0 else float("nan"),
            "time/aggregate_s": self.aggregate_seconds,  # the server's strategy step alone
            "bytes/sent": float(self.bytes_sent),
            "bytes/received": float(self.bytes_received),
            "sites_trained": n_ok,
        }

    def run(self) -> ServerState:
        """Run the remaining rounds; return the final state.

        With ``federated.fused_evaluation`` every round but the last has one exchange: its train message asks
        the sites to evaluate the received global (round ``r - 1``'s, pending until now) on their validation
        split before training, and those metrics are recorded, round ``r - 1``'s model file written and best.pt
        chosen then. The last round evaluates its global in a separate exchange, so every round's global is
        evaluated exactly once.
        """
        total = self.cfg.federated.rounds
        fused = self.cfg.federated.fused_evaluation
        first = self.state.round + 1
        started = time.monotonic()
        for rnd in range(first, total + 1):
            t0 = time.monotonic()
            self.bytes_sent = self.bytes_received = 0
            self.aggregate_seconds = 0.0
            previous = self.state.global_state  # round rnd - 1's global, sent for training
            pending = fused and rnd > 1  # its validation comes with this round's training replies
            train_metrics, trained = self._train(rnd, "val" if pending else None)
            evaluated: list[Validation] = []  # the validations that arrived this round, oldest model first
            prior_seconds: dict[str, float] = {}
            if pending:
                validation, prior_seconds = self._prior_evaluation(rnd - 1, trained)
                self._save_model(validation, previous)  # round rnd - 1's model file, once its metrics are known
                evaluated.append(validation)
            if not fused or rnd == total:
                evaluated.append(Validation(rnd, self.evaluate_split(rnd, "val")))
            if self.server_evaluate is not None:  # at round rnd's validation threshold once that is known
                threshold = validation_threshold(self.state.history, rnd)
                server_metrics = self.server_evaluate(rnd, self.state.global_state, threshold)
                self._record(rnd, "server", AGGREGATE, server_metrics)
            n_ok = len(trained.accepted)
            costs = self._round_costs(rnd, time.monotonic() - t0, n_ok, prior_seconds)
            costs.update(round_privacy(self.cfg.federated.privacy, rnd))  # epsilon spent so far (DP runs)
            self._record(rnd, "round", AGGREGATE, costs)
            # Fused, before the last round, this round's model is pending: its model file waits for its metrics
            # (next round); the server state written here holds the model, so a resumed run loses nothing.
            own = next((v for v in evaluated if v.round == rnd), None)
            self._checkpoint(rnd, own)
            shown = evaluated[-1] if evaluated else Validation(0, {})
            done = rnd - first + 1
            eta = (time.monotonic() - started) / done * (total - rnd)
            log.info(
                "round %d/%d | %d sites trained, loss %.3f | val (round %d model) %s | %.0fs "
                "(elapsed %.0fs, ETA %.0fs)",
                rnd,
                total,
                n_ok,
                train_metrics.get(keys.LOSS, float("nan")),
                shown.round,
                _headline(shown.metrics) or "n/a",
                time.monotonic() - t0,
                time.monotonic() - started,
                eta,
            )
            if self.stop_after is not None and rnd >= self.stop_after:
                break
        return self.state


def _headline(metrics: dict[str, Any]) -> str:
    """The per-task headline metrics and ``mean_score`` of a validation, for the round's log line."""
    return "  ".join(
        f"{k} {v:.3f}"
        for k, v in metrics.items()
        if k.split("/")[-1] in ("auc", "dice", "map50") or k == "mean_score"
        if isinstance(v, float) and not math.isnan(v)
    )

"""ServerApp (``server.app:app``): read the run config once, build the strategy, run the rounds, save results.

Run config keys (``[tool.flwr.app.config]`` in pyproject.toml, or ``flwr run --run-config``):
``experiment`` (YAML path), ``overrides`` (``;``-separated ``KEY=VALUE``), ``output-dir``, ``run-name``,
``resume`` (continue ``<output-dir>/<run-name>`` from its last completed round).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from mtmedformer.atomic import atomic_write_text
from mtmedformer.config import ExperimentConfig, config_from_dict, to_dict
from mtmedformer.config.retired import drop_retired_keys
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.engine.loop import evaluate
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import make_loader
from mtmedformer.engine.warm_start import load_pretrained_heads
from mtmedformer.errors import ConfigError
from mtmedformer.logs import setup_logging
from mtmedformer.models.pretrained import load_pretrained_encoder
from server import cross_site
from server.privacy import privacy_summary
from server.report import write_report
from server.results import write_results
from server.rounds import RoundLoop
from server.run_lock import RunFolderLock
from server.settings import ServerSettings
from server.state import ResumeError, ServerState
from server.strategy_factory import build_strategy

log = logging.getLogger(__name__)
app = ServerApp()


def initial_state(cfg: ExperimentConfig) -> ServerState:
    """Round-0 state: the seeded initial global model, started from ``model.pretrained`` if set.

    The encoder comes from that file, and the task heads too with ``model.pretrained_heads``. Only the server
    reads the file: the sites receive its weights with the first round's message, so a site needs neither the
    file nor a path to it.
    """
    seed_everything(cfg.train.seed)
    model = build_model_and_loss(cfg).model
    if cfg.model.pretrained:
        load_pretrained_encoder(model.encoder, cfg.model.pretrained)
    if cfg.model.pretrained_heads:
        load_pretrained_heads(model, cfg.model.pretrained)
    return ServerState(round=0, global_state={k: v.clone() for k, v in model.state_dict().items()},
                       config=to_dict(cfg))


def pooled_test_evaluator(
    cfg: ExperimentConfig,
) -> Callable[[int, dict[str, torch.Tensor], float | None], dict[str, Any]]:
    """Server-side evaluation of the global model on the pooled test split of ``cfg.data``.

    Only meaningful where the server can read the data (simulation, or a public benchmark set); with
    ``federated.server_evaluation: false`` (the default) the server never touches images. A binary classifier
    is also scored at the given threshold (the one the sites chose on validation), as the sites' test splits are.
    """
    test_set = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed).get("test")
    if test_set is None:
        raise ConfigError("federated.server_evaluation: the data has no test split to evaluate on at the server")
    objects = build_model_and_loss(cfg)
    loader = make_loader(test_set, cfg, train=False)

    def evaluate_global(server_round: int, state: dict[str, torch.Tensor], threshold: float | None) -> dict[str, Any]:
        objects.model.load_state_dict(state)
        metrics = evaluate(objects.model, loader, len(cfg.data.classes), threshold=threshold)
        return {k: (float("nan") if v is None else v) for k, v in metrics.items()}

    return evaluate_global


def open_run(settings: ServerSettings, cfg: ExperimentConfig, run_dir: Path) -> ServerState:
    """Start a new run in ``run_dir``, or reopen it to resume; the caller holds the folder's lock.

    A resumed run's saved config passes through :func:`~mtmedformer.config.retired.drop_retired_keys`, as a
    checkpoint's does, so a run saved before a setting was removed still resumes.

    Raises
    ------
    ResumeError
        When resuming a run whose saved config differs from the given one, or that has no state; or when
        starting a new run in a folder that already holds one.
    ConfigError
        When the saved config holds a removed setting at a value that no longer exists.
    """
    if settings.resume:
        state = ServerState.load(run_dir / "server_state.pt")
        if config_from_dict(drop_retired_keys(state.config)) != cfg:
            raise ResumeError(
                f"{run_dir} was started with another experiment config; resume with the same config and overrides "
                f"(see {run_dir / 'config.yaml'}) or start a new run"
            )
        log.info("resuming %s after round %d of %d", run_dir, state.round, cfg.federated.rounds)
        return state
    if (run_dir / "server_state.pt").exists():
        raise ResumeError(f"{run_dir} already holds a run: set resume=true to continue it, or choose another run-name")
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return initial_state(cfg)


def run_experiment(grid: Grid, settings: ServerSettings, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) a federated experiment and write its results; return the report's headline summary.

    The run folder is locked (:class:`~server.run_lock.RunFolderLock`) from before its config is written until
    this returns, so a second server with the same ``run-name`` stops with an error instead of sharing it.
    """
    cfg = settings.load_experiment()
    run_dir = settings.run_dir(cfg, time.strftime("%Y%m%d-%H%M%S"))
    if settings.resume and not run_dir.is_dir():
        raise ResumeError(f"{run_dir} does not exist: nothing to resume; check output-dir and run-name")
    with RunFolderLock(run_dir):
        return _run_locked(grid, settings, cfg, run_dir, stop_after)


def _run_locked(
    grid: Grid, settings: ServerSettings, cfg: ExperimentConfig, run_dir: Path, stop_after: int | None
) -> dict[str, Any]:
    state = open_run(settings, cfg, run_dir)
    strategy = build_strategy(cfg)
    strategy.load_state_dict(state.strategy)
    started = time.monotonic()
    server_evaluate = pooled_test_evaluator(cfg) if cfg.federated.server_evaluation else None
    loop = RoundLoop(grid, strategy, cfg, run_dir, state, server_evaluate=server_evaluate, stop_after=stop_after)
    state = loop.run()
    summary: dict[str, Any] = {
        "strategy": cfg.federated.strategy,
        "rounds completed": f"{state.round} of {cfg.federated.rounds}",
        "sites": ", ".join(sorted(set(state.node_sites.values()))),
        "tasks": ", ".join(cfg.model.tasks),
        "model": f"{cfg.model.arch} {cfg.model.preset}, {cfg.data.image_size} px",
        "best round (val mean score)": state.best.get("round", "n/a"),
        "wall time of this session (s)": round(time.monotonic() - started, 1),
        **privacy_summary(cfg.federated.privacy, state.round),
        "results": str(run_dir),
    }
    if state.round >= cfg.federated.rounds:
        if not any(r["phase"] == "test" for r in state.history):
            loop.evaluate_split(state.round, "test")  # final global model on every site's test split
            write_results(run_dir, state.history)
            state.save(run_dir / "server_state.pt")
        if cfg.federated.cross_site_evaluation and not cross_site.is_done(run_dir):
            cross_site.run_cross_site(run_dir, state.global_state, loop.evaluate_everywhere, cfg.model.tasks)
            write_results(run_dir, state.history)  # its failed replies, if any
            state.save(run_dir / "server_state.pt")
        report = write_report(run_dir, state.history, summary)
        log.info("finished: report %s", report)
    return summary


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point."""
    setup_logging()
    settings = ServerSettings.from_run_config(context.run_config)
    run_experiment(grid, settings)

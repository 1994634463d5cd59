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
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.engine.loop import evaluate
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import make_loader
from mtmedformer.errors import ConfigError
from mtmedformer.logs import setup_logging
from server.report import write_report
from server.results import write_results
from server.rounds import RoundLoop
from server.settings import ServerSettings
from server.state import ResumeError, ServerState
from server.strategy_factory import build_strategy

log = logging.getLogger(__name__)
app = ServerApp()


def initial_state(cfg: ExperimentConfig) -> ServerState:
    """Round-0 state: the seeded initial global model."""
    seed_everything(cfg.train.seed)
    model = build_model_and_loss(cfg).model
    return ServerState(round=0, global_state={k: v.clone() for k, v in model.state_dict().items()},
                       config=to_dict(cfg))


def pooled_test_evaluator(cfg: ExperimentConfig) -> Callable[[int, dict[str, torch.Tensor]], dict[str, Any]]:
    """Server-side evaluation of the global model on the pooled test split of ``cfg.data``.

    Only meaningful where the server can read the data (simulation, or a public benchmark set); with
    ``federated.server_evaluation: false`` (the default) the server never touches images.
    """
    test_set = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed).get("test")
    if test_set is None:
        raise ConfigError("federated.server_evaluation: the data has no test split to evaluate on at the server")
    objects = build_model_and_loss(cfg)
    loader = make_loader(test_set, cfg, train=False)

    def evaluate_global(server_round: int, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        objects.model.load_state_dict(state)
        metrics = evaluate(objects.model, loader, len(cfg.data.classes))
        return {k: (float("nan") if v is None else v) for k, v in metrics.items()}

    return evaluate_global


def open_run(settings: ServerSettings, cfg: ExperimentConfig) -> tuple[Path, ServerState]:
    """Create a new run folder, or reopen one to resume.

    Raises
    ------
    ResumeError
        When resuming a run whose saved config differs from the given one, or that has no state.
    """
    run_dir = settings.run_dir(cfg, time.strftime("%Y%m%d-%H%M%S"))
    if settings.resume:
        state = ServerState.load(run_dir / "server_state.pt")
        if config_from_dict(state.config) != cfg:
            raise ResumeError(
                f"{run_dir} was started with another experiment config; resume with the same config and overrides "
                f"(see {run_dir / 'config.yaml'}) or start a new run"
            )
        log.info("resuming %s after round %d of %d", run_dir, state.round, cfg.federated.rounds)
        return run_dir, state
    if (run_dir / "server_state.pt").exists():
        raise ResumeError(f"{run_dir} already holds a run: set resume=true to continue it, or choose another run-name")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run_dir, initial_state(cfg)


def run_experiment(grid: Grid, settings: ServerSettings, stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) a federated experiment and write its results; return the report's headline summary."""
    cfg = settings.load_experiment()
    run_dir, state = open_run(settings, cfg)
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
        "results": str(run_dir),
    }
    if state.round >= cfg.federated.rounds:
        if not any(r["phase"] == "test" for r in state.history):
            loop.evaluate_split(state.round, "test")  # final global model on every site's test split
            write_results(run_dir, state.history)
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

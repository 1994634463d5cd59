"""Per-message view of a site: its config, data, local state and seeds (Flower types in, library types out)."""

from __future__ import annotations

import functools
import io
import zlib
from dataclasses import dataclass
from typing import Any

import torch
import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from torch import nn
from torch.utils.data import DataLoader, Dataset

from client.site_state import SiteStateStore
from mtmedformer.config import ExperimentConfig, config_from_dict
from mtmedformer.data.site import SiteData, deployed_site, simulated_site
from mtmedformer.engine.device import resolve_device, to_cpu
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import make_loader
from mtmedformer.errors import ConfigError
from strategies import keys

EXPERIMENT = "experiment"  # ConfigRecord key: the resolved experiment config as YAML text
LOSS_STATE = "mtmedformer.loss"  # node-state keys: learned task weights and optimizer state stay at the site
OPTIMIZER_STATE = "mtmedformer.optimizer"
STATE_DIR = "state-dir"  # node-config key: a writable folder for that state, kept across Flower runs
SIMULATION_STATE_DIR = "site-state-dir"  # run-config key: the same for simulated sites (one machine, one folder)


@functools.lru_cache(maxsize=4)
def _parse_experiment(text: str) -> ExperimentConfig:
    return config_from_dict(yaml.safe_load(text))


@functools.lru_cache(maxsize=8)
def _site_data(cfg: ExperimentConfig, node_items: tuple[tuple[str, Any], ...]) -> SiteData:
    node = dict(node_items)
    if "data-manifest" in node:
        return deployed_site(cfg, str(node["data-manifest"]), node.get("site-name") or None)
    if "partition-id" in node and "num-partitions" in node:
        return simulated_site(cfg, int(node["partition-id"]), int(node["num-partitions"]))
    raise ConfigError(
        "node config: set data-manifest (and site-name) with flower-supernode --node-config "
        "\"data-manifest='/data/manifest.csv' site-name='hospital-a'\"; simulation sets partition-id/num-partitions"
    )


@dataclass(frozen=True)
class SavedState:
    """What a site keeps between rounds: its learned task weights and (optionally) its optimizer state."""

    loss: dict[str, torch.Tensor] | None = None  # the loss module's state_dict (uncertainty weighting)
    optimizer: dict[str, Any] | None = None  # the optimizer's state_dict (federated.keep_optimizer_state)


@dataclass
class SiteSession:
    """What one handler call needs: config, data, round, run name and the node's persistent state."""

    cfg: ExperimentConfig
    data: SiteData
    context: Context
    server_round: int
    run_name: str = ""  # the experiment run's name from the server (stable across resumed Flower runs)

    @property
    def name(self) -> str:
        """The site's name."""
        return self.data.name

    def round_seed(self) -> int:
        """A seed unique to (experiment seed, round, site): reruns and resumed runs train identically."""
        return zlib.crc32(f"{self.cfg.train.seed}/{self.server_round}/{self.name}".encode())

    def _store(self) -> SiteStateStore | None:
        """The site's state files when the node config sets ``state-dir`` (else Flower's per-run node state).

        Simulated sites (``partition-id`` in the node config) share the machine: the run config's
        ``site-state-dir`` serves them all. A deployed site takes only its own node config's folder.
        """
        node = self.context.node_config
        root = node.get(STATE_DIR)
        if not root and "partition-id" in node:
            root = self.context.run_config.get(SIMULATION_STATE_DIR)
        if not root:
            return None
        if not self.run_name:
            raise ConfigError("the server sent no run name for the site state: server and client app versions differ")
        return SiteStateStore(str(root), self.run_name, self.name)

    def saved_state(self, before_round: int) -> SavedState:
        """The state the site kept after the newest round it trained before ``before_round``.

        Train messages of round ``r`` ask for ``before_round=r``; evaluations of round ``r``'s global model,
        which follow its training, for ``r + 1``. Without ``state-dir`` this is Flower's node state, which
        holds the latest round's state and starts empty in every Flower run.
        """
        store = self._store()
        if store is not None:
            saved = store.load(before_round) or {}
            return SavedState(saved.get("loss"), saved.get("optimizer"))
        state = self.context.state
        loss = state[LOSS_STATE].to_torch_state_dict() if LOSS_STATE in state else None
        optimizer = None
        if OPTIMIZER_STATE in state:
            optimizer = torch.load(io.BytesIO(state[OPTIMIZER_STATE]["state"]), weights_only=True)
        return SavedState(loss, optimizer)

    def model_and_loss(self, arrays: ArrayRecord, saved: SavedState) -> tuple[nn.Module, nn.Module]:
        """Model and loss with the global weights (strict) and the site's loss weights, on ``train.device``."""
        objects = build_model_and_loss(self.cfg)
        objects.model.load_state_dict(arrays.to_torch_state_dict(), strict=True)
        if saved.loss:
            objects.loss_fn.load_state_dict(saved.loss)
        device = resolve_device(self.cfg.train.device)  # "auto": this site's GPU if it has one
        return objects.model.to(device), objects.loss_fn.to(device)

    def save_local_state(self, loss_fn: nn.Module, optimizer_state: dict[str, Any] | None) -> None:
        """Keep the site's learned task weights (and optimizer state if configured) after this round's training."""
        loss = to_cpu(loss_fn.state_dict()) if len(loss_fn.state_dict()) else None
        optimizer = to_cpu(optimizer_state) if self.cfg.federated.keep_optimizer_state and optimizer_state else None
        store = self._store()
        if store is not None:
            if loss is not None or optimizer is not None:
                store.save(self.server_round, {"loss": loss, "optimizer": optimizer})
            return
        if loss is not None:
            self.context.state[LOSS_STATE] = ArrayRecord(loss)
        if optimizer is not None:
            buffer = io.BytesIO()
            torch.save(optimizer, buffer)
            self.context.state[OPTIMIZER_STATE] = ConfigRecord({"state": buffer.getvalue()})

    def loader(self, dataset: Dataset) -> DataLoader:
        """An evaluation DataLoader for ``dataset``."""
        return make_loader(dataset, self.cfg, train=False)


def open_session(msg: Message, context: Context) -> SiteSession:
    """Read the experiment config from the message, set torch threads, and load (once) the site's data."""
    config = msg.content[keys.CONFIG]
    if EXPERIMENT not in config:
        raise ConfigError("the server sent no experiment config: server and client app versions differ")
    cfg = _parse_experiment(str(config[EXPERIMENT]))
    torch.set_num_threads(cfg.federated.client_threads)
    data = _site_data(cfg, tuple(sorted(context.node_config.items())))
    return SiteSession(cfg, data, context, int(config.get(keys.SERVER_ROUND, 0)), str(config.get(keys.RUN_NAME, "")))

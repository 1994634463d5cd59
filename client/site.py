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


@dataclass
class SiteSession:
    """What one handler call needs: config, data, round and the node's persistent state."""

    cfg: ExperimentConfig
    data: SiteData
    context: Context
    server_round: int

    @property
    def name(self) -> str:
        """The site's name."""
        return self.data.name

    def round_seed(self) -> int:
        """A seed unique to (experiment seed, round, site): reruns and resumed runs train identically."""
        return zlib.crc32(f"{self.cfg.train.seed}/{self.server_round}/{self.name}".encode())

    def model_and_loss(self, arrays: ArrayRecord) -> tuple[nn.Module, nn.Module]:
        """Model and loss with the global weights (strict) and the site's loss weights, on ``train.device``."""
        objects = build_model_and_loss(self.cfg)
        objects.model.load_state_dict(arrays.to_torch_state_dict(), strict=True)
        if LOSS_STATE in self.context.state:
            objects.loss_fn.load_state_dict(self.context.state[LOSS_STATE].to_torch_state_dict())
        device = resolve_device(self.cfg.train.device)  # "auto": this site's GPU if it has one
        return objects.model.to(device), objects.loss_fn.to(device)

    def load_optimizer_state(self) -> dict[str, Any] | None:
        """The optimizer state kept from the previous round, when ``federated.keep_optimizer_state``."""
        if not self.cfg.federated.keep_optimizer_state or OPTIMIZER_STATE not in self.context.state:
            return None
        blob = self.context.state[OPTIMIZER_STATE]["state"]
        return torch.load(io.BytesIO(blob), weights_only=True)

    def save_local_state(self, loss_fn: nn.Module, optimizer_state: dict[str, Any] | None) -> None:
        """Keep the site's learned task weights (and optimizer state if configured) in the node's state."""
        if len(loss_fn.state_dict()):
            self.context.state[LOSS_STATE] = ArrayRecord(to_cpu(loss_fn.state_dict()))
        if self.cfg.federated.keep_optimizer_state and optimizer_state is not None:
            buffer = io.BytesIO()
            torch.save(to_cpu(optimizer_state), buffer)
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
    return SiteSession(cfg, data, context, int(config.get(keys.SERVER_ROUND, 0)))

"""A site's own training state on its disk, per experiment run and round, so that it outlives a Flower run.

Flower keeps a node's ``context.state`` per *Flower run*: a server restarted with ``resume=true`` submits a
new Flower run, and a restarted SuperNode starts empty, so the site's learned task weights (uncertainty
weighting) and, with ``federated.keep_optimizer_state``, its optimizer state would silently start afresh and
the resumed run would not be the run it continues. With ``state-dir`` in the SuperNode's ``--node-config`` the
ClientApp writes that state after each round it trains to ``<state-dir>/<run-name>/<site>/round_<r>.pt``
(atomically) and reads, before training round ``r``, the newest file of a round before ``r``: a resumed round
starts from exactly what the uninterrupted run had, even when the killed run had trained it already.

The files never leave the site; each holds a few tensors for the loss weights (and, with the optimizer
state, about two model-sized buffers), and only the last :data:`KEEP_ROUNDS` are kept.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from mtmedformer.atomic import atomic_torch_save
from mtmedformer.errors import ConfigError
from mtmedformer.folders import is_plain_folder_name

KEEP_ROUNDS = 3  # round files kept per (run, site): the newest is what the next round needs
_FILE = re.compile(r"round_(\d{4,})\.pt")


def _folder_name(kind: str, value: str) -> str:
    """``value`` when it is a plain folder name by the rule the server applies to run names."""
    if not is_plain_folder_name(value):
        raise ConfigError(
            f"site state: the {kind} {value!r} is not a plain folder name (no '/', '\\', leading '.' or '~'); "
            "rename it or remove state-dir from the node config"
        )
    return value


class SiteStateStore:
    """Round files of one site in one experiment run.

    Parameters
    ----------
    root
        The node config's ``state-dir``: a folder the SuperNode's user can write (not the read-only data).
    run_name
        The experiment run's name as the server sends it (its results folder name), stable across resumes.
    site
        The site's name.
    """

    def __init__(self, root: str | Path, run_name: str, site: str) -> None:
        self.folder = Path(root) / _folder_name("run name", run_name) / _folder_name("site name", site)

    def _rounds(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _FILE.fullmatch(p.name)))

    def _path(self, rnd: int) -> Path:
        return self.folder / f"round_{rnd:04d}.pt"

    def load(self, before_round: int) -> dict[str, Any] | None:
        """The state saved after the newest round before ``before_round``, or ``None`` when there is none."""
        earlier = [r for r in self._rounds() if r < before_round]
        if not earlier:
            return None
        path = self._path(earlier[-1])
        try:
            return torch.load(io.BytesIO(path.read_bytes()), weights_only=True, map_location="cpu")
        except Exception as err:  # a file this store did not write whole (written atomically) or edited by hand
            first_line = (str(err).splitlines() or [""])[0][:200]  # torch's unpickling errors run for pages
            raise ConfigError(
                f"site state: cannot read {path} ({type(err).__name__}: {first_line}); delete it (the site then "
                "restarts its learned task weights) or restore it from a backup"
            ) from err

    def save(self, rnd: int, state: dict[str, Any]) -> None:
        """Write the state after training round ``rnd``; keep the newest :data:`KEEP_ROUNDS` rounds' files."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(self._path(rnd), state)
            for old in self._rounds()[:-KEEP_ROUNDS]:
                self._path(old).unlink(missing_ok=True)
        except OSError as err:
            raise ConfigError(
                f"site state: cannot write {self.folder} ({err.strerror or err}); give the SuperNode's user a "
                "writable folder there (docker/compose.yml mounts a volume at /var/lib/flwr/state) or remove "
                "state-dir from the node config"
            ) from err

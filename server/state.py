"""The server's resumable state, written atomically after every round."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtmedformer.atomic import atomic_torch_save
from mtmedformer.errors import MTMedFormerError

FORMAT = "mtmedformer-fl-server-state"
VERSION = 1


class ResumeError(MTMedFormerError):
    """The run folder cannot be resumed (no state, another config, or a damaged file)."""


@dataclass
class ServerState:
    """Everything needed to continue a run after the last completed round.

    Attributes
    ----------
    round
        Last completed round (0 before the first).
    global_state
        The global model's state dict.
    strategy
        The strategy's cross-round state (:meth:`strategies.server_strategy.ServerStrategy.state_dict`).
    history
        One row per (round, phase, site or aggregate) written so far.
    config
        The experiment config as a plain dict (a resumed run must use the same one).
    best
        ``{"round": r, "score": s}`` of the best round so far by the monitored validation score.
    node_sites
        Node id -> site name learned from replies, for naming sites that later fail.
    """

    round: int
    global_state: dict[str, torch.Tensor]
    strategy: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    node_sites: dict[int, str] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write the state atomically (a kill mid-write keeps the previous round's file)."""
        atomic_torch_save(path, {"format": FORMAT, "version": VERSION, **self.__dict__})

    @classmethod
    def load(cls, path: Path) -> ServerState:
        """Read a state written by :meth:`save`.

        Raises
        ------
        ResumeError
            If the file is missing, damaged, or of another format.
        """
        if not path.is_file():
            raise ResumeError(f"{path} not found: nothing to resume; start a new run (resume=false)")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign file
            raise ResumeError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("version") != VERSION:
            raise ResumeError(f"{path} is not a server state of version {VERSION}")
        fields = {k: v for k, v in payload.items() if k not in ("format", "version")}
        return cls(**fields)

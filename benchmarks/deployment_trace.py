"""Where a deployed round's time goes: phases of each message exchange, read from a SuperNode's DEBUG log.

With ``FLWR_LOG_LEVEL=DEBUG`` Flower 1.42's SuperNode writes timestamped lines for the steps of every message
it handles. One exchange (a train or evaluate message of one round at one site) is cut into:

- ``pull → spawn``: from the SuperNode receiving the message (after its up-to-3-s poll of the SuperLink) to
  SuperExec starting a fresh ``flwr-clientapp`` process (SuperExec polls for tasks every second);
- ``spawn → app loaded``: the new process pulls the message and the app bundle and installs the bundle;
- ``app loaded → reply``: our ClientApp in that fresh process: imports (torch, MONAI), site data, model,
  then the compute itself;
- ``reply → sent``: the SuperNode pushes the reply (the model arrays, one object per tensor chunk) to the
  SuperLink.

The time between two exchanges at a site (``idle``) is spent at the server and in polling: the ServerApp
polls for replies every 0.2 s (``server/exchange.py``; Flower's own grid: every 3 s), waits for the slowest
site, aggregates, checkpoints, and the SuperNode polls for the next message every 3 s.
Usage: ``python -m benchmarks.round_overhead --deployment --trace``.
"""

from __future__ import annotations

import itertools
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAMP = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR)\s+(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}):\s+(.*)$")
EVENTS = {  # log text -> event name
    "Receiving: ": "received",
    "Start `flwr-clientapp` process": "spawned",
    "Loading ClientApp": "loaded",
    "Runtime.PushMessages": "replied",
    "Sent successfully": "sent",
}
PHASES = (
    ("pull → spawn", "received", "spawned"),
    ("spawn → app loaded", "spawned", "loaded"),
    ("app loaded → reply", "loaded", "replied"),
    ("reply → sent", "replied", "sent"),
)


@dataclass
class Exchange:
    """One message handled by a SuperNode: its type and the time of each event (seconds since the epoch)."""

    kind: str
    times: dict[str, float] = field(default_factory=dict)

    def phase(self, start: str, end: str) -> float | None:
        """Seconds from event ``start`` to event ``end``; None when either is missing."""
        if start in self.times and end in self.times:
            return self.times[end] - self.times[start]
        return None


def parse_supernode_log(text: str) -> list[Exchange]:
    """The exchanges in a SuperNode DEBUG log, in order; lines without a Flower timestamp are ignored."""
    exchanges: list[Exchange] = []
    for raw in text.splitlines():
        match = STAMP.match(ANSI.sub("", raw).strip())
        if not match:
            continue
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        message = match.group(2)
        event = next((name for text_, name in EVENTS.items() if text_ in message), None)
        if event == "received":
            kind = message.split("Receiving: ", 1)[1].split(" ", 1)[0]
            exchanges.append(Exchange(kind, {"received": stamp}))
        elif event is not None and exchanges and event not in exchanges[-1].times:
            exchanges[-1].times[event] = stamp
    return exchanges


def idle_gaps(exchanges: list[Exchange]) -> list[float]:
    """Seconds between one exchange's reply being sent and the next message being received."""
    return [
        b.times["received"] - a.times["sent"]
        for a, b in itertools.pairwise(exchanges)
        if "sent" in a.times
    ]


def summarise_trace(logs: dict[str, str], skip_first_round: bool = True) -> dict[str, dict[str, float]]:
    """Median seconds of every phase per message kind over all sites (``logs``: site -> log text).

    The first train and evaluate exchanges are skipped by default (they also pay first-time costs).
    """
    phases: dict[str, dict[str, list[float]]] = {}
    for text in logs.values():
        exchanges = parse_supernode_log(text)
        seen: set[str] = set()
        gaps = idle_gaps(exchanges)
        for i, exchange in enumerate(exchanges):
            first = exchange.kind not in seen
            seen.add(exchange.kind)
            if first and skip_first_round:
                continue
            rows = phases.setdefault(exchange.kind, {})
            for name, start, end in PHASES:
                value = exchange.phase(start, end)
                if value is not None:
                    rows.setdefault(name, []).append(value)
            if i < len(gaps):
                rows.setdefault("idle until the next message", []).append(gaps[i])
    return {kind: {k: statistics.median(v) for k, v in rows.items()} for kind, rows in phases.items()}


def read_site_logs(log_dir: Path, sites: list[str]) -> dict[str, str]:
    """The SuperNode logs the deployment harness wrote (``<log_dir>/<site>.log``)."""
    return {site: (log_dir / f"{site}.log").read_text(errors="replace") for site in sites}


def format_trace(summary: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per phase, one column per message kind."""
    kinds = sorted(summary)
    names = [name for name, _, _ in PHASES] + ["idle until the next message"]
    lines = ["| phase (median s) | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for name in names:
        cells = [f"{summary[k][name]:.1f}" if name in summary[k] else "–" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""``mtmedformer-supernode``: Flower's ``flower-supernode`` (same flags) with its message polling configurable.

Flower 1.42's SuperNode (``flwr/supernode/start_client_internal.py``) sleeps a fixed 3 s after every pull
that brought no message, and checks every 0.5 s whether the ClientApp has replied. With one message exchange
per round (fused evaluation) the 3 s wait lands in every round: the server has aggregated and sent the next
round's message, and the site is still asleep. Nothing in Flower 1.42 configures it, so this entry point
replaces those two waits (and no other) before it hands over to ``flower-supernode``:

- ``MTMEDFORMER_SUPERNODE_POLL_S`` (default :data:`DEFAULT_POLL_S`): seconds between pulls while idle; each
  pull is one small HTTPS request to the SuperLink per site, so a federation of many sites may want more.
  ``3`` keeps Flower's own behaviour (nothing is replaced).
- the wait for the local reply becomes ``min(poll, 0.1)`` s: a look at the SuperNode's in-memory state, no
  network.

Only the pinned Flower version is patched; with another one, or if the waits are no longer where they were,
the SuperNode runs unchanged and says so.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
import time
from typing import Any

ENV = "MTMEDFORMER_SUPERNODE_POLL_S"
DEFAULT_POLL_S = 0.5
FLOWER_VERSION = "1.42.0"  # the version whose waits are replaced (pyproject pins it)
_FLOWER_IDLE_S, _FLOWER_REPLY_S = 3, 0.5  # the literal sleeps in flwr/supernode/start_client_internal.py

log = logging.getLogger(__name__)


class PollClock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop: two of its sleeps are shortened.

    Parameters
    ----------
    idle_s
        Replaces the 3 s sleep after an empty pull.
    reply_s
        Replaces the 0.5 s sleep while waiting for the ClientApp's reply.
    """

    def __init__(self, idle_s: float, reply_s: float) -> None:
        self.idle_s, self.reply_s = idle_s, reply_s

    def sleep(self, seconds: float) -> None:
        """``time.sleep``, with Flower's two polling intervals replaced."""
        if seconds == _FLOWER_IDLE_S:
            seconds = self.idle_s
        elif seconds == _FLOWER_REPLY_S:
            seconds = self.reply_s
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def poll_seconds(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """The idle poll interval from :data:`ENV` (seconds, 0.05--60).

    Raises
    ------
    SystemExit
        With a message naming the variable when it is not a number in range.
    """
    raw = environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_POLL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.05 <= value <= 60:  # also NaN
        raise SystemExit(f"error: {ENV}={raw!r}: expected seconds between 0.05 and 60 (Flower's own: 3)")
    return value


def install(poll_s: float) -> bool:
    """Shorten the SuperNode loop's waits to ``poll_s`` (idle) and ``min(poll_s, 0.1)`` (reply); True if done."""
    import flwr
    from flwr.supernode import start_client_internal as loop

    if poll_s == _FLOWER_IDLE_S:
        return False
    source = inspect.getsource(loop)
    expected = f"time.sleep({_FLOWER_IDLE_S})", f"time.sleep({_FLOWER_REPLY_S})"
    if flwr.__version__ != FLOWER_VERSION or not all(s in source for s in expected):
        log.warning(
            "%s is ignored: it applies to Flower %s, this is %s; the SuperNode polls every %d s",
            ENV, FLOWER_VERSION, flwr.__version__, _FLOWER_IDLE_S,
        )  # fmt: skip
        return False
    loop.time = PollClock(poll_s, min(poll_s, 0.1))  # type: ignore[assignment]
    return True


def main() -> None:
    """Run ``flower-supernode`` with the arguments given, polling every ``MTMEDFORMER_SUPERNODE_POLL_S``."""
    poll_s = poll_seconds()
    install(poll_s)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv[0] = "flower-supernode"  # its --help and error messages name Flower's command
    flower_supernode()


if __name__ == "__main__":
    main()

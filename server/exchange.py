"""One message exchange with the sites: push the messages, then collect the replies as soon as they arrive.

Flower 1.42's ``Grid.send_and_receive`` pulls replies every 3 seconds, so every exchange waits on average
1.5 s (up to 3 s) after the last site replied, in every round. Pulling is one cheap request to the
SuperLink that returns only the replies already there; :func:`send_and_receive` pulls every ``poll_s``
seconds instead (0.2 s: five requests a second while a round runs) and is otherwise the same contract:
replies that arrived within ``timeout``, in arrival order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

POLL_S = 0.2  # seconds between two pulls of replies


def send_and_receive(
    grid: Grid, messages: Iterable[Message], timeout: float | None, poll_s: float = POLL_S
) -> list[Message]:
    """Push ``messages`` and return the replies that arrived within ``timeout`` seconds (None: wait for all).

    Messages that could not be pushed (Flower reports them as ``None``) get no reply, like a site that never
    answered; the caller reports them as dropped.
    """
    pending = {message_id for message_id in grid.push_messages(messages) if message_id}
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        arrived = list(grid.pull_messages(sorted(pending)))
        replies.extend(arrived)
        pending.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
    return replies

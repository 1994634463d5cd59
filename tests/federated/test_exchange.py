"""The round loop's message exchange: replies collected as they arrive, timeout honoured, unpushed skipped."""

import time
from types import SimpleNamespace

from server.exchange import send_and_receive


class ScriptedGrid:
    """Replies to message ``i`` become available at pull number ``ready_at[i]`` (None: never)."""

    def __init__(self, ready_at, pushed_ids=None):
        self.ready_at = ready_at
        self.pushed_ids = pushed_ids
        self.pulls = 0

    def push_messages(self, messages):
        messages = list(messages)
        return self.pushed_ids if self.pushed_ids is not None else [f"m{i}" for i in range(len(messages))]

    def pull_messages(self, message_ids):
        self.pulls += 1
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))
            for i in message_ids
            if self.ready_at[int(i[1:])] is not None and self.ready_at[int(i[1:])] == self.pulls
        ]


def test_replies_are_collected_as_soon_as_they_arrive():
    # Prepare: the second reply is there on the third pull
    grid = ScriptedGrid([1, 3])
    # Execute
    start = time.monotonic()
    replies = send_and_receive(grid, [object(), object()], timeout=60.0, poll_s=0.05)
    # Assert
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1"]
    assert grid.pulls == 3
    assert time.monotonic() - start < 1.0  # two short polls, not Flower's 3-second sleeps


def test_a_site_that_never_replies_is_given_up_at_the_timeout():
    # Prepare
    grid = ScriptedGrid([1, None])
    # Execute
    start = time.monotonic()
    replies = send_and_receive(grid, [object(), object()], timeout=0.3, poll_s=0.05)
    elapsed = time.monotonic() - start
    # Assert
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 0.3 <= elapsed < 1.0


def test_messages_flower_could_not_push_are_not_waited_for():
    # Prepare: the second message was not pushed (Flower returns None for it)
    grid = ScriptedGrid([1, None], pushed_ids=["m0", None])
    # Execute
    replies = send_and_receive(grid, [object(), object()], timeout=None, poll_s=0.05)
    # Assert
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert grid.pulls == 1

"""Fault injection for resilience tests: the real ClientApp handlers behind a mod that fails on purpose.

A test that needs a site to fail builds :func:`faulty_client_app` and runs it instead of ``client.app:app``
(in process with :class:`fltesting.inprocess.InProcessGrid`, or as the ClientApp component of a test-only app
bundle, :mod:`fltesting.faulty_app`). The shipped ClientApp has no fault switch.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client import app as client
from strategies import keys
from strategies.packing import packing_mod

Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]


class InjectedFault(RuntimeError):
    """Raised on purpose by :func:`fail_at` (its name appears in the server's failure reason)."""


def fail_at(partition: int, server_round: int = 0) -> Mod:
    """A ClientApp mod that raises :class:`InjectedFault` on the node of simulation partition ``partition``.

    Parameters
    ----------
    partition
        The ``partition-id`` (node config) of the failing node.
    server_round
        The round it fails in (the ``server-round`` of the message's config); 0 = every round.
    """

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        here = int(context.node_config.get("partition-id", -1))
        config = msg.content[keys.CONFIG] if msg.has_content() and keys.CONFIG in msg.content else {}
        rnd = int(config.get(keys.SERVER_ROUND, 0))
        if here == partition and server_round in (0, rnd):
            raise InjectedFault(f"fault injected at partition {partition}, round {rnd}, {msg.metadata.message_type}")
        return call_next(msg, context)

    return mod


def faulty_client_app(partition: int, server_round: int = 0) -> ClientApp:
    """The project's ClientApp (same handlers, same packing) whose node ``partition`` fails (see :func:`fail_at`)."""
    app = ClientApp(mods=[packing_mod, fail_at(partition, server_round)])
    app.train()(client.train)
    app.evaluate()(client.evaluate_global)
    return app

"""An in-process Flower Grid: each node is a real ClientApp call with its own Context, in this process.

It delivers messages like a SuperNode would (an exception in the ClientApp becomes an error reply, a node
marked as dropped never answers), without Ray, processes or sockets. Tests use it to exercise the round loop
quickly and deterministically (faults: :mod:`fltesting.faults`); research scripts (``benchmarks/``) use it to
run many small federated experiments sequentially on one machine. Real simulations and deployments use
``flwr run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    """Nodes ``1..n`` with the given node configs, all running ``app``.

    Parameters
    ----------
    app
        The ClientApp to run.
    node_configs
        One node config per node (e.g. ``{"partition-id": 0, "num-partitions": 3}``).
    run_config
        The run config every node sees.
    tamper
        Optional ``(node_id, reply) -> reply`` hook to fabricate malformed replies.
    dropped
        Node ids that never reply (simulated drop-outs / timeouts).
    """

    def __init__(
        self,
        app: ClientApp,
        node_configs: list[dict],
        run_config: dict | None = None,
        tamper: Callable[[int, Message], Message] | None = None,
        dropped: Iterable[int] = (),
    ) -> None:
        self.app = app
        self.contexts = {
            i + 1: Context(run_id=1, node_id=i + 1, node_config=dict(cfg), state=RecordDict(),
                           run_config=dict(run_config or {}))
            for i, cfg in enumerate(node_configs)
        }
        self.tamper = tamper
        self.dropped = set(dropped)
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}  # message id -> reply not yet pulled
        # Messages created outside a ServerApp process need the identity the SuperLink would set.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1

    def set_run(self, run_id: int) -> None:  # pragma: no cover - not used by the loop
        """Ignore: the in-process grid has a single run."""

    @property
    def run(self):  # pragma: no cover - not used by the loop
        """Not available in process."""
        raise NotImplementedError("the in-process grid has no Run object")

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # pragma: no cover
        """Create an instruction message for ``dst_node_id``."""
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type)

    def get_node_ids(self) -> list[int]:
        """Node ids ``1..n``."""
        return sorted(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Deliver each message to its node's ClientApp in turn, keep the replies; return the message ids."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id  # as Flower's grid does before pushing
            ids.append(msg.metadata.message_id)
            self.sent.append(msg)
            node = int(msg.metadata.dst_node_id)
            if node in self.dropped:
                continue
            try:
                reply = self.app(msg, self.contexts[node])
            except Exception as exc:  # a SuperNode turns ClientApp exceptions into error replies
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            if self.tamper is not None:
                reply = self.tamper(node, reply)
            self._replies[msg.metadata.message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """The kept replies to ``message_ids`` (each handed out once)."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Deliver the messages and collect the replies (a dropped node's never comes; no waiting here)."""
        return self.pull_messages(self.push_messages(messages))

"""The ClientApp that Flower loads (``pyproject.toml``): light to import, it runs the handlers where they are warm.

``client/app.py`` holds the handlers; importing it (torch, MONAI, the model library) takes seconds, and a
deployed SuperNode starts a new process for every message. At a deployed site (``data-manifest`` in the node
config) this app therefore hands each message to the site's warm fork server (``client/warm.py``), which has
imported all of that once; in a simulation, in the tests, or with ``MTMEDFORMER_WARM_CLIENT=0`` it imports
``client/app.py`` and runs the handler in this process. The mods (packing, SecAgg+) run here either way, so
the handler sees the same message in both cases.
"""

from __future__ import annotations

import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client import warm
from client.secure_aggregation import secure_aggregation_mod
from strategies.packing import packing_mod

log = logging.getLogger(__name__)
# Model arrays travel packed (strategies/packing.py); SecAgg+ messages go through Flower's protocol mod.
app = ClientApp(mods=[packing_mod, secure_aggregation_mod])


def _handle(kind: str, msg: Message, context: Context) -> Message:
    if warm.enabled(context):
        try:
            return warm.call(kind, msg, context)
        except warm.WarmUnavailable as err:  # nothing ran: run it here, as without the warm server
            log.warning("%s; running this message in the ClientApp process", err)
    from client import app as handlers  # the heavy import: only where no warm server is used

    return handlers.HANDLERS[kind](msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on the site's data (``client.app.train``)."""
    return _handle("train", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on a split of the site's data (``client.app.evaluate_global``)."""
    return _handle("evaluate", msg, context)

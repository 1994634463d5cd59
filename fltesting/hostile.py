"""Hostile replies for the security tests: one site answers every round with a crafted, bad reply.

Each :class:`HostileCase` edits the honest reply the project's ClientApp produced (packed, as it goes on the
wire) into what a broken or malicious site could send instead; :func:`hostile_client_app` runs the real
ClientApp with one partition's replies edited. ``tests/security`` drives every case through the real
screening and aggregation (:func:`run_federated`), and ``benchmarks/security_cases.py`` records what the
server did with each for ``docs/security.md``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ConfigRecord, Context, Message, MessageType, MetricRecord
from flwr.clientapp import ClientApp
from flwr.common.constant import SType
from numpy.lib import format as npy

from client import app as client
from fltesting.inprocess import InProcessGrid
from server.app import run_experiment
from server.results import AGGREGATE
from server.state import ServerState
from strategies import keys
from strategies.packing import LAYOUT, array_view, decode_arrays, pack_content, packing_mod, unpack_content

Edit = Callable[[Message, Message], Message]
"""``(request, honest reply) -> reply sent instead`` (both packed when the server packs)."""

FLOAT = "<f4"  # the dtype of every tensor of the tiny test model


@dataclass(frozen=True)
class HostileCase:
    """One kind of bad reply.

    Attributes
    ----------
    name
        Short identifier (test ids, results rows).
    sends
        What the site sends, in words.
    expected
        A fragment of the rejection reason the server must record for it.
    edit
        Turns the honest reply into the bad one.
    from_round
        The first round whose rejection must give ``expected`` (earlier rounds send another bad reply).
    """

    name: str
    sends: str
    expected: str
    edit: Edit
    from_round: int = 1


def _header(descr: str, shape: tuple[int, ...]) -> bytes:
    stream = io.BytesIO()
    npy.write_array_header_1_0(stream, {"descr": descr, "fortran_order": False, "shape": shape})
    return stream.getvalue()


def _raw_array(descr: str, shape: tuple[int, ...], payload: bytes) -> Array:
    return Array(dtype="float32", shape=shape, stype=SType.NUMPY, data=_header(descr, shape) + payload)


def _add_to_layout(reply: Message, name: str, shape: list[int]) -> None:
    layout = reply.content[LAYOUT]
    shapes = json.loads(str(layout["shapes"]))
    layout["names"] = [*layout["names"], name]
    layout["shapes"] = json.dumps([*shapes, shape])
    layout["dtypes"] = [*layout["dtypes"], FLOAT]


def _edit_arrays(reply: Message, edit: Callable[[dict[str, np.ndarray]], None]) -> Message:
    """Unpack the reply's arrays, apply ``edit`` to them by name (as numpy), pack them again."""
    unpack_content(reply.content)
    arrays = {name: array.numpy().copy() for name, array in reply.content[keys.ARRAYS].items()}
    edit(arrays)
    reply.content[keys.ARRAYS] = type(reply.content[keys.ARRAYS])({k: Array(v) for k, v in arrays.items()})
    pack_content(reply.content)
    return reply


def _first_float(arrays: dict[str, np.ndarray]) -> str:
    return next(k for k, v in arrays.items() if v.dtype.kind == "f" and v.size)


def _metric(reply: Message, key: str, value: float) -> Message:
    reply.content[keys.METRICS][key] = value
    return reply


def _header_overclaims(_: Message, reply: Message) -> Message:
    values = array_view(reply.content[keys.ARRAYS][FLOAT])
    extra = 1000
    reply.content[keys.ARRAYS][FLOAT] = _raw_array(FLOAT, (values.size + extra,), values.tobytes())
    _add_to_layout(reply, "hostile.extra", [extra])  # the layout agrees with the header, the bytes do not
    return reply


def _not_npy(_: Message, reply: Message) -> Message:
    size = array_view(reply.content[keys.ARRAYS][FLOAT]).size
    reply.content[keys.ARRAYS][FLOAT] = Array(dtype="float32", shape=(size,), stype=SType.NUMPY, data=b"\x93garbage")
    return reply


def _object_dtype(_: Message, reply: Message) -> Message:
    size = array_view(reply.content[keys.ARRAYS][FLOAT]).size
    reply.content[keys.ARRAYS][FLOAT] = _raw_array("|O", (size,), b"\x00" * 8 * size)
    return reply


def _overflowing_shape(_: Message, reply: Message) -> Message:
    _add_to_layout(reply, "hostile.huge", [2**32, 2**32])  # 2**64 elements: 0 in int64, so the sizes "match"
    return reply


def _plain_garbage(_: Message, reply: Message) -> Message:
    unpack_content(reply.content)  # a plain ArrayRecord, one Array per tensor
    arrays = reply.content[keys.ARRAYS]
    name = next(iter(arrays.keys()))
    arrays[name] = Array(dtype="float32", shape=(3,), stype=SType.NUMPY, data=b"not an npy file at all")
    return reply


def _extra_metric_key(_: Message, reply: Message) -> Message:
    return _metric(reply, "hostile/extra", 1.0)


def _second_metric_record(_: Message, reply: Message) -> Message:
    reply.content["metrics-2"] = MetricRecord({keys.NUM_EXAMPLES: 1})
    return reply


def _huge_count_and_weights(_: Message, reply: Message) -> Message:
    _metric(reply, keys.NUM_EXAMPLES, 10**12)
    return _edit_arrays(reply, lambda a: a.update({k: v + 1000 for k, v in a.items() if v.dtype.kind == "f"}))


def _fractional_count(_: Message, reply: Message) -> Message:
    return _metric(reply, keys.NUM_EXAMPLES, 0.001)


def _absurd(value: float) -> Edit:
    def edit(_: Message, reply: Message) -> Message:
        def put(arrays: dict[str, np.ndarray]) -> None:
            arrays[_first_float(arrays)].flat[0] = value

        return _edit_arrays(reply, put)

    return edit


def _scaled_update(request: Message, reply: Message) -> Message:
    """The site's own update (local minus global), times 100: a believable direction, an outsized step."""
    sent = decode_arrays(request.content)
    return _edit_arrays(
        reply, lambda a: a.update({k: sent[k] + 100 * (v - sent[k]) for k, v in a.items() if v.dtype.kind == "f"})
    )


def _nan_task_count(_: Message, reply: Message) -> Message:
    return _metric(reply, keys.task_count_key("classification"), math.nan)


def _spoofed_name(request: Message, reply: Message) -> Message:
    """From round 2 on (once every name is known), the site's own reply under another site's name."""
    if int(request.content[keys.CONFIG].get(keys.SERVER_ROUND, 1)) < 2:
        return _not_npy(request, reply) if keys.ARRAYS in reply.content else _dice_1e6(request, reply)
    reply.content[keys.SITE] = ConfigRecord({keys.SITE_NAME: "site-a"})
    return reply


def _dice_one_huge_count(_: Message, reply: Message) -> Message:
    for key, value in (("segmentation/dice", 1.0), ("classification/auc", 1.0), (keys.NUM_EXAMPLES, 10**12)):
        _metric(reply, key, value)
    for task in ("classification", "segmentation", "detection"):
        _metric(reply, keys.task_count_key(task), 10**12)
    return reply


def _dice_1e6(_: Message, reply: Message) -> Message:
    return _metric(reply, "segmentation/dice", 1e6)


def _nan_eval_count(_: Message, reply: Message) -> Message:
    return _metric(reply, keys.task_count_key("segmentation"), math.nan)


def _infinite_auc(_: Message, reply: Message) -> Message:
    return _metric(reply, "classification/auc", math.inf)


TRAIN_CASES = (
    HostileCase("header-overclaims", "a packed array whose npy header (and layout) claim more elements than its "
                "bytes carry", "bytes follow it", _header_overclaims),
    HostileCase("not-npy", "packed array bytes that are not npy at all", "readable .npy header", _not_npy),
    HostileCase("object-dtype", "a packed array with an object-dtype npy header", "not a plain", _object_dtype),
    HostileCase("overflowing-shape", "a layout shape of 2^64 elements (0 when multiplied in int64) with a "
                "matching packed size", "the arrays layout gives", _overflowing_shape),
    HostileCase("plain-garbage", "an unpacked Array whose bytes are garbage", "readable .npy header", _plain_garbage),
    HostileCase("extra-metric-key", "a metric key the other sites do not send", "metric keys differ",
                _extra_metric_key),
    HostileCase("second-metric-record", "a second MetricRecord", "2 MetricRecords", _second_metric_record),
    HostileCase("huge-count", "num-examples = 1e12 with weights + 1000", "max_examples_per_site",
                _huge_count_and_weights),
    HostileCase("fractional-count", "num-examples = 0.001", "whole number of samples", _fractional_count),
    HostileCase("value-1e30", "one weight = 1e30 (finite)", "max_abs_value", _absurd(1e30)),
    HostileCase("value-3e38", "one weight = 3e38 (finite in float32)", "max_abs_value", _absurd(3e38)),
    HostileCase("scaled-update", "its own update times 100", "outlier_factor", _scaled_update),
    HostileCase("nan-task-count", "a NaN per-task training count", "whole number of samples", _nan_task_count),
    HostileCase("spoofed-name", "its reply under another site's name (from round 2; garbage bytes in round 1)",
                "claims to be site", _spoofed_name, from_round=2),
)
EVALUATION_CASES = (
    HostileCase("dice-1-huge-count", "evaluation: Dice and AUC 1.0 with counts 1e12", "max_examples_per_site",
                _dice_one_huge_count),
    HostileCase("dice-1e6", "evaluation: Dice = 1e6", "must be in [0, 1]", _dice_1e6),
    HostileCase("nan-eval-count", "evaluation: a NaN per-task count", "whole number of samples", _nan_eval_count),
    HostileCase("infinite-auc", "evaluation: AUC = inf", "must be in [0, 1]", _infinite_auc),
)

CASE_PAIRS = tuple((case, EVALUATION_CASES[i % len(EVALUATION_CASES)]) for i, case in enumerate(TRAIN_CASES))
"""Each training case with the evaluation case a hostile site sends alongside it (every case appears)."""


def hostile_mod(partition: int, train: Edit, evaluate: Edit) -> Callable[[Message, Context, Any], Message]:
    """A ClientApp mod (outside the packing mod) that edits every reply of node ``partition``."""

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        reply = call_next(msg, context)
        if int(context.node_config.get("partition-id", -1)) != partition or reply.has_error():
            return reply
        edit = train if msg.metadata.message_type == MessageType.TRAIN else evaluate
        return edit(msg, reply)

    return mod


def hostile_client_app(partition: int, train: Edit, evaluate: Edit) -> ClientApp:
    """The project's ClientApp whose node ``partition`` sends ``train(...)`` / ``evaluate(...)`` replies."""
    app = ClientApp(mods=[hostile_mod(partition, train, evaluate), packing_mod])
    app.train()(client.train)
    app.evaluate()(client.evaluate_global)
    return app


@dataclass(frozen=True)
class RunOutcome:
    """What a tiny federated run ended with: the global model, the aggregate rows, the failure rows."""

    global_state: dict[str, torch.Tensor]
    aggregates: list[dict[str, Any]]
    failures: list[dict[str, Any]]


_MOVING = ("time/", "seconds", "bytes/")  # wall times and bytes moved differ between any two runs


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else v)
        for k, v in row.items() if not any(m in k for m in _MOVING)
    }


def run_federated(settings: Any, hostile: tuple[Edit, Edit] | None = None) -> RunOutcome:
    """Run the experiment of ``settings`` in process with sites ``site-a``, ``site-b`` (and a hostile third).

    Parameters
    ----------
    settings
        The server settings (:class:`server.settings.ServerSettings`) of a 3-site synthetic experiment.
    hostile
        ``(train edit, evaluation edit)`` of a third site (partition 2) that answers every round with them;
        None = run the two honest sites only.
    """
    nodes = [{"partition-id": i, "num-partitions": 3} for i in range(3 if hostile else 2)]
    app = hostile_client_app(2, *hostile) if hostile else hostile_client_app(-1, None, None)
    run_experiment(InProcessGrid(app, nodes), settings)
    state = ServerState.load(settings.run_dir(settings.load_experiment(), "") / "server_state.pt")
    return RunOutcome(
        global_state=state.global_state,
        aggregates=[_comparable(r) for r in state.history if r["site"] == AGGREGATE and r["phase"] != "failure"],
        failures=[r for r in state.history if r["phase"] == "failure"],
    )


def same_model(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """True when both state dicts have the same names and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def results_path(root: Path) -> Path:
    """Where ``benchmarks/security_cases.py`` writes its results."""
    return root / "docs" / "results" / "security_cases.json"

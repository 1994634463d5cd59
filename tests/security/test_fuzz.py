"""Property-based fuzzing of the packed-array decoder and of the reply screen (hypothesis, bounded, seeded).

Properties: random bytes, layouts and metric records make the decoder raise nothing but ``PackingError``
and the screen raise nothing at all; whatever the screen accepts is valid (it passes every check again on its
own, and FedAvg aggregates it without an error).
"""

import json
import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import SType
from flwr.serverapp.strategy import FedAvg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtmedformer.config.federated import ScreeningConfig
from server.screening import Expectations, screen_replies
from strategies import keys
from strategies.packing import LAYOUT, PackingError, decode_arrays, pack_content
from strategies.server_strategy import ServerStrategy
from strategies.validation import MetricKeys, check_metrics, check_update
from tests.federated.test_screening import _sent

BOUNDED = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
REFERENCE = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(3, dtype=np.float32),
             "n": np.array(0, dtype=np.int64)}
EXPECTED = MetricKeys(frozenset({keys.NUM_EXAMPLES, keys.LOSS}), frozenset({keys.NUM_EXAMPLES, keys.LOSS, "a/auc"}))
LIMITS = ScreeningConfig(max_examples_per_site=1000)

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 10, 1e12, 0.001, -1, math.nan, 3e38]),
)
metric_values = st.one_of(numbers, st.lists(st.floats(allow_nan=True), max_size=3))
metric_keys = st.one_of(st.sampled_from([*sorted(EXPECTED.allowed), "x", "a/num-examples"]), st.text(max_size=8))
descrs = st.sampled_from(["<f4", "<f8", "<i8", "|b1", "|O", ">f4", "<c8", "|V8", "<U3", "[('a','<f4')]", "bogus"])
shapes = st.lists(st.one_of(st.integers(-2, 2**40), st.sampled_from([2**32, 2**63, True])), max_size=4)


@st.composite
def npy_bytes(draw):
    """Bytes that start like an npy file often, and are garbage otherwise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    descr, shape = draw(descrs), tuple(draw(shapes))
    header = f"{{'descr': {descr!r}, 'fortran_order': {draw(st.booleans())}, 'shape': {shape!r}, }}"
    header = header.ljust(117) + "\n" if draw(st.booleans()) else header
    prefix = b"\x93NUMPY" + bytes([draw(st.sampled_from([1, 2, 3])), 0])
    length = len(header).to_bytes(2 if prefix[6] == 1 else 4, "little")
    return prefix + length + header.encode("latin1", "replace") + draw(st.binary(max_size=64))


def _array(data: bytes) -> Array:
    return Array(dtype="float32", shape=(1,), stype=SType.NUMPY, data=data)


@st.composite
def packed_contents(draw):
    """A RecordDict as a packed reply might carry: random arrays by dtype key and a random layout."""
    arrays = ArrayRecord({draw(st.sampled_from(["<f4", "<i8", "x"])): _array(draw(npy_bytes()))
                          for _ in range(draw(st.integers(0, 3)))})
    names = draw(st.lists(st.sampled_from(["w", "b", "n", "z"]), max_size=4))
    layout_shapes = draw(st.one_of(st.just(json.dumps([draw(shapes) for _ in names])), st.text(max_size=20)))
    dtypes = draw(st.lists(st.sampled_from(["<f4", "<i8", "|O"]), min_size=len(names), max_size=len(names) + 1))
    layout = ConfigRecord({"names": names, "shapes": layout_shapes, "dtypes": dtypes} if names else {})
    return RecordDict({keys.ARRAYS: arrays, LAYOUT: layout})


@BOUNDED
@given(packed_contents())
def test_the_decoder_raises_nothing_but_packing_error_on_random_bytes_and_layouts(content):
    try:
        decoded = decode_arrays(content)
    except PackingError:
        return
    for value in decoded.values():  # what it returns is plain numeric arrays
        assert value.dtype.kind in "biuf" and not value.dtype.hasobject


@BOUNDED
@given(st.dictionaries(st.sampled_from(["w", "b", "n", "q"]), npy_bytes(), max_size=4))
def test_plain_arrays_with_random_bytes_decode_or_raise_packing_error(arrays):
    try:
        decode_arrays(RecordDict({keys.ARRAYS: ArrayRecord({k: _array(v) for k, v in arrays.items()})}))
    except PackingError:
        pass


@st.composite
def replies(draw, sent):
    """A reply to one of ``sent``: well-formed with random numbers, or with random structure and bytes."""
    target = draw(st.sampled_from(sent))
    metrics = draw(st.dictionaries(metric_keys, metric_values, max_size=5))
    if draw(st.booleans()):
        metrics = {keys.NUM_EXAMPLES: draw(numbers), keys.LOSS: draw(numbers), **metrics}
    content = RecordDict({keys.METRICS: MetricRecord(metrics)})
    if draw(st.booleans()):
        scale = draw(st.sampled_from([0.0, 0.01, 1.0, 1e3, 1e30]))
        noise = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(9).astype(np.float32) * scale
        arrays = {"w": noise[:6].reshape(2, 3), "b": noise[6:], "n": np.array(draw(st.integers(-5, 5)))}
        content[keys.ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        if draw(st.booleans()):
            pack_content(content)
    elif draw(st.booleans()):
        content[keys.ARRAYS] = ArrayRecord({"w": _array(draw(npy_bytes()))})
    if draw(st.booleans()):
        content[keys.SITE] = ConfigRecord({keys.SITE_NAME: draw(st.one_of(st.text(max_size=6), st.integers()))})
    if draw(st.booleans()):
        content[draw(st.sampled_from(["metrics-2", keys.PRIOR_EVAL, "other"]))] = MetricRecord({"x": 1.0})
    reply = Message(content=content, reply_to=target)
    if draw(st.booleans()):
        reply.metadata.__dict__["_src_node_id"] = draw(st.integers(1, 5))  # a forged or unknown source node
    return reply


@BOUNDED
@given(st.data())
def test_the_screen_never_raises_and_accepts_only_replies_that_are_valid(data):
    # Prepare
    sent = [_sent(1), _sent(2), _sent(3)]
    batch = data.draw(st.lists(replies(sent), max_size=4))
    node_sites = data.draw(st.dictionaries(st.integers(1, 5), st.sampled_from(["a", "b", "c"]), max_size=3))
    expect = Expectations(EXPECTED, None, LIMITS, data.draw(st.dictionaries(st.sampled_from(["a", "b"]),
                                                                            st.integers(1, 10), max_size=2)))
    # Execute
    screened = screen_replies(sent, batch, node_sites, REFERENCE, expect=expect)
    # Assert: everything accepted passes every check again, came from a node asked, and aggregates
    assert len({r.node_id for r in screened.accepted}) == len(screened.accepted)
    for record in screened.accepted:
        assert record.node_id in (1, 2, 3)
        assert check_metrics(record.metrics, EXPECTED, LIMITS, expect.pinned.get(record.site)) is None
        assert check_update(record.arrays, REFERENCE, LIMITS) is None
    assert len(screened.accepted) + len(screened.failures) >= len(sent)
    if screened.accepted:
        strategy = ServerStrategy(FedAvg(weighted_by_key=keys.NUM_EXAMPLES, arrayrecord_key=keys.ARRAYS))
        aggregate = strategy.aggregate_train(1, screened.accepted)
        assert aggregate.arrays is not None and set(aggregate.arrays) == set(REFERENCE)


@BOUNDED
@given(st.dictionaries(metric_keys, metric_values, max_size=6), st.booleans())
def test_evaluation_screening_never_raises_and_accepts_only_valid_metrics(metrics, named):
    sent = [_sent(1)]
    content = RecordDict({keys.METRICS: MetricRecord(metrics)})
    if named:
        content[keys.SITE] = ConfigRecord({keys.SITE_NAME: "a"})
    screened = screen_replies(sent, [Message(content=content, reply_to=sent[0])], {}, None,
                              expect=Expectations(EXPECTED, None, LIMITS))
    for record in screened.accepted:
        assert check_metrics(record.metrics, EXPECTED, LIMITS) is None

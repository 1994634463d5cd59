"""Packed model arrays: exact round trip, far fewer Flower objects, clear errors, same federated results."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.constant import SType
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from client.app import app as client_app
from fltesting.inprocess import InProcessGrid
from server.app import run_experiment
from server.state import ServerState
from strategies import keys
from strategies.packing import (
    LAYOUT,
    PackingError,
    array_view,
    decode_arrays,
    is_packed,
    pack_arrays,
    pack_content,
    packing_mod,
    to_array,
    unpack_arrays,
    unpack_content,
)
from tests.federated.conftest import settings_for, site_nodes
from tests.federated.test_rounds import _without_timing


def _state():
    generator = torch.Generator().manual_seed(0)
    return {
        "blocks.0.attn.qkv.weight": torch.randn(12, 4, generator=generator),
        "blocks.0.attn.qkv.bias": torch.randn(12, generator=generator),
        "norm.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "head.weight": torch.randn(2, 3, 1, 1, generator=generator),
    }


def test_pack_then_unpack_restores_every_name_shape_dtype_and_value_in_order():
    # Prepare
    state = _state()
    # Execute
    packed, layout = pack_arrays(ArrayRecord(state))
    restored = unpack_arrays(packed, layout)
    # Assert
    assert sorted(packed.keys()) == ["<f4", "<i8"]  # one array per dtype
    assert list(restored.keys()) == list(state)
    for name, tensor in state.items():
        value = restored[name].numpy()
        assert value.dtype == tensor.numpy().dtype and value.shape == tuple(tensor.shape), name
        np.testing.assert_array_equal(value, tensor.numpy())


def test_a_packed_model_is_a_handful_of_flower_objects_instead_of_one_per_tensor():
    # Prepare: 60 tensors of a realistic mix of sizes
    state = {f"layer{i}.weight": torch.randn(64, 64) for i in range(30)}
    state.update({f"layer{i}.bias": torch.randn(64) for i in range(30)})
    record = ArrayRecord(state)
    # Execute
    packed, layout = pack_arrays(record)
    # Assert
    plain_objects = len(get_all_nested_objects(RecordDict({keys.ARRAYS: record})))
    packed_objects = len(get_all_nested_objects(RecordDict({keys.ARRAYS: packed, LAYOUT: layout})))
    assert plain_objects > 120 and packed_objects <= 5


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p, lay: p.__setitem__("<f4", Array(p["<f4"].numpy()[:-1].copy())), "the layout needs"),
        (lambda p, lay: p.__delitem__("<i8"), "the layout needs"),
        (lambda p, lay: p.__setitem__("<f4", Array(p["<f4"].numpy().astype(np.float64))), "dtype"),
        (lambda p, lay: lay.__setitem__("shapes", "not json"), "unreadable"),
        (lambda p, lay: lay.__setitem__("names", ["only-one"]), "different lengths"),
        (lambda p, lay: lay.__setitem__("shapes", "[[-1], [12], [], [0, 3], [2, 3, 1, 1]]"), "shape"),
    ],
)
def test_a_packed_record_that_does_not_match_its_layout_is_refused_with_the_reason(corrupt, message):
    # Prepare
    packed, layout = pack_arrays(ArrayRecord(_state()))
    corrupt(packed, layout)
    # Execute / Assert
    with pytest.raises(PackingError, match=message):
        unpack_arrays(packed, layout)


def test_content_without_arrays_is_left_alone_and_a_layout_without_arrays_is_refused():
    # Prepare
    content = RecordDict({keys.METRICS: MetricRecord({"x": 1.0})})
    # Execute
    pack_content(content)
    unpack_content(content)
    # Assert
    assert not is_packed(content) and list(content.keys()) == [keys.METRICS]
    _, layout = pack_arrays(ArrayRecord(_state()))
    with pytest.raises(PackingError, match="no arrays"):
        unpack_content(RecordDict({LAYOUT: layout}))


def _request(packed: bool) -> Message:
    content = RecordDict({keys.ARRAYS: ArrayRecord(_state()), keys.CONFIG: ConfigRecord({"a": 1})})
    if packed:
        pack_content(content)
    return Message(content=content, dst_node_id=1, message_type="train")


def _echo(msg: Message, context: Context) -> Message:
    # a handler that checks it sees named arrays and sends them back
    assert not is_packed(msg.content)
    assert list(msg.content[keys.ARRAYS].keys()) == list(_state())
    return Message(RecordDict({keys.ARRAYS: msg.content[keys.ARRAYS]}), reply_to=msg)


@pytest.mark.parametrize("packed", [True, False])
def test_the_client_mod_unpacks_requests_and_replies_in_kind(packed):
    # Prepare
    InProcessGrid(client_app, site_nodes(1))  # sets the task identity that creating Messages needs
    request = _request(packed)
    shared = request.content
    # Execute
    reply = packing_mod(request, Context(1, 1, {}, RecordDict(), {}), _echo)
    # Assert
    assert is_packed(reply.content) == packed
    assert is_packed(shared) == packed  # the (possibly shared) request RecordDict is not modified
    unpack_content(reply.content)
    np.testing.assert_array_equal(reply.content[keys.ARRAYS]["head.weight"].numpy(), _state()["head.weight"].numpy())


def test_packed_and_plain_transport_give_identical_federated_runs(tmp_path, experiment_file):
    # Prepare
    plain = experiment_file(federated={"rounds": 2, "pack_arrays": False})
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(plain, tmp_path / "plain"))
    packed = experiment_file(federated={"rounds": 2, "pack_arrays": True})
    # Execute
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(packed, tmp_path / "packed"))
    # Assert
    a = ServerState.load(tmp_path / "plain" / "run" / "server_state.pt")
    b = ServerState.load(tmp_path / "packed" / "run" / "server_state.pt")
    for name, tensor in a.global_state.items():
        assert torch.equal(tensor, b.global_state[name]), name
    rows = [r for r in a.history if r["phase"] != "round"]
    assert _without_timing(rows) == _without_timing([r for r in b.history if r["phase"] != "round"])
    plain_bytes = [r["bytes/sent"] for r in a.history if r["phase"] == "round"]
    packed_bytes = [r["bytes/sent"] for r in b.history if r["phase"] == "round"]
    assert plain_bytes == packed_bytes  # counted as model bytes, whatever the packing


def test_fortran_ordered_arrays_pack_like_any_other():
    # Prepare: np.save writes a Fortran-ordered array column-major; Flower keeps that serialization
    fortran = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    record = ArrayRecord({"f": Array(fortran), "c": Array(np.ones((2, 2), dtype=np.float32))})
    # Execute
    restored = unpack_arrays(*pack_arrays(record))
    # Assert
    np.testing.assert_array_equal(restored["f"].numpy(), fortran)
    np.testing.assert_array_equal(restored["c"].numpy(), np.ones((2, 2), dtype=np.float32))


@pytest.mark.parametrize("packed", [True, False])
def test_a_reply_decodes_once_into_the_named_numpy_arrays_it_carries(packed):
    # Prepare
    state = _state()
    content = RecordDict({keys.ARRAYS: ArrayRecord(state)})
    if packed:
        pack_content(content)
    # Execute
    arrays = decode_arrays(content)
    # Assert: names in order, values, dtypes and shapes as sent; writable; the message is left as it was
    assert list(arrays) == list(state)
    for name, tensor in state.items():
        np.testing.assert_array_equal(arrays[name], tensor.numpy())
        assert arrays[name].dtype == tensor.numpy().dtype and arrays[name].flags.writeable, name
    assert is_packed(content) == packed


def test_packed_tensors_of_one_dtype_share_one_copy_of_the_wire_bytes():
    # Prepare
    content = RecordDict({keys.ARRAYS: ArrayRecord(_state())})
    pack_content(content)
    # Execute
    arrays = decode_arrays(content)
    # Assert
    weight, head = arrays["blocks.0.attn.qkv.weight"], arrays["head.weight"]
    assert weight.base is not None and weight.base is head.base
    assert arrays["blocks.0.attn.qkv.weight"].flags.c_contiguous


@pytest.mark.parametrize("fortran", [False, True])
@pytest.mark.parametrize("shape", [(0, 2**63), (2**40, 2**40, 0)])
def test_an_empty_shape_with_a_dimension_numpy_cannot_hold_is_a_packing_error(fortran, shape):
    # Found by tests/security/test_fuzz.py: numpy's reshape raised a bare ValueError for these empty shapes
    header = f"{{'descr': '<f4', 'fortran_order': {fortran}, 'shape': {shape!r}, }}".encode("latin1")
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
    array = Array(dtype="float32", shape=(1,), stype=SType.NUMPY, data=data)
    plain = RecordDict({keys.ARRAYS: ArrayRecord({"w": array})})
    with pytest.raises(PackingError, match="larger than any array numpy can hold"):
        decode_arrays(plain)


def test_decoding_a_reply_without_arrays_or_with_a_broken_layout_raises_packing_error():
    with pytest.raises(PackingError, match="no model arrays"):
        decode_arrays(RecordDict({keys.METRICS: MetricRecord({"x": 1.0})}))
    content = RecordDict({keys.ARRAYS: ArrayRecord(_state())})
    pack_content(content)
    packed = content[keys.ARRAYS]
    packed["<f4"] = Array(packed["<f4"].numpy()[:-1].copy())
    with pytest.raises(PackingError, match="the layout needs"):
        decode_arrays(content)


@pytest.mark.parametrize(
    "value",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array(3, dtype=np.int64),  # 0-d stays 0-d
        np.zeros((0, 3)),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(10.0)[::2],  # not contiguous
        np.array([True, False]),
    ],
)
def test_arrays_are_written_and_viewed_without_numpy_save_and_load(value):
    # Execute
    array = to_array(value)
    view = array_view(array)
    # Assert: what Flower's own Array(value) / Array.numpy() would give
    assert (array.dtype, tuple(array.shape)) == (Array(value).dtype, tuple(Array(value).shape))
    np.testing.assert_array_equal(array.numpy(), value)
    assert view.shape == value.shape and view.dtype == value.dtype and not view.flags.writeable
    np.testing.assert_array_equal(view, value)

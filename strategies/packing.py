"""Model arrays on the wire: one contiguous array per dtype instead of one Flower object per tensor.

Flower 1.42 moves a Message as a tree of content-addressed objects: every ``Array`` of an ``ArrayRecord`` is an
object (and every 5 MB chunk of it another), and each object is one request between ClientApp, SuperNode and
SuperLink, signed and sent over TLS in deployment, with two requests in flight on a 2-core machine. A state dict of
N tensors thus costs more than N requests per hop; packed it costs one per dtype plus the layout
(``docs/decisions/003-packed-arrays.md``). Nothing else changes: the packed message carries the tensors' names,
shapes and dtypes in a ConfigRecord (``layout``), the ClientApp restores the same named ``ArrayRecord`` before any
training code sees it, and the server decodes every reply once into named numpy arrays (:func:`decode_arrays`) and
screens every named tensor of it.

Packing is ``pack_content`` / ``unpack_content`` on a Message's RecordDict. The server packs what it sends
when ``federated.pack_arrays`` is on (the default); the ClientApp's :func:`packing_mod` unpacks what arrives
and packs its reply the same way, so a server that does not pack gets plain replies.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import SType
from numpy.lib import format as npy

from strategies import keys

LAYOUT = "arrays-layout"  # ConfigRecord next to a packed ArrayRecord: how to cut it back into tensors
_NAMES, _SHAPES, _DTYPES = "names", "shapes", "dtypes"


class PackingError(ValueError):
    """A packed ArrayRecord that does not match its layout (truncated, wrong dtype, or a corrupt layout)."""


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    stream = io.BytesIO()
    npy.write_array_header_1_0(stream, {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return stream.getvalue()


def _array(dtype: np.dtype, shape: tuple[int, ...], *payload: bytes | memoryview) -> Array:
    """A numpy-serialized Flower ``Array`` from raw C-order bytes (one copy, no numpy round trip)."""
    return Array(dtype=str(dtype), shape=shape, stype=SType.NUMPY, data=b"".join([_npy_header(dtype, shape), *payload]))


_MAX_NDIM = 32  # numpy's own limit is 64; no tensor of a model has more than a handful of dimensions
_MAX_DIM = int(np.iinfo(np.intp).max)  # numpy refuses a larger dimension, even next to a zero-length one


def check_dtype(dtype: np.dtype) -> None:
    """Refuse every dtype but plain little-endian bool, integer and float (what a model state dict holds).

    Raises
    ------
    PackingError
        For object, structured, sub-array, string, complex, datetime or big-endian dtypes: a peer sending them
        runs other code, or means harm (object arrays would need unpickling).
    """
    plain = dtype.kind in "biuf" and not dtype.hasobject and dtype.fields is None and dtype.subdtype is None
    if not plain or dtype.byteorder == ">" or (dtype.kind == "f" and dtype.itemsize > 8):
        raise PackingError(f"dtype {dtype.str!r} is not a plain little-endian bool, integer or float dtype")


def element_count(shape: object) -> int:
    """The number of elements of ``shape``, computed without overflow (Python integers).

    Raises
    ------
    PackingError
        If ``shape`` is not a sequence of at most 32 non-negative integers (booleans are not integers here), or
        if numpy could not hold it: a dimension, or the product of the non-zero dimensions, above the largest
        ``intp`` (numpy checks both even when another dimension is 0 and the array would be empty).
    """
    if not isinstance(shape, (tuple, list)) or len(shape) > _MAX_NDIM:
        raise PackingError(f"shape {shape!r} is not a list of at most {_MAX_NDIM} dimensions")
    count, nonzero = 1, 1
    for n in shape:
        if type(n) is not int or n < 0:
            raise PackingError(f"shape {shape!r} has a dimension that is not a non-negative integer")
        count *= n
        nonzero *= max(n, 1)
    if nonzero > _MAX_DIM:
        raise PackingError(f"shape {shape!r} is larger than any array numpy can hold")
    return count


def _raw(array: Array) -> tuple[np.dtype, tuple[int, ...], memoryview]:
    """dtype, shape and the raw C-order bytes of a numpy-serialized ``Array``, without copying its data.

    Flower stores an Array as ``np.save`` output: a header, then the values. Reading the values in place
    instead of through ``np.load`` and ``np.save`` makes packing a single copy of the model. Everything a peer
    could get wrong is checked here (the one reader of array bytes): the serialization type, the header, the
    dtype (:func:`check_dtype`), the shape, and that the bytes after the header are exactly the header's
    shape times the item size.

    Raises
    ------
    PackingError
        If any of these does not hold.
    """
    data = array.data
    if array.stype != SType.NUMPY or not isinstance(data, bytes):
        raise PackingError(f"array of serialization type {array.stype!r}: only numpy-serialized arrays are read")
    stream = io.BytesIO(data)
    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(stream)
        else:
            raise PackingError(f"array serialized with .npy format version {version}: only 1.0 and 2.0 are read")
    except PackingError:
        raise
    except Exception as err:  # numpy raises ValueError, SyntaxError, ... on bytes that are no .npy header
        raise PackingError(f"array bytes do not start with a readable .npy header ({type(err).__name__})") from None
    check_dtype(dtype)
    count = element_count(shape)
    payload = memoryview(data)[stream.tell():]
    if len(payload) != count * dtype.itemsize:
        raise PackingError(
            f"array header says shape {tuple(shape)} of {dtype.str} ({count * dtype.itemsize} bytes), "
            f"but {len(payload)} bytes follow it"
        )
    shape = tuple(shape)
    if fortran:  # rare: reorder into C order (one copy)
        value = np.frombuffer(payload, dtype=dtype).reshape(shape[::-1]).T  # (reversed shape) -> shape
        return dtype, shape, memoryview(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
    return dtype, shape, payload


def to_array(value: np.ndarray) -> Array:
    """A numpy-serialized Flower ``Array`` of ``value`` (C order), written with one copy of its bytes.

    The same bytes ``Array(value)`` holds (``np.save`` output), without ``np.save``'s intermediate buffer.
    """
    if not value.flags.c_contiguous:  # (np.ascontiguousarray would also turn a 0-d array into shape (1,))
        value = np.ascontiguousarray(value)
    return _array(value.dtype, value.shape, memoryview(value.reshape(-1).view(np.uint8)))


def array_view(array: Array) -> np.ndarray:
    """A read-only numpy view of a numpy-serialized ``Array``'s values, without copying them."""
    dtype, shape, raw = _raw(array)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)  # (prod(shape),) -> shape


def pack_arrays(record: ArrayRecord) -> tuple[ArrayRecord, ConfigRecord]:
    """Concatenate ``record``'s arrays, flattened in order, into one 1-D array per dtype.

    Returns the packed record (dtype name -> 1-D array) and the layout (names, shapes, dtypes in order) that
    :func:`unpack_arrays` needs. An empty record packs to an empty record.
    """
    names, shapes, dtypes = [], [], []
    by_dtype: dict[str, tuple[np.dtype, list[memoryview]]] = {}
    for name, array in record.items():
        dtype, shape, raw = _raw(array)
        names.append(name)
        shapes.append(list(shape))
        dtypes.append(dtype.str)
        by_dtype.setdefault(dtype.str, (dtype, []))[1].append(raw)
    packed = ArrayRecord(
        {
            key: _array(dtype, (sum(len(r) for r in raws) // dtype.itemsize,), *raws)
            for key, (dtype, raws) in by_dtype.items()
        }
    )
    return packed, ConfigRecord({_NAMES: names, _SHAPES: json.dumps(shapes), _DTYPES: dtypes})


def _read_layout(layout: ConfigRecord) -> list[tuple[str, tuple[int, ...], str]]:
    try:
        names, dtypes = list(layout[_NAMES]), list(layout[_DTYPES])
        shapes = json.loads(str(layout[_SHAPES]))
    except Exception as err:  # a missing key, a wrong type, text that is not JSON, JSON nested too deep, ...
        kind = type(err).__name__
        raise PackingError(f"the arrays layout is unreadable ({kind}): the peer runs another version") from None
    if not isinstance(shapes, list):
        raise PackingError("the arrays layout's shapes are not a list")
    if not (len(names) == len(shapes) == len(dtypes)) or len(set(names)) != len(names):
        raise PackingError("the arrays layout lists names, shapes and dtypes of different lengths or repeats a name")
    entries = []
    for name, shape, dtype in zip(names, shapes, dtypes, strict=True):
        try:
            element_count(shape)
        except PackingError:
            raise PackingError(f"the arrays layout gives {str(name)[:80]!r} the shape {str(shape)[:80]}") from None
        entries.append((str(name), tuple(shape), str(dtype)))
    return entries


def _checked_parts(
    packed: ArrayRecord, layout: ConfigRecord
) -> tuple[list[tuple[str, tuple[int, ...], str]], dict[str, tuple[np.dtype, tuple[int, ...], memoryview]]]:
    """The layout's entries and each dtype's raw packed bytes, once their lengths are checked against each other."""
    entries = _read_layout(layout)
    flat = {key: _raw(array) for key, array in packed.items()}
    needed: dict[str, int] = {}
    for _, shape, dtype in entries:
        needed[dtype] = needed.get(dtype, 0) + element_count(shape)  # Python integers: no overflow
    if set(flat) != set(needed):
        raise PackingError(f"packed arrays hold dtypes {sorted(flat)}, the layout needs {sorted(needed)}")
    for key, count in needed.items():
        dtype, shape, _ = flat[key]
        if len(shape) != 1 or shape[0] != count or dtype.str != key:
            raise PackingError(
                f"packed {key} array has shape {shape} and dtype {dtype.str}, the layout needs ({count},) {key}"
            )
    return entries, flat


def unpack_arrays(packed: ArrayRecord, layout: ConfigRecord) -> ArrayRecord:
    """Cut a packed record back into the named arrays ``layout`` describes, in the same order.

    Raises
    ------
    PackingError
        If a dtype's packed array is missing, is not 1-D, is shorter or longer than the layout's tensors of that
        dtype, or if the layout itself is malformed.
    """
    entries, flat = _checked_parts(packed, layout)
    offsets = dict.fromkeys(flat, 0)
    out: dict[str, Array] = {}
    for name, shape, key in entries:
        dtype, _, raw = flat[key]
        size = element_count(shape) * dtype.itemsize
        out[name] = _array(dtype, shape, raw[offsets[key] : offsets[key] + size])
        offsets[key] += size
    return ArrayRecord(out)


def decode_arrays(content: RecordDict) -> dict[str, np.ndarray]:
    """The model arrays of a message's content as numpy arrays by name, in order: the one decoding of a reply.

    A packed content is read straight from its packed bytes: each dtype's buffer is copied once and every
    tensor is a (writable, C-contiguous) view of that copy, so the model is copied once in all. A plain
    ``ArrayRecord`` is read array by array, each checked as the packed ones are. ``content`` is not modified.

    Raises
    ------
    PackingError
        If ``content`` has no model arrays (or holds something else under their name), an array whose bytes do
        not match its header or whose dtype is not plain, or packed arrays that do not match their layout (see
        :func:`unpack_arrays`).
    """
    if not isinstance(content.get(keys.ARRAYS), ArrayRecord):
        raise PackingError(f"the message carries no model arrays (no ArrayRecord named {keys.ARRAYS!r})")
    if is_packed(content) and not isinstance(content[LAYOUT], ConfigRecord):
        raise PackingError(f"the message's {LAYOUT!r} is not a ConfigRecord")
    if not is_packed(content):
        return {name: _copy(array) for name, array in content[keys.ARRAYS].items()}
    entries, flat = _checked_parts(content[keys.ARRAYS], content[LAYOUT])
    buffers = {key: np.frombuffer(raw, dtype=dtype).copy() for key, (dtype, _, raw) in flat.items()}  # (count,)
    offsets = dict.fromkeys(flat, 0)
    out: dict[str, np.ndarray] = {}
    for name, shape, key in entries:
        count = element_count(shape)
        out[name] = buffers[key][offsets[key] : offsets[key] + count].reshape(shape)  # (count,) -> shape, a view
        offsets[key] += count
    return out


def _copy(array: Array) -> np.ndarray:
    """A writable numpy copy of a (checked) numpy-serialized ``Array``."""
    dtype, shape, raw = _raw(array)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()  # (prod(shape),) -> shape


def is_packed(content: RecordDict) -> bool:
    """True when ``content`` carries packed model arrays."""
    return LAYOUT in content


def pack_content(content: RecordDict) -> None:
    """Replace ``content[ARRAYS]`` by its packed form and add the layout, in place (no-op without arrays)."""
    if keys.ARRAYS in content and not is_packed(content):
        content[keys.ARRAYS], content[LAYOUT] = pack_arrays(content[keys.ARRAYS])


def unpack_content(content: RecordDict) -> None:
    """Restore the named ``content[ARRAYS]`` of a packed RecordDict, in place (no-op when not packed).

    Raises
    ------
    PackingError
        If the packed arrays do not match their layout, or the layout comes without arrays.
    """
    if not is_packed(content):
        return
    if keys.ARRAYS not in content:
        raise PackingError("the message has an arrays layout but no arrays")
    layout = content.pop(LAYOUT)
    content[keys.ARRAYS] = unpack_arrays(content[keys.ARRAYS], layout)


def packing_mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """ClientApp mod: unpack an incoming packed message, and pack the reply's arrays when the request was packed.

    A packed request that does not match its layout is answered with an error reply naming the problem (the
    server records it as the site's failure), as any exception in a ClientApp is.
    """
    packed = msg.has_content() and is_packed(msg.content)
    if packed:
        # Unpack into this message's own RecordDict: a strategy may send one RecordDict to every node.
        content = RecordDict(dict(msg.content.items()))
        unpack_content(content)
        msg.content = content
    reply = call_next(msg, context)
    if packed and reply.has_content():
        pack_content(reply.content)
    return reply

"""A frozen TensorFlow GraphDef read with a small protobuf wire-format reader, so neither
TensorFlow nor the ``protobuf`` package is needed to load FaceNet's constants."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import numpy as np

from facebench.errors import FacebenchError


class Node(NamedTuple):
    """A GraphDef NodeDef: op type, input names, and attrs (name -> decoded AttrValue)."""

    op: str
    inputs: List[str]
    attrs: Dict[str, object]


class _Truncated(Exception):
    pass


def _varint(buf, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Truncated
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf):
    """(field number, wire type, value) of one message: an int for varints, a memoryview of
    the payload for length-delimited and fixed32/fixed64 fields."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 2, 5):
            if wire == 2:
                size, i = _varint(buf, i)
            else:
                size = 8 if wire == 1 else 4
            if i + size > n:
                raise _Truncated
            value, i = buf[i:i + size], i + size
        else:
            raise _Truncated  # groups (3, 4) are not in GraphDefs; 6, 7 do not exist
        yield field, wire, value


def _text(view) -> str:
    return bytes(view).decode("utf-8")


def _packed(view, wire: int, fmt: str) -> list:
    """A repeated scalar field, packed (wire 2) or one element (varint / fixed32)."""
    if fmt == "varint":
        if wire == 0:
            return [view]
        out, i = [], 0
        while i < len(view):
            v, i = _varint(view, i)
            out.append(v)
        return out
    raw = bytes(view)
    return list(struct.unpack(f"<{len(raw) // 4}{fmt}", raw))


_DTYPES = {1: np.float32, 3: np.int32}  # TensorFlow's DT_FLOAT, DT_INT32


def _tensor(buf):
    """TensorProto -> array (float32 and int32; None for other dtypes): dtype (1), shape (2),
    tensor_content (4), float_val (5), int_val (7); a single repeated value fills the whole
    shape, as TensorFlow does."""
    dtype, shape, content, values = 0, [], None, []
    for field, wire, value in _fields(buf):
        if field == 1:
            dtype = value
        elif field == 2:
            for f, _, dim in _fields(value):
                if f == 2:
                    shape.append(next((s for g, _, s in _fields(dim) if g == 1), 0))
        elif field == 4:
            content = bytes(value)
        elif field == 5:
            values += _packed(value, wire, "f")
        elif field == 7:
            values += [v - (1 << 64) if v >= 1 << 63 else v for v in _packed(value, wire, "varint")]
    if dtype not in _DTYPES:
        return None  # strings, doubles...: the model reads none, so they need no decoder
    np_type = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        arr = np.frombuffer(content, dtype=np_type)
    else:
        arr = np.array(values, dtype=np_type)
        if arr.size == 1 and count > 1:
            arr = np.full(count, arr[0], dtype=np_type)
    if arr.size != count:
        raise ValueError(f"tensor of shape {shape} holds {arr.size} values")
    return arr.astype(_DTYPES[dtype]).reshape(shape)


def _attr(buf):
    """AttrValue -> list (1: ints or strings), str (2), int (3), float (4), bool (5), dtype
    (6) or array (8); shapes and functions, which the model does not read, give None."""
    for field, wire, value in _fields(buf):
        if field == 1:
            ints, strings = [], []
            for f, w, v in _fields(value):
                if f == 3:
                    ints += _packed(v, w, "varint")
                elif f == 2:
                    strings.append(_text(v))
            return ints or strings
        if field == 2:
            return _text(value)
        if field in (3, 5, 6):
            return value
        if field == 4:
            return struct.unpack("<f", bytes(value))[0]
        if field == 8:
            return _tensor(value)
    return None


def read_graph(data: bytes) -> Dict[str, Node]:
    """Nodes of a serialized GraphDef by name (field 1 of GraphDef: NodeDef name 1, op 2,
    input 3, attr 5 as map entries key 1 / value 2)."""
    nodes: Dict[str, Node] = {}
    buf = memoryview(data)
    for field, _, node in _fields(buf):
        if field != 1:
            continue  # versions, library
        name, op, inputs, attrs = None, None, [], {}
        for f, _, value in _fields(node):
            if f == 1:
                name = _text(value)
            elif f == 2:
                op = _text(value)
            elif f == 3:
                inputs.append(_text(value))
            elif f == 5:
                entry = dict((g, v) for g, _, v in _fields(value))
                attrs[_text(entry.get(1, b""))] = _attr(entry.get(2, b""))
        if not name or not op:
            raise ValueError("a node without a name or op")
        nodes[name] = Node(op, inputs, attrs)
    return nodes


def read_graph_file(path) -> Dict[str, Node]:
    """:func:`read_graph` of a file; anything unreadable is one FacebenchError naming it."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FacebenchError(f"cannot read FaceNet graph {path}: {e.strerror}") from None
    try:
        nodes = read_graph(data)
    except (_Truncated, ValueError, UnicodeDecodeError, struct.error) as e:
        why = str(e) or "truncated or corrupt"
        raise FacebenchError(f"{path} is not a readable TensorFlow graph ({why})") from None
    if not nodes:
        raise FacebenchError(f"{path} holds no TensorFlow graph nodes")
    return nodes

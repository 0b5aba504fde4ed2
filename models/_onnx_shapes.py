"""Shape and layout ONNX ops (reshapes, gathers, slices, constants), registered in
:data:`._onnx_ops.OPS` like the numeric ones."""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from facebench.errors import FacebenchError

from ._onnx_ops import _TORCH_DTYPES, _ints, op

# ---------------------------------------------------------------- shapes and layout

@op("Flatten")
def _flatten(x, attrs, n_out):
    data = x[0]
    axis = attrs.get("axis", 1)
    axis = axis + data.dim() if axis < 0 else axis
    return data.reshape(math.prod(data.shape[:axis]), -1)


@op("Reshape")
def _reshape(x, attrs, n_out):
    data, shape = x[0], _ints(x[1])
    if not attrs.get("allowzero", 0):  # 0 copies the input's size at that position
        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return data.reshape(shape)


@op("Transpose")
def _transpose(x, attrs, n_out):
    perm = attrs.get("perm") or list(reversed(range(x[0].dim())))
    return x[0].permute(*perm)


@op("Concat")
def _concat(x, attrs, n_out):
    return torch.cat([t for t in x if t is not None], dim=attrs["axis"])


@op("Shape")
def _shape(x, attrs, n_out):
    dims = list(x[0].shape)[attrs.get("start", 0):attrs.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64, device=x[0].device)


@op("Gather")
def _gather(x, attrs, n_out):
    data, idx = x[0], x[1].to(device=x[0].device, dtype=torch.int64)
    axis = attrs.get("axis", 0)
    axis = axis + data.dim() if axis < 0 else axis
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    picked = data.index_select(axis, idx.reshape(-1))
    return picked.reshape(data.shape[:axis] + idx.shape + data.shape[axis + 1:])


def _axes(x, attrs) -> Optional[List[int]]:
    """``axes`` as an attribute (older opsets) or as the second input (opset 13+)."""
    if "axes" in attrs:
        return list(attrs["axes"])
    return _ints(x[1]) if len(x) > 1 and x[1] is not None else None


@op("Unsqueeze")
def _unsqueeze(x, attrs, n_out):
    data, axes = x[0], _axes(x, attrs)
    rank = data.dim() + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        data = data.unsqueeze(a)
    return data


@op("Squeeze")
def _squeeze(x, attrs, n_out):
    data, axes = x[0], _axes(x, attrs)
    if axes is None:
        return data.squeeze()
    axes = [a + data.dim() if a < 0 else a for a in axes]
    return data.squeeze(tuple(axes)) if axes else data


@op("Slice")
def _slice(x, attrs, n_out):
    data = x[0]
    if "starts" in attrs:  # opset < 10
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 else None
        steps = _ints(x[4]) if len(x) > 4 else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index = [slice(None)] * data.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step <= 0:
            raise FacebenchError("Slice with a negative step is not supported")
        index[axis + data.dim() if axis < 0 else axis] = slice(start, end, step)
    return data[tuple(index)]


@op("Constant")
def _constant(x, attrs, n_out):
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise FacebenchError(f"Constant with attributes {sorted(attrs)} is not supported")


# ---------------------------------------------------------------- quantisation

@op("DequantizeLinear")
def _dequantize(x, attrs, n_out):
    """``(q - zero_point) * scale``, per tensor, per axis or per block of ``block_size``
    along ``axis`` (the scale then has the input's rank, one entry per block)."""
    q, scale = x[0], x[1]
    zero = x[2] if len(x) > 2 else None
    wide = torch.int64 if q.dtype == torch.int32 else torch.int32
    diff = q.to(wide) if zero is None else q.to(wide) - _expand(zero, q, attrs).to(wide)
    out = diff.to(scale.dtype) * _expand(scale, q, attrs)
    dtype = attrs.get("output_dtype", 0)
    return out.to(_TORCH_DTYPES[dtype]) if dtype else out


def _expand(t: torch.Tensor, q: torch.Tensor, attrs) -> torch.Tensor:
    """A scale or zero point broadcast to ``q``: scalar, 1-D along ``axis``, or blocked."""
    if t.numel() == 1 and t.dim() <= 1:
        return t.reshape(())
    axis = attrs.get("axis", 1)
    axis = axis + q.dim() if axis < 0 else axis
    block = attrs.get("block_size", 0)
    if block:
        if t.dim() != q.dim():
            raise FacebenchError(f"blocked DequantizeLinear: scale of rank {t.dim()} for "
                                 f"an input of rank {q.dim()}")
        return t.repeat_interleave(block, dim=axis).narrow(axis, 0, q.shape[axis])
    shape = [1] * q.dim()
    shape[axis] = -1
    return t.reshape(shape)

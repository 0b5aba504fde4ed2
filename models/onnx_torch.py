"""A small ONNX -> PyTorch converter: an ONNX graph run as a differentiable ``nn.Module``.

Why our own: attacks need gradients to the input, so an ONNX file has to run as torch ops;
onnx2torch imports torchvision (no CPU wheel here), and the int8 block-quantised files of
the OpenCV Zoo need ``DequantizeLinear`` with ``block_size``, which it lacks.

How: the graph is read with the ``onnx`` package. Every node whose inputs are all constants
(initializers, ``Constant`` outputs) is evaluated once at load time, so blocked int8 weights
become fp32 constants and weight reshapes disappear; the remaining nodes run in topological
order in ``forward`` with torch ops. Constants a running node reads become parameters
(floating point) or buffers (integers), so ``.to(device)`` and ``state_dict`` work.
Inference semantics only: BatchNormalization uses its running statistics, Dropout is the
identity. Graph inputs with neither an initializer nor a consumer (stale weight names left
by quantisers) are ignored. An op outside :data:`OPS` is one error naming it and the file.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facebench.errors import FacebenchError

Handler = Callable[..., Any]
#: op type (default ONNX domain) -> handler(inputs, attrs, n_outputs) -> tensor or tuple
OPS: Dict[str, Handler] = {}


def _onnx():
    """The ``onnx`` package, imported on first use so that listing plugins never needs it."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise FacebenchError("loading ONNX recognizers needs the onnx package: "
                             "pip install onnx") from None
    return onnx, numpy_helper


def op(*names: str):
    def register(fn: Handler) -> Handler:
        for name in names:
            OPS[name] = fn
        return fn
    return register


# ---------------------------------------------------------------- tensors and attributes

_TORCH_DTYPES = {  # TensorProto.DataType -> torch dtype (for Cast / output_dtype)
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}


def to_tensor(array: np.ndarray, what: str = "tensor") -> torch.Tensor:
    """A numpy array from ``numpy_helper.to_array`` as a torch tensor (its own memory).

    4-bit integers arrive as ml_dtypes arrays, one value per byte; they widen to int8."""
    name = str(array.dtype)
    if name in ("int4", "uint4"):
        array = array.astype(np.int8 if name == "int4" else np.uint8)
    elif name == "bfloat16":
        return torch.from_numpy(np.array(array, dtype=np.float32)).to(torch.bfloat16)
    try:
        return torch.from_numpy(np.array(array, copy=True))
    except TypeError:
        raise FacebenchError(f"{what} has element type {name}, which the ONNX loader "
                             "cannot represent in torch") from None


def _attrs(node) -> Dict[str, Any]:
    onnx, numpy_helper = _onnx()
    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = to_tensor(numpy_helper.to_array(value), f"attribute {attr.name}")
        out[attr.name] = value
    return out


def _ints(t: Optional[torch.Tensor]) -> Optional[List[int]]:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


# ---------------------------------------------------------------- element-wise ops

@op("Identity")
def _identity(x, attrs, n_out):
    return x[0]


@op("Dropout")
def _dropout(x, attrs, n_out):  # inference: identity, and an all-true mask if asked for
    return (x[0], torch.ones_like(x[0], dtype=torch.bool)) if n_out > 1 else x[0]


@op("Add")
def _add(x, attrs, n_out):
    return x[0] + x[1]


@op("Sub")
def _sub(x, attrs, n_out):
    return x[0] - x[1]


@op("Mul")
def _mul(x, attrs, n_out):
    return x[0] * x[1]


@op("Div")
def _div(x, attrs, n_out):
    a, b = x
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # integer Div truncates, as in C


@op("Sqrt")
def _sqrt(x, attrs, n_out):
    return torch.sqrt(x[0])


@op("Neg")
def _neg(x, attrs, n_out):
    return -x[0]


@op("Relu")
def _relu(x, attrs, n_out):
    return F.relu(x[0])


@op("LeakyRelu")
def _leaky_relu(x, attrs, n_out):
    return F.leaky_relu(x[0], attrs.get("alpha", 0.01))


@op("Sigmoid")
def _sigmoid(x, attrs, n_out):
    return torch.sigmoid(x[0])


@op("PRelu")
def _prelu(x, attrs, n_out):
    data, slope = x[0], x[1]  # slope broadcasts to data (e.g. C x 1 x 1 against N C H W)
    # relu(x) - slope * relu(-x) equals where(x >= 0, x, slope * x) bit for bit away from
    # x = 0 and costs a third of it forward + backward (measured: 12 vs 40 ms on a 16x64x56x56
    # batch); the masked select took a third of SFace's whole attack step
    if not torch.is_grad_enabled() and slope.numel() == slope.shape[0] and \
            data.dim() == slope.dim() + 1:
        # without a backward, torch's one-pass kernel beats the four passes below
        return F.prelu(data, slope.reshape(-1))
    return F.relu(data) - slope * F.relu(-data)


@op("Clip")
def _clip(x, attrs, n_out):
    lo = x[1] if len(x) > 1 and x[1] is not None else attrs.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else attrs.get("max")
    out = x[0]
    if lo is not None:
        out = torch.maximum(out, torch.as_tensor(lo, dtype=out.dtype, device=out.device))
    if hi is not None:
        out = torch.minimum(out, torch.as_tensor(hi, dtype=out.dtype, device=out.device))
    return out


@op("Cast")
def _cast(x, attrs, n_out):
    to = attrs["to"]
    if to not in _TORCH_DTYPES:
        raise FacebenchError(f"Cast to ONNX element type {to} is not supported")
    return x[0].to(_TORCH_DTYPES[to])


# ---------------------------------------------------------------- layers

def _spatial_pads(attrs, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int]) -> List[int]:
    """ONNX ``pads`` (all begins, then all ends), resolving ``auto_pad`` for this input."""
    n = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", "") or auto is None:
        return list(attrs.get("pads", [0] * (2 * n)))
    if auto == "VALID":
        return [0] * (2 * n)
    begins, ends = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return begins + ends


def _torch_pad(pads: Sequence[int]) -> List[int]:
    """ONNX (b1, b2, .., e1, e2, ..) -> F.pad's (last dim first) (b_n, e_n, ..., b_1, e_1)."""
    n = len(pads) // 2
    out: List[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def _symmetric(pads: Sequence[int]) -> Optional[List[int]]:
    n = len(pads) // 2
    return list(pads[:n]) if list(pads[:n]) == list(pads[n:]) else None


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _rank_fn(table, x: torch.Tensor, what: str):
    n = x.dim() - 2
    if n not in table:
        raise FacebenchError(f"{what} on a {x.dim()}-D input is not supported")
    return table[n]


@op("Conv")
def _conv(x, attrs, n_out):
    data, weight = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    kernel = list(weight.shape[2:])
    n = len(kernel)
    strides = attrs.get("strides", [1] * n)
    dilations = attrs.get("dilations", [1] * n)
    pads = _spatial_pads(attrs, data, kernel, strides, dilations)
    same = _symmetric(pads)
    if same is None:  # asymmetric: zero-pad explicitly, then convolve unpadded
        data, same = F.pad(data, _torch_pad(pads)), [0] * n
    conv = _rank_fn(_CONV, data, "Conv")
    return conv(data, weight, bias, strides, same, dilations, attrs.get("group", 1))


@op("BatchNormalization")
def _batch_norm(x, attrs, n_out):
    data, scale, shift, mean, var = x[:5]  # running statistics: never trained, so detached
    return F.batch_norm(data, mean.detach(), var.detach(), scale, shift, False, 0.0,
                        attrs.get("epsilon", 1e-5))


@op("Gemm")
def _gemm(x, attrs, n_out):
    a, b = x[0], x[1]
    c = x[2] if len(x) > 2 else None
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c if beta == 1.0 else c * beta)
    return y


@op("MatMul")
def _matmul(x, attrs, n_out):
    return torch.matmul(x[0], x[1])


def _pool_args(attrs, data):
    kernel = list(attrs["kernel_shape"])
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    return kernel, strides, dilations, _spatial_pads(attrs, data, kernel, strides, dilations)


@op("MaxPool")
def _max_pool(x, attrs, n_out):
    if n_out > 1:
        raise FacebenchError("MaxPool with an Indices output is not supported")
    data = x[0]
    kernel, strides, dilations, pads = _pool_args(attrs, data)
    same = _symmetric(pads)
    if same is None or any(2 * p > k for p, k in zip(same, kernel)):
        data, same = F.pad(data, _torch_pad(pads), value=-math.inf), [0] * len(kernel)
    pool = _rank_fn(_MAX_POOL, data, "MaxPool")
    return pool(data, kernel, strides, same, dilations, ceil_mode=bool(attrs.get("ceil_mode", 0)))


@op("AveragePool")
def _avg_pool(x, attrs, n_out):
    data = x[0]
    kernel, strides, dilations, pads = _pool_args(attrs, data)
    if any(d != 1 for d in dilations):
        raise FacebenchError("AveragePool with dilations is not supported")
    include = bool(attrs.get("count_include_pad", 0))
    ceil = bool(attrs.get("ceil_mode", 0))
    pool = _rank_fn(_AVG_POOL, data, "AveragePool")
    same = _symmetric(pads)
    if same is not None and all(2 * p <= k for p, k in zip(same, kernel)):
        return pool(data, kernel, strides, same, ceil_mode=ceil, count_include_pad=include)
    # asymmetric pads: pad by hand; without count_include_pad divide by the real-pixel count
    padded = F.pad(data, _torch_pad(pads))
    total = pool(padded, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    if include:
        return total
    ones = F.pad(torch.ones_like(data[:1, :1]), _torch_pad(pads))
    return total / pool(ones, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)


@op("GlobalAveragePool")
def _global_avg_pool(x, attrs, n_out):
    return x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True)


@op("GlobalMaxPool")
def _global_max_pool(x, attrs, n_out):
    return x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True)


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


# ---------------------------------------------------------------- the graph

@dataclass(frozen=True)
class Step:
    """One node that runs in ``forward``."""

    op_type: str
    inputs: Tuple[str, ...]  # "" for an absent optional input
    outputs: Tuple[str, ...]
    attrs: Dict[str, Any]
    name: str


@dataclass
class Plan:
    """A graph after constant folding: what ``forward`` runs, and the constants it reads."""

    inputs: List[str]
    input_shapes: List[Tuple[Optional[int], ...]]  # None: a symbolic or unknown size
    outputs: List[str]
    output_shapes: List[Tuple[Optional[int], ...]]
    steps: List[Step]
    constants: Dict[str, torch.Tensor]
    source: str


def _dims(value_info) -> Tuple[Optional[int], ...]:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


def _topological(nodes, known: set, source: str) -> list:
    """The nodes in an order where each runs after the producers of its inputs (one pass
    for a graph that is already sorted, as the ONNX spec asks)."""
    ready, pending, order = set(known), list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(i == "" or i in ready for i in node.input):
                order.append(node)
                ready.update(o for o in node.output if o)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            node = rest[0]
            missing = [i for i in node.input if i and i not in ready]
            raise FacebenchError(f"{source}: input {missing[0]!r} of node {node.name!r} "
                                 f"({node.op_type}) is produced by no node (or by a cycle)")
        pending = rest
    return order


def build_plan(model, source: str = "ONNX model") -> Plan:
    """Fold the constant part of an ``onnx.ModelProto`` and list the nodes left to run."""
    _, numpy_helper = _onnx()
    graph = model.graph
    unknown = sorted({f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx")
                      else n.op_type for n in graph.node
                      if n.domain not in ("", "ai.onnx") or n.op_type not in OPS})
    if unknown:
        raise FacebenchError(
            f"{source}: ONNX op{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"not supported by facebench's ONNX loader (it runs {len(OPS)} ops: "
            f"{', '.join(sorted(OPS))})")
    const: Dict[str, torch.Tensor] = {
        init.name: to_tensor(numpy_helper.to_array(init), f"initializer {init.name}")
        for init in graph.initializer}
    consumed = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    runtime = [v for v in graph.input if v.name not in const and v.name in consumed]
    steps: List[Step] = []
    live = {v.name for v in runtime}
    for node in _topological(graph.node, set(const) | live, source):
        attrs = _attrs(node)
        ins = tuple(node.input)
        outs = tuple(node.output)
        if all(i == "" or i in const for i in ins):  # fold it now
            args = [None if i == "" else const[i] for i in ins]
            try:
                with torch.no_grad():
                    result = OPS[node.op_type](args, attrs, len(outs))
            except (FacebenchError, RuntimeError, IndexError, KeyError, ValueError,
                    TypeError) as err:
                raise FacebenchError(f"{source}: cannot evaluate constant node {node.name!r} "
                                     f"({node.op_type}): {err}") from None
            for name, value in zip(outs, result if isinstance(result, tuple) else (result,)):
                if name:
                    const[name] = value
        else:
            steps.append(Step(node.op_type, ins, outs, attrs, node.name))
    needed = {i for s in steps for i in s.inputs} | {o.name for o in graph.output}
    return Plan(
        inputs=[v.name for v in runtime], input_shapes=[_dims(v) for v in runtime],
        outputs=[o.name for o in graph.output], output_shapes=[_dims(o) for o in graph.output],
        steps=steps, constants={k: v for k, v in const.items() if k in needed}, source=source)


def read_model(path):
    """``onnx.load`` with one-line errors for a missing or unreadable file."""
    onnx, _ = _onnx()
    path = Path(path)
    if not path.is_file():
        raise FacebenchError(f"ONNX file {path} not found")
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError and friends share no useful base
        raise FacebenchError(f"cannot read ONNX file {path}: {type(err).__name__}: "
                             f"{str(err).strip()[:200]}") from None


@functools.lru_cache(maxsize=2)
def _cached_plan(path: str, size: int, mtime_ns: int) -> Plan:
    # keyed on size and mtime too, so an edited file is read again
    return build_plan(read_model(path), source=path)


def load_plan(path) -> Plan:
    """The folded plan of an ONNX file, read once per process (tensors shared: copy them)."""
    path = Path(path).expanduser().resolve()
    try:
        st = path.stat()
    except OSError as err:
        raise FacebenchError(f"cannot read ONNX file {path}: {err.strerror}") from None
    return _cached_plan(str(path), st.st_size, st.st_mtime_ns)


class OnnxModule(nn.Module):
    """Runs a :class:`Plan`: ``module(*inputs)`` -> the first output, or a tuple of all
    outputs when the graph has several."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.source = plan.source
        self.input_names = list(plan.inputs)
        self.input_shapes = list(plan.input_shapes)
        self.output_names = list(plan.outputs)
        self.output_shapes = list(plan.output_shapes)
        self.steps = list(plan.steps)
        self._slots: Dict[str, str] = {}  # ONNX value name -> attribute name
        for name, value in plan.constants.items():
            slot = self._slot_name(name)
            value = value.detach().clone()
            if value.is_floating_point():
                self.register_parameter(slot, nn.Parameter(value))
            else:
                self.register_buffer(slot, value)
        self._handlers = [OPS[s.op_type] for s in self.steps]
        last = {}  # value name -> index of the last step reading it (freed after that)
        for i, s in enumerate(self.steps):
            for name in s.inputs:
                last[name] = i
        keep = set(self.output_names)
        self._free = [[n for n in set(s.inputs) if n and last.get(n) == i and n not in keep]
                      for i, s in enumerate(self.steps)]

    def _slot_name(self, name: str) -> str:
        base = "c_" + re.sub(r"\W", "_", name)
        slot, k = base, 1
        while slot in self._slots.values() or hasattr(self, slot):
            slot, k = f"{base}_{k}", k + 1
        self._slots[name] = slot
        return slot

    def _value(self, env: dict, name: str):
        if name == "":
            return None
        if name in env:
            return env[name]
        return getattr(self, self._slots[name])

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise FacebenchError(f"{self.source} takes {len(self.input_names)} input(s) "
                                 f"({', '.join(self.input_names)}), got {len(inputs)}")
        env = dict(zip(self.input_names, inputs))
        for step, handler, free in zip(self.steps, self._handlers, self._free):
            try:
                result = handler([self._value(env, n) for n in step.inputs], step.attrs,
                                 len(step.outputs))
            except FacebenchError as err:  # an unsupported variant of a supported op
                raise FacebenchError(f"{self.source}: node {step.name!r} ({step.op_type}): "
                                     f"{err}") from None
            for name, value in zip(step.outputs, result if isinstance(result, tuple)
                                   else (result,)):
                if name:
                    env[name] = value
            for name in free:
                env.pop(name, None)
        outs = tuple(self._value(env, n) for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs


def load_onnx(path) -> OnnxModule:
    """An ONNX file as an :class:`OnnxModule` in eval mode."""
    return OnnxModule(load_plan(path)).eval()

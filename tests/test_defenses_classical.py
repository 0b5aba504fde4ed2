"""Classical purifiers: contracts (shape, range, dtype), behaviour, and parameter checks.

Everything runs on tiny synthetic images; only the quilting bank test reads three real LFW
images, and only when the shared data is present.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facebench.errors import FacebenchError
from facebench.registry import DEFENSES
from facebench.defenses import quilting as Q


def smooth_images(n=2, size=32, seed=0, dtype=torch.float32):
    """Face-like test input: low-frequency colour blobs plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear",
                         align_corners=False)
    return (base + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1).to(dtype)


def random_bank(n=64, patch=8, seed=1):
    return torch.rand(n, 3, patch, patch, generator=torch.Generator().manual_seed(seed))


def make(name, **kw):
    if name == "tvm":
        kw.setdefault("seed", 0)
    if name == "quilting":
        kw.setdefault("patches", random_bank())
        kw.setdefault("seed", 0)
    return DEFENSES.get(name)(**kw)


NAMES = ["jpeg", "bit-depth", "median", "tvm", "quilting"]


def test_registered():
    assert set(NAMES) <= set(DEFENSES.names())
    for name in NAMES:
        assert DEFENSES.get(name).registry_description


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract(name, dtype):
    x = smooth_images(dtype=dtype)
    y = make(name)(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x)


def test_jpeg_compresses_and_is_nearly_idempotent():
    x = smooth_images()
    jpeg = make("jpeg", quality=75)
    once = jpeg(x)
    twice = jpeg(once)
    assert (once - x).abs().mean() > 1e-3
    assert (twice - once).abs().mean() < 2 / 255
    assert (make("jpeg", quality=10)(x) - x).abs().mean() > (once - x).abs().mean()


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_bit_depth_levels(bits):
    y = make("bit-depth", bits=bits)(torch.rand(2, 3, 16, 16))
    levels = torch.unique(y)
    assert len(levels) <= 2 ** bits
    top = 2 ** bits - 1
    assert torch.allclose(levels * top, (levels * top).round(), atol=1e-5)


def test_bit_depth_8_keeps_8bit_images():
    x = torch.randint(0, 256, (1, 3, 8, 8)).float() / 255
    assert torch.allclose(make("bit-depth", bits=8)(x), x, atol=1e-6)


def test_median_removes_salt_and_pepper():
    x = torch.full((1, 3, 12, 12), 0.5)
    x[0, :, 3, 4] = 1.0
    x[0, 1, 8, 8] = 0.0
    x[0, 2, 0, 0] = 1.0  # a corner pixel: reflect padding must not keep it
    assert torch.equal(make("median", size=3)(x), torch.full_like(x, 0.5))


def test_median_matches_scipy_and_has_gradient():
    from scipy.ndimage import median_filter
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64, requires_grad=True)
    med = make("median", size=3)
    assert med.differentiable and not med.randomized
    y = med(x)
    ref = median_filter(x.detach().numpy(), size=(1, 1, 3, 3), mode="mirror")
    assert np.allclose(y.detach().numpy(), ref)
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_tvm_seeding():
    x = smooth_images()
    a, b = make("tvm", seed=3)(x), make("tvm", seed=3)(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, make("tvm", seed=4)(x))
    tvm = make("tvm", seed=3)
    assert not torch.equal(tvm(x), tvm(x))  # a fresh mask on every call
    torch.manual_seed(7)
    c = make("tvm", seed=None)(x)
    torch.manual_seed(7)
    assert torch.equal(c, make("tvm", seed=None)(x))


def test_tvm_fill_uses_kept_pixels_only():
    from facebench.defenses.tvm import fill_dropped
    x = torch.rand(1, 3, 9, 9)
    keep = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    keep[0, 0, 4, 4] = True
    filled = fill_dropped(x, keep)
    assert torch.allclose(filled, x[:, :, 4:5, 4:5].expand_as(x))


def blocks(y, p):
    """Non-overlapping p×p blocks of y as rows (n*ny*nx, 3*p*p)."""
    n, c, h, w = y.shape
    return y.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * p * p)


def test_quilting_output_is_made_of_bank_patches():
    bank = random_bank(n=64, patch=8)
    y = make("quilting", patches=bank, patch=8, stride=8, k=5, seed=0)(smooth_images())
    dist = torch.cdist(blocks(y, 8), bank.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
    assert dist.min(dim=1).values.max() < 1e-5


def test_quilting_nearest_neighbour_and_seed():
    bank = random_bank(n=64, patch=8)
    # an image tiled from bank patches is rebuilt exactly by its nearest neighbours (k=1)
    tiles = bank[:16].view(4, 4, 3, 8, 8).permute(2, 0, 3, 1, 4).reshape(1, 3, 32, 32)
    nn1 = make("quilting", patches=bank, stride=8, k=1)
    assert not nn1.randomized
    assert torch.allclose(nn1(tiles), tiles, atol=1e-6)
    x = smooth_images()
    a = make("quilting", patches=bank, k=10, seed=5)(x)
    assert torch.equal(a, make("quilting", patches=bank, k=10, seed=5)(x))
    assert not torch.equal(a, make("quilting", patches=bank, k=10, seed=6)(x))


def test_quilting_defaults_scale_with_image():
    assert Q.scaled_patch(112) == 11 and Q.scaled_patch(150) == 15
    assert list(Q.grid(32, 8, 6)) == [0, 6, 12, 18, 24]
    assert list(Q.grid(30, 8, 8)) == [0, 8, 16, 22]


def test_build_patch_bank_crops_and_file(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    bank = Q.build_patch_bank(imgs, patch=5, n_patches=30, seed=2)
    assert bank.shape == (30, 3, 5, 5) and bank.dtype == torch.uint8
    assert torch.equal(bank, Q.build_patch_bank(imgs, patch=5, n_patches=30, seed=2))
    windows = torch.from_numpy(imgs).permute(0, 3, 1, 2).unfold(2, 5, 1).unfold(3, 5, 1)
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, 75).float()
    assert torch.cdist(bank.flatten(1).float(), windows).min(dim=1).values.max() == 0
    torch.save(bank, tmp_path / "bank.pt")
    quilt = make("quilting", patches=None, bank=str(tmp_path / "bank.pt"))
    assert torch.allclose(quilt.bank(20, 24), bank.float() / 255)


def test_quilting_builds_and_caches_bank_from_lfw(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(Q, "bank_cache_dir", lambda: tmp_path)
    quilt = make("quilting", patches=None, data_home=str(shared_data), n_images=3,
                 n_patches=40)
    bank = quilt.bank(56, 56)
    assert bank.shape == (40, 3, 7, 7)  # 11 px at 112 -> 5.5 -> odd 7 at 56
    assert len(list(tmp_path.glob("*.pt"))) == 1
    again = make("quilting", patches=None, data_home="/nonexistent", n_images=3,
                 n_patches=40).bank(56, 56)  # read from the cache, no data needed
    assert torch.equal(bank, again)


@pytest.mark.parametrize("name,kw", [
    ("jpeg", {"quality": 0}), ("jpeg", {"quality": 101}), ("jpeg", {"quality": "high"}),
    ("bit-depth", {"bits": 0}), ("bit-depth", {"bits": 9}), ("bit-depth", {"bits": 2.5}),
    ("median", {"size": 0}), ("median", {"size": True}),
    ("tvm", {"keep": 0.0}), ("tvm", {"keep": 1.5}), ("tvm", {"weight": -1}),
    ("tvm", {"seed": -1}), ("quilting", {"k": 0}), ("quilting", {"patch": 4, "stride": 6}),
    ("quilting", {"bank": "x.pt"}), ("quilting", {"patches": torch.rand(4, 3, 5, 6)}),
    ("quilting", {"patches": None, "bank": "/nonexistent/bank.pt"}),
    ("quilting", {"patch": 5}),  # the bank holds 8×8 patches
])
def test_bad_params(name, kw):
    with pytest.raises(FacebenchError, match=name):
        make(name, **kw)


def test_bad_input_shape():
    with pytest.raises(FacebenchError, match="N×3×H×W"):
        make("jpeg")(torch.rand(3, 8, 8))

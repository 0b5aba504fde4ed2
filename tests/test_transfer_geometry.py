"""Transfer between alignment geometries: every aligner as a linear map of the photo (float
crop, and the least-squares way back), carried perturbations, and one end-to-end transfer
from dlib-resnet's 150 px dlib chip to sface's 112 px ArcFace crop.

Real photos from the embedded LFW sample (no download): a few frames, a few pairs, 3 PGD steps.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facebench.datasets.lfw_sample as sample
from facebench.data import geometry as G
from facebench.data.align import Aligner, FixedCrop, ResizeOnly, get_aligner
from facebench.data.images import load_image
from facebench.errors import FacebenchError
from facebench.transfer import GeometryTransfer, evaluate_transfer, geometry_transfer

cv2 = pytest.importorskip("cv2")

SAMPLE = sorted(Path(sample.HERE, "lfw").glob("*/*.jpg"))
#: registered geometry -> crop size: the three recognizers' own, a plain resize, dlib's 5pt
GEOMETRIES = [("dlib-chip", 150), ("facenet-160", 160), ("arcface-5pt", 112), ("resize", 112),
              ("dlib-5pt", 150)]


@pytest.fixture(scope="module")
def frames():
    return [load_image(p) for p in SAMPLE[::37][:3]]


@pytest.fixture(scope="module")
def aligners():
    return {name: get_aligner(name, (size, size)) for name, size in GEOMETRIES}


def smooth_delta(size, seed=0, amp=0.03):
    """A smooth crop-space perturbation (a few low frequencies per channel)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    chans = [sum(rng.normal() * np.cos(2 * np.pi * (rng.uniform(0, 3) * xx + rng.uniform(0, 3) * yy)
                                       + rng.uniform(0, 6)) for _ in range(4)) for _ in range(3)]
    d = np.stack(chans, -1)
    return amp * d / np.abs(d).max()


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- the maps, exactly

@pytest.mark.parametrize("region,out", [((65, 74, 187, 196), (150, 150)),
                                        ((70.5, 62.25, 180.1, 188.9), (160, 131)),
                                        ((0, 0, 250, 250), (112, 112))])
def test_pil_bilinear_weights_are_pils(frames, region, out):
    channel = frames[0][..., 1].astype(np.float32) / 255
    ref = np.asarray(Image.fromarray(channel, mode="F").resize(
        (out[1], out[0]), Image.Resampling.BILINEAR, box=region))
    assert np.abs(G.resize_geometry(channel.shape, region, out).crop(channel) - ref).max() < 5e-6


def test_sparse_warp_matches_opencv_and_area_shrink(frames):
    img = frames[1].astype(np.float32) / 255
    m = np.array([[0.9 * np.cos(0.2), -0.9 * np.sin(0.2), -40.0],
                  [0.9 * np.sin(0.2), 0.9 * np.cos(0.2), -60.0]])  # photo -> crop, leaves it
    ref = cv2.warpAffine(img, m, (112, 112), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    g = G.warp_geometry(G.invert_affine(m), (112, 112), img.shape)
    assert np.abs(g.crop(img) - ref).max() < 1e-4
    small = cv2.resize(img, (83, 97), interpolation=cv2.INTER_AREA)
    area = G.area_shrink_matrix(img.shape, (83, 97))
    got = (area @ img.reshape(-1, 3)).reshape(97, 83, 3)
    assert np.abs(got - small).max() < 1e-5


@pytest.mark.parametrize("name", [n for n, _ in GEOMETRIES])
def test_float_crop_is_the_uint8_crop_unrounded(frames, aligners, name):
    al = aligners[name]
    for img in frames:
        got = al.crop_float(img)
        assert got.shape == (*al.out_size, 3) and got.dtype == np.float64
        # PIL and dlib round or truncate (PIL after each of its two passes): <= 1 grey level
        assert np.abs(got * 255 - al(img)).max() <= 1.0 + 1e-6


@pytest.mark.parametrize("name", [n for n, _ in GEOMETRIES])
def test_to_frame_then_crop_reproduces_the_delta_and_is_zero_outside(frames, aligners, name):
    al = aligners[name]
    for k, img in enumerate(frames):
        g = al.geometry(img)
        delta = smooth_delta(al.out_size[0], seed=k)
        d = al.to_frame(delta, img)
        assert d.shape == img.shape
        # pasted into the photo and cropped again: the same delta, to interpolation error
        assert rel(g.crop(d), delta) < 0.01
        support = g.support()
        assert (d[~support] == 0).all()  # nothing outside the pixels the crop reads
        assert support.mean() < 0.6 or name == "resize"  # (a resize reads the whole photo)
        assert np.abs(d[support]).max() > 0


def test_fixed_box_support_is_the_box_and_shape_is_enough(frames):
    al = FixedCrop((65, 74, 122, 122), (150, 150))
    g = al.geometry((250, 250))
    rows, cols = np.flatnonzero(g.support().any(1)), np.flatnonzero(g.support().any(0))
    assert rows.min() >= 73 and rows.max() <= 196 and cols.min() >= 64 and cols.max() <= 187
    delta = smooth_delta(150)
    assert np.array_equal(al.to_frame(delta, (250, 250)), al.to_frame(delta, frames[0]))
    # a 500 px photo scales the box: the support doubles with it
    big = al.geometry((500, 500)).support()
    assert abs(big.sum() / g.support().sum() - 4) < 0.2


def test_crop_is_linear_so_a_perturbed_photo_crops_to_clean_plus_carried(frames, aligners):
    img = frames[2]
    for name in ("facenet-160", "arcface-5pt"):
        g = aligners[name].geometry(img)
        d = aligners["dlib-chip"].to_frame(smooth_delta(150), img)
        x = img / 255
        assert np.allclose(g.crop(x + d), g.crop(x) + g.crop(d), atol=1e-12)


def test_white_noise_on_an_enlarging_crop_keeps_only_what_a_photo_holds(frames):
    """dlib's chip enlarges the photo (122 px box -> 150 px): per-pixel noise of the chip
    has no photo that makes it, and the round trip keeps its projection (about 122/150 of
    its norm per side), never more than it was."""
    g = get_aligner("dlib-chip", (150, 150)).geometry(frames[0])
    noise = np.random.default_rng(0).normal(0, 0.01, (150, 150, 3))
    rt = g.roundtrip(noise)
    assert 0.7 < np.linalg.norm(rt) / np.linalg.norm(noise) < 0.9
    assert rel(g.roundtrip(rt), rt) < 0.02  # a projection: what survives, survives again
    # sface's 5-point crop shrinks the LFW face slightly: the same noise survives whole
    g5 = get_aligner("arcface-5pt", (112, 112)).geometry(frames[0])
    noise5 = np.random.default_rng(1).normal(0, 0.01, (112, 112, 3))
    assert rel(g5.roundtrip(noise5), noise5) < 0.05


def test_detecting_aligner_geometry_detects_like_a_call(frames, aligners):
    al = aligners["arcface-5pt"]
    img = frames[0]
    _, found = al.matrix(img)
    assert found
    g = al.geometry(img)
    # the float frame path rounds to uint8 for the detector: same face, same map
    assert np.allclose(al.geometry(img / 255.0).crop(img), g.crop(img))
    strict = type(al)((112, 112), fallback=False, detector=al.detector)
    with pytest.raises(FacebenchError, match="no face"):
        strict.geometry(np.full((250, 250, 3), 128, dtype=np.uint8))


def test_aligners_without_a_map_say_so():
    class Opaque(Aligner):
        key = "opaque"
        out_size = (8, 8)

    with pytest.raises(FacebenchError, match="cannot"):
        Opaque().to_frame(np.zeros((8, 8, 3)), (20, 20))
    same = ResizeOnly((40, 40)).geometry((40, 40))
    delta = smooth_delta(40)
    assert np.allclose(same.to_frame(delta), delta, atol=1e-3)  # identity up to the ridge


# ---------------------------------------------------------------- carrying and end to end

def test_carrying_through_the_photo_to_the_same_geometry_gives_the_delta_back(aligners):
    paths = [str(p) for p in SAMPLE[:2]]
    al = aligners["facenet-160"]
    crops = np.stack([al(load_image(p)) for p in paths])
    carry = GeometryTransfer(paths, al, al, crops, crops)
    probe = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    delta = torch.from_numpy(np.stack([smooth_delta(160, seed=s) for s in (3, 4)]))
    adv = (probe + delta.permute(0, 3, 1, 2).float()).clamp(0, 1)
    out, seen_src = carry([0, 1], probe, adv, source_view=True)
    assert out.shape == probe.shape and torch.isfinite(out).all()
    assert rel((out - probe).numpy(), (adv - probe).numpy()) < 0.02
    assert torch.allclose(out, seen_src)
    stats = carry.metrics()
    assert 0.98 < stats["transfer_kept"] < 1.02 and stats["transfer_photo_l2"] > 0


def test_no_carry_for_plain_transfer():
    from facebench.dataset import load_dataset
    from facebench.runner import load_recognizer

    ds = load_dataset("lfw-sample")
    src = (load_recognizer("dlib-resnet"), None)
    assert geometry_transfer(None, get_aligner("center"), ds, None, None) is None
    assert geometry_transfer(src, ds.aligner(src[0]), ds, None, None) is None


def test_pgd_crafted_on_dlib_chips_transfers_to_sface_crops(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    df = evaluate_transfer("dlib-resnet", "sface", dataset="lfw-sample", pairs=6,
                           attack="pgd", eps=0.04, attack_params={"steps": 3}, batch_size=6,
                           out=str(tmp_path / "runs.csv"))
    assert np.isfinite(df["value"].dropna()).all()
    assert (df["recognizer"] == "sface").all()
    adv = df[df.attack == "pgd[steps=3]"].set_index("metric")["value"]
    assert set(df[df.attack == "pgd[steps=3]"]["adaptive"]) == {"transfer:dlib-resnet"}
    assert adv["mean_rel_l2"] <= 0.04 + 1e-5  # the budget, on the source's crop
    assert 0.5 < adv["transfer_kept"] <= 1.0 + 1e-6
    assert 0 < adv["transfer_target_rel_l2"] < 0.08
    assert adv["source_asr"] >= 0.5  # it works on the model it was crafted on
    assert 0.0 <= adv["asr"] <= 1.0  # what reaches sface (reported, not a threshold)
    print(f"\ndlib-resnet -> sface, PGD rel-l2 0.04, 3 steps, 6 pairs: ASR {adv['asr']:.3f}, "
          f"source ASR {adv['source_asr']:.3f} (carried {adv['source_asr_carried']:.3f}), "
          f"kept {adv['transfer_kept']:.3f}, target rel-l2 {adv['transfer_target_rel_l2']:.4f}")
    assert (tmp_path / "runs.csv").is_file()


def test_the_runner_carries_a_cross_geometry_source(tmp_path, monkeypatch):
    """``facebench.run(source=...)`` with another geometry: the same rows as
    :func:`evaluate_transfer` once the runner calls ``transfer.geometry_transfer``."""
    import facebench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kw = dict(dataset="lfw-sample", pairs=4, attack="pgd", eps=0.04,
              attack_params={"steps": 2}, progress=False)
    df = facebench.run(recognizer="sface", source="dlib-resnet", out=None, **kw)
    ref = evaluate_transfer("dlib-resnet", "sface", **kw)
    got = df[df.attack == "pgd[steps=2]"].set_index("metric")["value"]
    want = ref[ref.attack == "pgd[steps=2]"].set_index("metric")["value"]
    assert {"transfer_kept", "transfer_target_rel_l2"} <= set(got.index)
    common = got.index.intersection(want.index)
    assert np.allclose(got[common], want[common], equal_nan=True)


def test_transfer_from_a_bare_source_reuses_its_grey_box_examples(tmp_path, monkeypatch,
                                                                    capsys):
    """The examples a transfer crafts on a bare source are that source's own grey-box ones
    (its crops, gallery, threshold, seed), so a white-box run fills the cache a transfer
    matrix reads; the rows equal those of a transfer crafted afresh."""
    import facebench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kw = dict(dataset="lfw-sample", pairs=4, attack="pgd", eps=0.04,
              attack_params={"steps": 2}, out=None)
    facebench.run(recognizer="dlib-resnet", progress=False, **kw)
    capsys.readouterr()
    reused = facebench.run(recognizer="facenet", source="dlib-resnet", progress=True, **kw)
    assert "reusing cached grey-box pgd examples of dlib-resnet (4 probes)" in \
        capsys.readouterr().out
    fresh = facebench.run(recognizer="facenet", source="dlib-resnet", progress=False,
                          adv_cache=False, **kw)
    value = lambda df: df.set_index(["attack", "metric"])["value"]  # noqa: E731
    assert np.allclose(value(reused), value(fresh), equal_nan=True, rtol=0, atol=1e-7)
    # a defended source is not the bare one: nothing is reused
    facebench.run(recognizer="facenet", source="dlib-resnet+jpeg", progress=True, **kw)
    assert "reusing cached" not in capsys.readouterr().out


def test_photo_mode_from_the_cli_is_its_own_knowledge_label(tmp_path, monkeypatch):
    """``--transfer-mode photo``: the adversarial photo is rounded and re-cut by the target's
    aligner (YuNet included); its rows say ``@photo``, so they never share a cell with the
    linear carry, and the examples are still the source's cached grey-box ones."""
    from clitools import run_cli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "runs.csv"
    base = ("run", "--pairs", "4", "--attack", "pgd", "--steps", "2", "--out", out, "--quiet")
    r = run_cli(*base, "--transfer-mode", "photo")
    assert r.returncode != 0 and "--transfer-mode photo needs --source" in r.stderr
    for mode in ("linear", "photo"):
        r = run_cli(*base, "--recognizer", "sface", "--source", "dlib-resnet",
                    "--transfer-mode", mode)
        assert r.returncode == 0, r.stderr
    from facebench.results import read_runs

    rows = read_runs(str(out))
    adv = rows[rows.attack == "pgd[steps=2]"]
    assert set(adv["adaptive"]) == {"transfer:dlib-resnet", "transfer:dlib-resnet@photo"}
    kept = adv[adv.metric == "mean_rel_l2"].set_index("adaptive")["value"]
    assert kept["transfer:dlib-resnet"] == kept["transfer:dlib-resnet@photo"]  # same examples


@pytest.mark.parametrize("name", ["arcface-5pt", "dlib-5pt"])
def test_large_photos_take_the_area_pre_shrink_in_the_map_too(frames, aligners, name):
    """A 750 px photo makes both 5-point aligners shrink the face by more than 2x, so they
    area-average first; the map does the same."""
    big = np.asarray(Image.fromarray(frames[1]).resize((750, 750), Image.Resampling.BICUBIC))
    al = aligners[name]
    g = al.geometry(big)
    # the uint8 path rounds the shrunk photo too (and dlib truncates): <= 1.5 grey levels
    assert abs(al.crop_float(big) * 255 - al(big)).max() <= 1.5
    delta = smooth_delta(al.out_size[0], seed=5)
    assert rel(g.roundtrip(delta), delta) < 0.02

"""Recognizer-calibrated similarity (bench/calibration.py) and its use in SIDE's training.

The claim it rests on: centring embeddings on a training split's mean puts a compressed
cosine (dlib: impostors near 0.83) on ArcFace's scale (impostors near 0) and leaves an
ArcFace-like score (mean embedding already near zero) nearly unchanged.
"""
import numpy as np
import pytest
import torch

from facebench.calibration import Calibration, fit_calibration, fit_centre
from facebench.errors import FacebenchError


def _identities(n_people, per_person, dim, spread, offset, seed=0):
    """Unit embeddings: a shared ``offset`` direction plus per-person and per-image parts."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_people, dim, generator=g)
    centres = centres / centres.norm(dim=1, keepdim=True)
    shared = torch.zeros(dim)
    shared[0] = 1.0
    rows, people = [], []
    for i in range(n_people):
        for _ in range(per_person):
            v = centres[i] + spread * torch.randn(dim, generator=g) / dim ** 0.5
            rows.append(v / v.norm() + offset * shared)
            people.append(i)
    emb = torch.nn.functional.normalize(torch.stack(rows), dim=1)
    return emb, np.array(people)


def _genuine_impostor(cos, people):
    same = people[:, None] == people[None, :]
    off = ~np.eye(len(people), dtype=bool)
    return cos[same & off].mean(), cos[~same].mean()


def test_arcface_like_scores_are_nearly_unchanged():
    emb, people = _identities(40, 5, 128, spread=0.8, offset=0.0)
    cal = Calibration(fit_centre(emb))
    raw = (emb @ emb.T).numpy()
    centred = (cal(emb) @ cal(emb).T).numpy()
    assert cal.mean.norm() < 0.2
    assert np.abs(centred - raw).max() < 0.1
    g_raw, i_raw = _genuine_impostor(raw, people)
    g_cal, i_cal = _genuine_impostor(centred, people)
    assert abs(g_cal - g_raw) < 0.05 and abs(i_cal - i_raw) < 0.05


def test_compressed_scores_get_the_arcface_scale():
    """A dlib-like band (impostors ~0.8) comes out with impostors near 0 and a genuine-
    impostor gap several times wider."""
    emb, people = _identities(40, 5, 128, spread=0.8, offset=2.0)
    raw = (emb @ emb.T).numpy()
    g_raw, i_raw = _genuine_impostor(raw, people)
    assert i_raw > 0.7  # the compressed band
    cal = Calibration(fit_centre(emb))
    g_cal, i_cal = _genuine_impostor((cal(emb) @ cal(emb).T).numpy(), people)
    assert abs(i_cal) < 0.05
    assert (g_cal - i_cal) > 4 * (g_raw - i_raw)


def test_none_is_the_identity_and_cosine_broadcasts():
    emb, _ = _identities(4, 3, 16, spread=0.5, offset=1.0)
    ident = Calibration.identity(16)
    assert torch.equal(ident(emb), emb)
    cal = Calibration(fit_centre(emb))
    one = cal.cosine(emb[:2].unsqueeze(1).expand(2, 3, 16), emb[:2].unsqueeze(1))
    assert one.shape == (2, 3) and torch.allclose(one[:, 0], torch.ones(2), atol=1e-5)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(FacebenchError, match="at least two"):
        fit_centre(torch.zeros(1, 8))
    with pytest.raises(FacebenchError, match="NaN"):
        fit_centre(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(FacebenchError, match="centre, none"):
        Calibration(torch.zeros(3), "affine")


def test_fit_calibration_on_real_faces_of_the_sample():
    """dlib-resnet on the embedded sample's crops: raw cosine between different images sits
    in the compressed band, the calibrated one near 0 (people differ for most pairs)."""
    from facebench.data import load_pairs, pair_images
    from facebench.runner import load_recognizer
    from facebench.embed import to_float

    rec = load_recognizer("dlib-resnet")
    pairs = load_pairs("lfw-sample")
    images, _, _ = pair_images(pairs.subset(20, 0), rec_aligner(rec), progress=False)

    def embed(x):
        return torch.nn.functional.normalize(rec(x), dim=1)

    cal, info = fit_calibration("centre", embed, images, lambda b: to_float(b, "cpu"))
    assert info["n_images"] == len(images) >= 20
    assert info["mean_raw_cosine"] > 0.7
    assert abs(info["mean_calibrated_cosine"]) < 0.1
    assert 0.5 < info["centre_norm"] < 1.0


def rec_aligner(rec):
    from facebench.data import aligner_for

    return aligner_for("lfw-sample", rec)

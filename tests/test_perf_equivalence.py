"""The speed paths compute what the reference paths compute (issue 13).

dlib-resnet's fast forward (channels_last, in place; optionally with the affines folded
into the convolutions) against the layer-by-layer NCHW reference on real face crops of the
shipped sample, and the in-place PGD / MI-FGSM loop against the out-of-place loop it
replaced. Speed itself is measured by ``benchmarks/``, never asserted here.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import facebench
from facebench.attack import success
from facebench.data import aligner_for, load_pairs, pair_images
from facebench.embed import embed_images, to_float

EMB_TOL = 1e-5


@pytest.fixture(scope="module")
def sample():
    """12 probes and their gallery crops from the shipped lfw-sample (half same-identity)."""
    model = facebench.load_recognizer("dlib-resnet")
    pairs = load_pairs("lfw-sample").subset(12, 0)
    images, idx_a, idx_b = pair_images(pairs, aligner_for("lfw-sample", model), progress=False)
    return model, images, idx_a, idx_b, np.asarray(pairs.same, dtype=bool)


def variant(model, fast: bool, fold: bool = False):
    m = copy.deepcopy(model)
    m.fast, m.fold = fast, fold
    return m


@pytest.mark.parametrize("fold", [False, True])
def test_fast_embeddings_match_the_reference(sample, fold):
    model, images, *_ = sample
    ref = embed_images(variant(model, False), images, 8, progress=False)
    got = embed_images(variant(model, True, fold), images, 8, progress=False)
    assert got.shape == ref.shape == (len(images), 128)
    assert (got - ref).abs().max().item() < EMB_TOL
    # contiguous NCHW input too (what a user's own loader gives), not only to_float's layout
    x = to_float(images[:4]).contiguous()
    with torch.no_grad():
        assert (variant(model, True, fold)(x) - ref[:4]).abs().max().item() < EMB_TOL


def test_fast_path_is_bit_for_bit_the_reference_on_the_runners_layout(sample):
    """to_float's probes (NCHW shape, pixel-interleaved memory) are what runs feed the model:
    there the fast path performs the reference's operations on the reference's kernels, so
    embeddings and input gradients are identical, and earlier results reproduce exactly."""
    model, images, idx_a, idx_b, _ = sample
    x = to_float(images[idx_a[:6]])
    g = torch.nn.functional.normalize(torch.randn(6, 128, generator=torch.Generator().manual_seed(0)))
    out = []
    for m in (variant(model, False), variant(model, True)):
        xg = x.detach().requires_grad_(True)
        emb = m(xg)
        cos = torch.nn.functional.cosine_similarity(emb, g, dim=1)
        out.append((emb.detach(), torch.autograd.grad(cos.sum(), xg)[0]))
    (e_ref, g_ref), (e_fast, g_fast) = out
    assert torch.equal(e_ref, e_fast) and torch.equal(g_ref, g_fast)


def test_fast_input_gradient_matches_and_keeps_the_input_layout(sample):
    model, images, idx_a, idx_b, _ = sample
    g = embed_images(model, images[idx_b[:4]], progress=False)

    def grad(m, x):
        x = x.detach().requires_grad_(True)
        cos = torch.nn.functional.cosine_similarity(m(x), g, dim=1)
        return torch.autograd.grad(cos.sum(), x)[0]

    x = to_float(images[idx_a[:4]]).contiguous()
    ref, got = grad(variant(model, False), x), grad(variant(model, True), x)
    assert got.is_contiguous()  # attacks (and plugins) may .view() it
    assert ((got - ref).norm() / ref.norm()).item() < 1e-3
    assert (got.sign() == ref.sign()).float().mean().item() > 0.999


def test_fast_weights_follow_parameter_changes(sample):
    """The packed weights are rebuilt after an in-place change, a dtype change, and the
    reference path runs (with weight gradients) while a parameter requires grad."""
    model, images, *_ = sample
    m = variant(model, True)
    x = to_float(images[:2])
    with torch.no_grad():
        before = m(x)
        m.blocks[0].affine1.gamma.mul_(1.5)
        changed = m(x)
        m.fast = False
        want = m(x)
        m.fast = True
    assert (changed - before).abs().max() > 1e-3 and (changed - want).abs().max() < EMB_TOL
    m64 = copy.deepcopy(m).double()
    with torch.no_grad():
        assert (m64(x.double()).float() - want).abs().max() < EMB_TOL
    m.requires_grad_(True)
    m(x).sum().backward()
    assert m.stem.conv.weight.grad is not None and m.blocks[0].affine1.gamma.grad is not None


# ------------------------------------------------------------------ the attack loop

def reference_ascend(attack, model, x, start, g, dodge, steps, alpha, mu=None):
    """The loop before issue 13, out of place: what the in-place one must reproduce (linf
    projected as max(min(·, hi), lo), the two-pass form the in-place clamp replaced)."""
    if attack.threat.norm == "linf":
        rb = attack.threat.radius(x).reshape(-1, 1, 1, 1)
        lo, hi = (x - rb).clamp(0.0, 1.0), (x + rb).clamp(0.0, 1.0)
        project = lambda z: torch.maximum(torch.minimum(z, hi), lo)  # noqa: E731
    else:
        project = lambda z: attack.threat.project(z, x)  # noqa: E731
    x_adv = start.detach()
    acc = torch.zeros_like(x) if mu is not None else None
    for _ in range(steps):
        _, grad = attack._gain_and_grad(model, x_adv, g, dodge)
        if acc is not None:
            n = grad.reshape(grad.shape[0], -1).abs().sum(dim=1).clamp_min(1e-30)
            acc = mu * acc + grad / n.reshape(-1, 1, 1, 1)
            grad = acc
        x_adv = project(x_adv + alpha * attack.threat.normalize_step(grad))
    return x_adv.detach()


@pytest.fixture(scope="module")
def pgd_inputs(sample):
    model, images, idx_a, idx_b, same = sample
    emb = embed_images(variant(model, False), images, progress=False)
    scores = torch.nn.functional.cosine_similarity(emb[idx_a], emb[idx_b]).numpy()
    thr = float(np.median(scores))
    pick = slice(0, 6)  # 3 same, 3 different: seconds, not minutes
    return (to_float(images[idx_a[pick]]), emb[idx_b[pick]], torch.from_numpy(same[pick]),
            thr)


@pytest.mark.parametrize("name,params", [
    ("pgd", dict(norm="linf", eps=2.0, steps=2, step_size=0.5, random_start=False)),
    ("pgd", dict(norm="rel-l2", eps=0.01, steps=2, random_start=True)),
    ("mim", dict(norm="linf", eps=2.0, steps=2)),
    ("mim", dict(norm="rel-l2", eps=0.01, steps=2)),
    ("bim", dict(norm="linf", eps=2.0, steps=3)),
])
def test_in_place_loop_is_bit_for_bit_the_reference_loop(sample, pgd_inputs, monkeypatch,
                                                         name, params):
    """Same model: the in-place loop gives exactly the out-of-place loop's iterates."""
    import facebench.attacks._iterative as it

    model = variant(sample[0], True)
    x, g, dodge, thr = pgd_inputs
    attack = facebench.load_attack(name, **params)
    kept = x.clone()
    torch.manual_seed(0)
    got = attack.perturb(model, x, g, dodge, thr)
    assert torch.equal(x, kept)  # the in-place steps write only the loop's own buffers
    start = x.clone()
    it.ascend(attack, model, x, start, g, dodge, 2, torch.full((len(x), 1, 1, 1), 1e-3))
    assert torch.equal(start, kept)
    monkeypatch.setattr(it, "ascend", reference_ascend)
    for module in ("pgd", "mim", "bim"):  # the attacks imported ascend by name
        monkeypatch.setattr(f"facebench.attacks.{module}.ascend", reference_ascend)
    torch.manual_seed(0)
    want = attack.perturb(model, x, g, dodge, thr)
    assert torch.equal(got, want)


@pytest.mark.parametrize("params", [
    dict(norm="linf", eps=2.0, steps=3, step_size=0.5, random_start=False),
    dict(norm="rel-l2", eps=0.01, steps=3, random_start=True),
])
@pytest.mark.parametrize("layout", ["runner", "nchw"])
def test_optimised_pgd_matches_the_reference_pgd(sample, pgd_inputs, params, layout):
    """Optimised model + loop vs the reference model + loop: same ASR, pixels within
    0.5/255. On the runner's layout they are equal. Contiguous NCHW probes are converted to
    channels_last, whose convolutions round differently, and a sign step flips wherever a
    gradient component is ~0: a small share of pixels then moves by a step (0.5% after 3
    L∞ steps here; a float64 run of the reference itself differs more)."""
    fast, plain = variant(sample[0], True), variant(sample[0], False)
    x, g, dodge, thr = pgd_inputs
    x = x.contiguous() if layout == "nchw" else x
    attack = facebench.load_attack("pgd", **params)
    torch.manual_seed(0)
    got = attack.perturb(fast, x, g, dodge, thr)
    torch.manual_seed(0)
    project = attack.threat.projector(x)
    start = attack.threat.random_start(x) if params["random_start"] else x
    size = params.get("step_size") or 2.5 * attack.threat.eps / params["steps"]
    alpha = attack.threat.radius(x, eps=size).reshape(-1, 1, 1, 1)
    want = reference_ascend(attack, plain, x, start, g, dodge, params["steps"], alpha)
    assert project(got).sub(got).abs().max() < 1e-7  # inside the ball and [0, 1]
    with torch.no_grad():
        ok_got = success(plain(got), g, dodge, thr)
        ok_want = success(plain(want), g, dodge, thr)
    assert ok_got.float().mean() == ok_want.float().mean()
    within = ((got - want).abs() <= 0.5 / 255).float().mean().item()
    assert within >= (0.99 if layout == "nchw" else 1.0), f"{within:.4%} within 0.5/255"
    if layout == "runner":
        assert torch.equal(got, want)

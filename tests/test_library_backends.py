"""Library backends (art:, foolbox:, torchattacks:) on a toy recognizer: names, errors,
parameter mapping, the two-logit wrapper, and agreement with facebench's own PGD."""
import sys

import numpy as np
import pytest
import torch
from torch import nn

from facebench.attack import success
from facebench.attacks.library import TwoLogitVerifier, labels_for
from facebench.errors import FacebenchError
from facebench.registry import ATTACKS
from facebench.runner import build_attack
from facebench.threat import ThreatModel

LIBS = {"art": "art", "foolbox": "foolbox", "torchattacks": "torchattacks"}
PGD = {"art": "art:ProjectedGradientDescent", "foolbox": "foolbox:LinfPGD",
       "torchattacks": "torchattacks:PGD"}


def need(prefix):
    pytest.importorskip(LIBS[prefix])


@pytest.fixture
def toy():
    """A small conv 'recognizer', probes, gallery embeddings, goals and a median threshold."""
    gen = torch.Generator().manual_seed(0)
    rec = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 8))
    with torch.no_grad():
        for p in rec.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    rec.eval().requires_grad_(False)
    x = torch.rand(6, 3, 12, 12, generator=gen)
    g = rec(torch.rand(6, 3, 12, 12, generator=gen))
    dodge = torch.tensor([True, False, True, False, True, False])
    thr = float(nn.functional.cosine_similarity(rec(x), g).median())
    return rec, x, g, dodge, thr


# -- names and missing libraries --------------------------------------------------------------
def test_prefixes_are_registered():
    assert {"art", "foolbox", "torchattacks"} <= {p for p, _ in ATTACKS.prefixes()}
    assert "torchattacks:PGD" in ATTACKS


@pytest.mark.parametrize("prefix, typo, right", [("torchattacks", "PGDD", "PGD"),
                                                 ("art", "ProjectedGradientDescnt",
                                                  "ProjectedGradientDescent"),
                                                 ("foolbox", "LinfPDG", "LinfPGD")])
def test_unknown_library_attack_name(prefix, typo, right):
    need(prefix)
    with pytest.raises(FacebenchError, match=f"unknown attack {prefix}:{typo}.*{right}"):
        ATTACKS.get(f"{prefix}:{typo}")


@pytest.mark.parametrize("prefix, pip", [("art", "pip install adversarial-robustness-toolbox"),
                                         ("foolbox", "pip install foolbox"),
                                         ("torchattacks", "pip install --no-deps torchattacks")])
def test_missing_library_says_what_to_install(prefix, pip, monkeypatch):
    monkeypatch.setitem(sys.modules, LIBS[prefix], None)  # `import <lib>` now fails
    with pytest.raises(FacebenchError, match=pip):
        ATTACKS.get(PGD[prefix])


# -- the two-logit wrapper --------------------------------------------------------------------
def test_two_logit_decision_is_facebench_success(toy):
    rec, x, g, dodge, thr = toy
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        xs = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        net = TwoLogitVerifier(rec, x, g, thr, scale=37.0)
        logits = net(xs)
        accept = logits.argmax(dim=1) == 1
        flipped = torch.where(dodge, ~accept, accept)  # dodging wins when rejected
        assert torch.equal(flipped, success(rec(xs), g, dodge, thr))
        # the label is the decision an untargeted attack must leave
        assert torch.equal(labels_for(dodge), dodge.long())
        # logits are s·[thr − cos, cos − thr]
        cos = nn.functional.cosine_similarity(rec(xs), g)
        assert torch.allclose(logits[:, 1], 37.0 * (cos - thr), atol=1e-5)
        assert torch.allclose(logits[:, 0], -logits[:, 1])


def test_sub_batches_are_matched_to_their_pairs(toy):
    rec, x, g, dodge, thr = toy
    net = TwoLogitVerifier(rec, x, g, thr)
    adv = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    full = net(adv)
    order = torch.tensor([4, 1, 3])
    assert torch.allclose(net(adv[order]), full[order], atol=1e-6)
    # a duplicated probe with two different galleries cannot be told apart in a sub-batch
    x2 = torch.cat([x[:1], x[:1], x[2:]])
    net2 = TwoLogitVerifier(rec, x2, g, thr)
    with pytest.raises(FacebenchError, match="identical probes"):
        net2(x2[:2])
    net2(x2)  # the whole batch is taken in order


# -- parameters -------------------------------------------------------------------------------
def test_art_param_mapping():
    need("art")
    a = build_attack(PGD["art"], ThreatModel("linf", 2), {"steps": 7, "step_size": 0.5,
                                                           "random_start": True, "decay": 0.9})
    kw = a.kwargs_for(torch.rand(3, 3, 4, 4))
    assert kw["max_iter"] == 7 and kw["num_random_init"] == 1 and kw["decay"] == 0.9
    assert kw["eps_step"] == pytest.approx(0.5 / 255) and kw["eps"] == pytest.approx(2 / 255)
    assert kw["norm"] == np.inf and kw["batch_size"] == 3 and kw["targeted"] is False
    # unset step size: facebench's PGD rule 2.5·eps/steps (here the given steps)
    kw = build_attack(PGD["art"], ThreatModel("l2", 1.0), {"steps": 5}).kwargs_for(
        torch.rand(2, 3, 4, 4))
    assert kw["eps_step"] == pytest.approx(0.5) and kw["norm"] == 2 and kw["eps"] == 1.0


def test_torchattacks_and_foolbox_param_mapping():
    need("torchattacks")
    need("foolbox")
    x = torch.rand(2, 3, 4, 4)
    kw = build_attack(PGD["torchattacks"], ThreatModel("linf", 8), {"steps": 4}).kwargs_for(x)
    assert kw == pytest.approx({"steps": 4, "alpha": 5 / 255, "eps": 8 / 255})
    kw = build_attack(PGD["foolbox"], ThreatModel("linf", 8),
                      {"step_size": 1, "random_start": False}).kwargs_for(x)
    assert kw == pytest.approx({"abs_stepsize": 1 / 255, "random_start": False})
    # the library default step is kept when the user picks a native step keyword
    kw = build_attack(PGD["foolbox"], ThreatModel("linf", 8), {"rel_stepsize": 0.1}).kwargs_for(x)
    assert kw == {"rel_stepsize": 0.1}
    # a native keyword passes through verbatim
    kw = build_attack("torchattacks:MIFGSM", ThreatModel("linf", 8), {"decay": 0.5}).kwargs_for(x)
    assert kw["decay"] == 0.5 and "steps" not in kw  # the library's default steps (10) ...
    assert kw["alpha"] == pytest.approx(2 / 255)  # ... set the default step 2.5·eps/steps


@pytest.mark.parametrize("prefix", ["art", "foolbox", "torchattacks"])
def test_bad_parameters_fail_with_one_line(prefix):
    need(prefix)
    t = ThreatModel("linf", 4)
    with pytest.raises(FacebenchError, match="unknown parameter 'stepz'.*did you mean 'steps'"):
        build_attack(PGD[prefix], t, {"stepz": 3})
    with pytest.raises(FacebenchError, match="steps must be an integer"):
        build_attack(PGD[prefix], t, {"steps": 0})
    with pytest.raises(FacebenchError, match="random_start must be true or false"):
        build_attack(PGD[prefix], t, {"random_start": 3})
    with pytest.raises(FacebenchError, match="logit_scale must be a number > 0"):
        build_attack(PGD[prefix], t, {"logit_scale": 0})
    for attr in ("eps", "norm"):
        with pytest.raises(FacebenchError, match="set by facebench|unknown parameter"):
            build_attack(PGD[prefix], t, {attr: 0.1})


def test_library_value_errors_become_facebench_errors():
    need("art")
    with pytest.raises(FacebenchError, match="cannot build art:ProjectedGradientDescent"):
        build_attack(PGD["art"], ThreatModel("linf", 4), {"eps_step": -1.0})
    with pytest.raises(FacebenchError, match="give step_size or eps_step, not both"):
        build_attack(PGD["art"], ThreatModel("linf", 4), {"step_size": 1, "eps_step": 0.1})
    with pytest.raises(FacebenchError, match="has no steps parameter"):
        build_attack("art:FastGradientMethod", ThreatModel("linf", 4), {"steps": 3})


@pytest.mark.parametrize("prefix", ["foolbox", "torchattacks"])
def test_rel_l2_and_wrong_norm_rejected(prefix):
    need(prefix)
    with pytest.raises(FacebenchError, match="cannot take a rel-l2 budget"):
        build_attack(PGD[prefix], ThreatModel("rel-l2", 0.02), {})
    with pytest.raises(FacebenchError, match="is an linf attack but the threat model is l2"):
        build_attack(PGD[prefix], ThreatModel("l2", 1.0), {})


def test_art_rel_l2_is_a_per_probe_l2_ball(toy):
    need("art")
    rec, x, g, dodge, thr = toy
    t = ThreatModel("rel-l2", 0.02)
    a = build_attack(PGD["art"], t, {"steps": 3})
    adv = a.perturb(rec, x, g, dodge, thr)
    ratio = t.norm_of(adv - x) / t.radius(x)
    assert (ratio <= 1 + 1e-4).all() and (ratio > 0.9).all()  # budget used, not exceeded


# -- agreement with facebench's PGD -----------------------------------------------------------
@pytest.mark.parametrize("prefix", ["art", "foolbox", "torchattacks"])
@pytest.mark.parametrize("norm, eps, lib_name", [("linf", 4, None), ("l2", 0.3, "l2")])
def test_library_pgd_equals_facebench_pgd(toy, prefix, norm, eps, lib_name):
    need(prefix)
    rec, x, g, dodge, thr = toy
    name = PGD[prefix] if lib_name is None else {
        "art": "art:ProjectedGradientDescent", "foolbox": "foolbox:L2PGD",
        "torchattacks": "torchattacks:PGDL2"}[prefix]
    t = ThreatModel(norm, eps)
    params = {"steps": 4, "step_size": eps / 3, "random_start": False}
    ours = build_attack("pgd", t, params).perturb(rec, x, g, dodge, thr)
    lib = build_attack(name, t, params)
    theirs = lib.perturb(rec, x, g, dodge, thr)
    assert theirs.shape == x.shape and torch.equal(x, toy[1])  # inputs untouched
    assert (t.norm_of(theirs - x) <= t.radius(x) * (1 + 1e-5)).all()
    # same iterates up to float rounding; ART's L2 PGD clips to [0, 1] before projecting
    # onto the ball (facebench and the others project, then clip), a small real difference
    assert (theirs - ours).abs().max() < (3e-2 if (prefix, norm) == ("art", "l2") else 2e-3)
    cos = [nn.functional.cosine_similarity(rec(a), g) for a in (ours, theirs)]
    assert (cos[0] - cos[1]).abs().max() < 1e-3
    assert not torch.allclose(cos[1], nn.functional.cosine_similarity(rec(x), g), atol=1e-3)


def test_query_attacks_are_marked_black_box():
    need("torchattacks")
    assert ATTACKS.get("torchattacks:Square").gradient_based is False
    assert ATTACKS.get("torchattacks:PGD").gradient_based is True


def test_repr_names_the_library_version():
    need("torchattacks")
    import torchattacks

    a = build_attack(PGD["torchattacks"], ThreatModel("linf", 4), {"steps": 2})
    assert f"torchattacks={torchattacks.__version__}" in repr(a)
    assert repr(a) == repr(build_attack(PGD["torchattacks"], ThreatModel("linf", 4),
                                        {"steps": 2}))


def test_art_decision_based_attack_queries_each_pair_against_its_own_gallery(toy, monkeypatch):
    """HopSkipJump attacks one sample at a time with noise starts that cannot be matched back
    to a pair, so every pair runs in a verifier holding only its own gallery."""
    need("art")
    rec, x, g, dodge, thr = toy
    pairs_per_query = []
    original = TwoLogitVerifier.rows

    def spy(self, inp):
        pairs_per_query.append(self.probes.shape[0])
        return original(self, inp)

    monkeypatch.setattr(TwoLogitVerifier, "rows", spy)
    attack = build_attack("art:HopSkipJump", ThreatModel("l2", 20.0),
                          {"max_iter": 2, "max_eval": 20, "init_eval": 5, "init_size": 20})
    assert not attack.gradient_based
    torch.manual_seed(0)
    adv = attack.perturb(rec, x, g, dodge, thr)
    assert pairs_per_query and set(pairs_per_query) == {1}
    ok = success(rec(adv), g, dodge, thr)
    assert ok.float().mean() >= 0.5  # adversarial against its own gallery

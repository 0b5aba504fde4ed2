"""Attacks on a tiny random conv net: budget, purity, progress, and the goal masks."""
import pytest
import torch
from torch import nn

from facebench.attack import Attack, attacked_mask, gain, success
from facebench.errors import FacebenchError
from facebench.registry import ATTACKS
from facebench.threat import ThreatModel

NAMES = ["fgsm", "pgd", "deepfool", "cw"]
NORMS = ["linf", "l2", "rel-l2"]
FAST = {"cw": {"steps": 30, "search_steps": 3}, "pgd": {"steps": 10}}
THR = 0.993  # between the tiny net's same-image (~0.999) and other-image (~0.987) cosines


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    """Model, probes, gallery embeddings: rows 0-1 dodging, rows 2-3 impersonation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                          nn.Flatten(), nn.Linear(128, 16)).eval()
    x = torch.rand(2, 3, 32, 32)
    other = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        same_emb = model((x + 0.1 * torch.randn_like(x)).clamp(0, 1))
        diff_emb = model(other)
    probe = torch.cat([x, x])
    gallery = torch.cat([same_emb, diff_emb])
    dodge = torch.tensor([True, True, False, False])
    return model, probe, gallery, dodge


def mean_gain(model, probe, gallery, dodge):
    with torch.no_grad():
        return gain(model(probe), gallery, dodge).mean().item()


def make(name, norm, eps=None, **extra):
    return ATTACKS.get(name)(ThreatModel(norm, eps), **{**FAST.get(name, {}), **extra})


def test_setup_needs_an_attack(setup):
    model, probe, gallery, dodge = setup
    with torch.no_grad():
        assert not success(model(probe), gallery, dodge, THR).any()


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", NAMES)
def test_budget_purity_and_progress(setup, name, norm):
    model, probe, gallery, dodge = setup
    for p in model.parameters():
        p.grad = torch.ones_like(p)  # must survive: attacks use autograd.grad, not .backward
    before = (probe.clone(), gallery.clone(), dodge.clone())
    attack = make(name, norm, 0.5 * ThreatModel(norm).eps)
    adv = attack.perturb(model, probe, gallery, dodge, THR)
    assert torch.equal(probe, before[0]) and torch.equal(gallery, before[1])
    assert torch.equal(dodge, before[2])
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert adv.shape == probe.shape and not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    tm = attack.threat
    assert (tm.norm_of(adv - probe) <= tm.radius(probe) * (1 + 1e-5) + 1e-7).all()
    assert mean_gain(model, adv, gallery, dodge) > mean_gain(model, probe, gallery, dodge)
    for p in model.parameters():
        p.grad = None


def test_pgd_zero_eps_returns_clean(setup):
    model, probe, gallery, dodge = setup
    for norm in NORMS:
        adv = make("pgd", norm, 0.0).perturb(model, probe, gallery, dodge, THR)
        assert torch.equal(adv, probe)


def test_pgd_gain_grows_with_eps(setup):
    model, probe, gallery, dodge = setup
    gains = [mean_gain(model, make("pgd", "linf", e, random_start=False)
                       .perturb(model, probe, gallery, dodge, THR), gallery, dodge)
             for e in (0.5, 1, 2, 4, 8)]
    assert all(b >= a - 1e-6 for a, b in zip(gains, gains[1:])), gains


@pytest.mark.parametrize("name", ["deepfool", "cw"])
@pytest.mark.parametrize("norm, eps", [("l2", 1e3), ("rel-l2", 1.0), ("linf", 255)])
def test_minimal_attacks_flip_when_unbounded(setup, name, norm, eps):
    model, probe, gallery, dodge = setup
    adv = make(name, norm, eps).perturb(model, probe, gallery, dodge, THR)
    with torch.no_grad():
        flipped = success(model(adv), gallery, dodge, THR)
    assert flipped.float().mean() >= 0.75


def test_cw_failures_return_the_clean_probe(setup):
    model, probe, gallery, dodge = setup
    adv = make("cw", "l2", 1e3, steps=2, search_steps=1, lr=1e-6).perturb(
        model, probe, gallery, dodge, THR)
    assert torch.equal(adv, probe)


def test_cw_finds_smaller_l2_than_deepfool(setup):
    model, probe, gallery, dodge = setup
    sizes = {}
    for name in ("cw", "deepfool"):
        adv = make(name, "l2", 1e3, **({"steps": 100} if name == "cw" else {})).perturb(
            model, probe, gallery, dodge, THR)
        sizes[name] = (adv - probe).reshape(4, -1).norm(dim=1)
    assert sizes["cw"].mean() < sizes["deepfool"].mean(), sizes


def test_goal_masks():
    same = torch.tensor([True, False, True, False])
    att, dod = attacked_mask("dodging", same)
    assert att.tolist() == [True, False, True, False] and dod.tolist() == same.tolist()
    att, dod = attacked_mask("impersonation", same)
    assert att.tolist() == [False, True, False, True] and dod.tolist() == same.tolist()
    att, dod = attacked_mask("pair", [1, 0, 1, 0])
    assert att.all() and dod.tolist() == same.tolist()
    with pytest.raises(FacebenchError, match="goal"):
        attacked_mask("steal", same)


def test_gain_and_success_signs():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    g = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # cos = 0.7071
    dodge = torch.tensor([True, False])
    torch.testing.assert_close(gain(e, g, dodge), torch.tensor([-0.70710678, 0.70710678]))
    assert success(e, g, dodge, 0.8).tolist() == [True, False]
    assert success(e, g, dodge, 0.5).tolist() == [False, True]


def test_registry_and_descriptions():
    assert set(NAMES) <= set(ATTACKS.names()) and "none" not in ATTACKS
    for name in NAMES:
        cls = ATTACKS.get(name)
        assert issubclass(cls, Attack) and cls.gradient_based
        assert cls.registry_description
        assert cls(ThreatModel("linf")).name == name
    assert ATTACKS.get("pgd")(ThreatModel("linf")).steps == 40


def test_parameter_validation():
    tm = ThreatModel("linf")
    for name, bad in [("pgd", {"steps": 0}), ("pgd", {"step_size": -1}), ("pgd", {"stepz": 3}),
                      ("pgd", {"random_start": "yes"}), ("deepfool", {"overshoot": -0.1}),
                      ("cw", {"lr": 0}), ("cw", {"search_steps": 1.5}), ("fgsm", {"steps": 2})]:
        with pytest.raises(FacebenchError):
            ATTACKS.get(name)(tm, **bad)
    with pytest.raises(FacebenchError):
        ATTACKS.get("pgd")("linf")


def test_scalar_dodge_is_broadcast(setup):
    """`dodge=True` means every probe dodges: the same images as an all-True mask, and not
    the same as an all-False one (the attack really reads the goal)."""
    model, probe, gallery, _ = setup
    fgsm = make("fgsm", "linf")
    adv = fgsm.perturb(model, probe[:2], gallery[:2], True, THR)
    mask = fgsm.perturb(model, probe[:2], gallery[:2], torch.tensor([True, True]), THR)
    other = fgsm.perturb(model, probe[:2], gallery[:2], torch.tensor([False, False]), THR)
    assert adv.shape == probe[:2].shape
    assert torch.equal(adv, mask)
    assert not torch.allclose(adv, other)

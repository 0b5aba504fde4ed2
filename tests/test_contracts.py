"""Contracts every registered plugin must keep, looped over the registries (as timm's tests
loop over ``list_models()``): a new plugin is tested here with no new test file.

Attacks: every goal they support on two tiny pairs, inputs untouched, output shape, [0, 1],
inside the threat ball when bounded, finite, and the verification gain does not fall.
Defenses: shape, range and dtype kept, finite, deterministic unless declared randomized.
Recognizers: finite embeddings with gradients to the input at the declared input size.
Plugins that cannot run on toy inputs are left out by name in ``COVERED_ELSEWHERE``, which
says which test covers them (so they are not reported as skips).
"""
import inspect

import pytest
import torch
from torch import nn

from facebench.attack import gain
from facebench.registry import ATTACKS, DATASETS, DEFENSES, RECOGNIZERS
from facebench.threat import ThreatModel

COVERED_ELSEWHERE = {
    ("attack", "advhat"): "protocol attack (own evaluation protocol): tests/test_advhat.py",
    ("attack", "a-star"): "needs a trained SIDE eigenbasis: tests/test_a_star.py",
    ("defense", "side"): "needs its trained model and LFW for the basis: "
                         "tests/test_committed_weights.py",
    ("defense", "pin"): "needs a trained model: tests/test_side_mechanics.py",
    ("defense", "quilting"): "builds a patch bank from LFW: tests/test_defenses_classical.py",
}
#: cheap settings for the contract (the defaults run for minutes)
FAST = {"steps": 2, "search_steps": 1, "budgets": (20, 40), "restarts": 1}
GOALS = ("dodging", "impersonation")


def _names(kind, registry):
    return [n for n in registry.names() if (kind, n) not in COVERED_ELSEWHERE]


def _params(cls):
    defaults = getattr(cls, "defaults", None) or {}
    return {k: v for k, v in FAST.items() if k in defaults}


class Tiny(nn.Module):
    """A deterministic toy recognizer on 32x32 images."""

    input_size = (32, 32)

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.eval().requires_grad_(False)

    def forward(self, x):
        return self.fc(nn.functional.adaptive_avg_pool2d(self.conv(x).relu(), 4).flatten(1))


def toy_inputs():
    """Toy recognizer, two probes, their mates and two other faces (all seeded)."""
    torch.manual_seed(0)
    model = Tiny()
    g = torch.Generator().manual_seed(1)
    probe = torch.rand(2, 3, 32, 32, generator=g)
    mate = (probe + 0.05 * torch.randn(probe.shape, generator=g)).clamp(0, 1)
    other = torch.rand(2, 3, 32, 32, generator=g)
    return model, probe, mate, other


@pytest.fixture(scope="module")
def toy():
    return toy_inputs()


@pytest.mark.parametrize("name", _names("attack", ATTACKS))
@pytest.mark.parametrize("goal", GOALS)
def test_attack_contract(toy, name, goal, one_thread):
    check_attack(toy, name, goal)


def check_attack(toy, name, goal):
    cls = ATTACKS.get(name)
    model, probe, mate, other = toy
    gallery_img = mate if goal == "dodging" else other
    with torch.no_grad():
        gallery = model(gallery_img)
        cos = nn.functional.cosine_similarity(model(probe), gallery)
    dodge = torch.full((2,), goal == "dodging")
    # a threshold that every clean pair passes correctly, so each attack has work to do
    thr = float(cos.min() - 1e-3) if goal == "dodging" else float(cos.max() + 1e-3)
    threat = ThreatModel("linf", 8)
    attack = cls(threat, **_params(cls))
    before = (probe.clone(), gallery.clone(), dodge.clone())
    extra = {"gallery": gallery_img} if getattr(attack, "needs_gallery_image", False) else {}
    with torch.enable_grad():
        adv = attack.perturb(model, probe, gallery, dodge, thr, **extra)
    assert torch.equal(probe, before[0]) and torch.equal(gallery, before[1])
    assert torch.equal(dodge, before[2])
    assert adv.shape == probe.shape and adv.dtype == probe.dtype
    assert torch.isfinite(adv).all() and adv.min() >= 0 and adv.max() <= 1
    bounded = attack.gradient_based and not getattr(attack, "unbounded", False)
    if bounded:
        assert (adv - probe).abs().max() <= 8 / 255 + 1e-6
        with torch.no_grad():
            assert gain(model(adv), gallery, dodge).mean() >= \
                gain(model(probe), gallery, dodge).mean() - 1e-6


@pytest.mark.parametrize("name", _names("defense", DEFENSES))
def test_defense_contract(toy, name, one_thread):
    check_defense(toy, name)


def check_defense(toy, name):
    cls = DEFENSES.get(name)
    accepted = inspect.signature(cls.__init__).parameters
    defense = cls(**({"seed": 0} if "seed" in accepted else {}))
    _, probe, _, _ = toy
    x = probe.clone()
    y = defense(x)
    assert torch.equal(x, probe)  # input untouched
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert y.min() >= -1e-6 and y.max() <= 1 + 1e-6
    if not defense.randomized:
        assert torch.equal(defense(x), y), f"{name} is not declared randomized but varies"
    wrapped = defense.wrap(Tiny())
    assert wrapped(x).shape == (2, 16)


@pytest.mark.parametrize("name", RECOGNIZERS.names())
def test_recognizer_contract(name):
    model = RECOGNIZERS.get(name)().eval()
    h, w = model.input_size
    x = torch.rand(2, 3, h, w, requires_grad=True)
    emb = model(x)
    assert emb.dim() == 2 and emb.shape[0] == 2 and torch.isfinite(emb).all()
    emb.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert isinstance(getattr(model, "alignment", None), str)


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_contract(name):
    cls = DATASETS.get(name)
    dataset = cls()
    if dataset.protocols:
        assert dataset.default_protocol in dataset.protocols
    assert cls.registry_description
    if dataset.offline and name != "pairs":  # ships with facebench: must load anywhere
        pairs = dataset.pairs(dataset.default_protocol)
        assert len(pairs) >= 2 and pairs.same.any() and (~pairs.same).any()
        assert all(pairs.resolve(p).is_file() for p in pairs.unique_paths())

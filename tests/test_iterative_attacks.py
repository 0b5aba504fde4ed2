"""BIM, MIM / MI-FGSM, R+FGSM, R-PGD and DFANet on tiny tensors: budgets, update rules, hooks."""
import math

import pytest
import torch
from torch import nn

from facebench.attack import gain
from facebench.errors import FacebenchError
from facebench.registry import ATTACKS
from facebench.threat import ThreatModel

NAMES = ["bim", "mim", "mi-fgsm", "rfgsm", "rpgd", "dfanet"]
NORMS = ["linf", "l2", "rel-l2"]
FAST = {"rpgd": {"steps": 8}, "mim": {"steps": 8}, "bim": {"steps": 8}}


@pytest.fixture(scope="module", autouse=True)
def warm_imports(one_thread):
    ATTACKS.names()  # import every attack module once, outside the timed tests
    torch.testing.assert_close(torch.ones(1), torch.ones(1))  # its first call imports a lot


@pytest.fixture(scope="module")
def setup():
    """Tiny conv net, probes, gallery embeddings: rows 0-1 dodging, rows 2-3 impersonation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 16)).eval()
    model.requires_grad_(False)
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        same_emb = model((x + 0.1 * torch.randn_like(x)).clamp(0, 1))
        diff_emb = model(torch.rand(2, 3, 24, 24))
    return model, torch.cat([x, x]), torch.cat([same_emb, diff_emb]), \
        torch.tensor([True, True, False, False])


def make(name, norm, eps=None, **extra):
    return ATTACKS.get(name)(ThreatModel(norm, eps), **{**FAST.get(name, {}), **extra})


def mean_gain(model, probe, gallery, dodge):
    with torch.no_grad():
        return gain(model(probe), gallery, dodge).mean().item()


class Scripted:
    """Stands in for ``_gain_and_grad``: returns the given gradients in turn, records the points."""

    def __init__(self, *grads):
        self.grads = list(grads)
        self.points = []

    def __call__(self, model, x, gallery_emb, dodge):
        self.points.append(x.clone())
        grad = self.grads[min(len(self.points), len(self.grads)) - 1]
        return torch.zeros(x.shape[0]), grad.expand_as(x).clone()


# -- every attack, every norm ------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", NAMES)
def test_budget_range_purity_and_progress(setup, name, norm):
    model, probe, gallery, dodge = setup
    before = probe.clone()
    torch.manual_seed(1)
    attack = make(name, norm, 0.5 * ThreatModel(norm).eps)
    adv = attack.perturb(model, probe, gallery, dodge, 0.99)
    assert torch.equal(probe, before)
    assert adv.shape == probe.shape and not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    tm = attack.threat
    size = tm.norm_of(adv - probe)
    assert (size <= tm.radius(probe) * (1 + 1e-5) + 1e-7).all()
    assert (size > 0).all()
    assert mean_gain(model, adv, gallery, dodge) > mean_gain(model, probe, gallery, dodge)


@pytest.mark.parametrize("name", NAMES)
def test_zero_budget_returns_clean(setup, name):
    model, probe, gallery, dodge = setup
    for norm in NORMS:
        adv = make(name, norm, 0.0).perturb(model, probe, gallery, dodge, 0.99)
        assert torch.equal(adv, probe)


def test_registry_names_and_defaults():
    for name in NAMES:
        cls = ATTACKS.get(name)
        assert cls.registry_description and cls(ThreatModel("linf")).name == name
    tm = ThreatModel("rel-l2", 0.04)
    assert ATTACKS.get("mim")(tm).step_size_eps() == pytest.approx(1.5 * 0.04 / 20)
    assert ATTACKS.get("mi-fgsm")(tm).step_size_eps() == pytest.approx(0.04 / 10)
    assert ATTACKS.get("dfanet")(tm).p == 0.1
    assert ATTACKS.get("rfgsm")(ThreatModel("linf", 16)).alpha_eps() == 8
    assert ATTACKS.get("rpgd")(ThreatModel("linf", 8)).step_size_eps() == 2
    assert ATTACKS.get("rpgd")(tm).step_size_eps() == pytest.approx(0.01)
    # Kurakin's BIM schedule (seed 003): alpha 1/255, min(eps+4, 1.25 eps) steps
    assert [ATTACKS.get("bim")(ThreatModel("linf", e)).schedule()
            for e in (1, 7.8, 15, 50)] == [(1, 1.0), (9, 1.0), (18, 1.0), (54, 1.0)]
    assert ATTACKS.get("bim")(tm).schedule() == (20, pytest.approx(1.5 * 0.04 / 20))


@pytest.mark.parametrize("name, bad", [
    ("bim", {"steps": 0}), ("bim", {"step_size": 0}), ("bim", {"alpha": 1}),
    ("mim", {"mu": -1}), ("mim", {"steps": 2.5}), ("mi-fgsm", {"step_size": -1}),
    ("rfgsm", {"alpha": 8}), ("rfgsm", {"alpha": -1}), ("rfgsm", {"steps": 3}),
    ("rpgd", {"restarts": 0}), ("rpgd", {"steps": "many"}),
    ("dfanet", {"p": 1.0}), ("dfanet", {"p": -0.1}), ("dfanet", {"p": math.nan}),
    ("dfanet", {"p": True}), ("dfanet", {"mu": -0.5}),
])
def test_parameter_validation(name, bad):
    with pytest.raises(FacebenchError) as err:
        ATTACKS.get(name)(ThreatModel("linf", 4), **bad)
    assert "\n" not in str(err.value)


# -- update rules, hand-computed -----------------------------------------------------------
def test_mim_momentum_two_steps_by_hand(monkeypatch):
    """g1 = [3, 1] -> [0.75, 0.25]; g2 = 10·[-1, -1] -> [-0.5, -0.5]; sum [0.25, -0.25].

    With L1 normalisation and mu = 1 the second sign is [+, -]: x2 = x + a·[2, 0]. Without
    momentum it would be sign(g2) = [-, -] (x2 = x); without normalisation sign([-7, -9]).
    """
    x = torch.full((1, 1, 1, 2), 0.5)
    attack = ATTACKS.get("mim")(ThreatModel("linf", 8), steps=2, step_size=1)
    script = Scripted(torch.tensor([3.0, 1.0]), torch.tensor([-10.0, -10.0]))
    monkeypatch.setattr(attack, "_gain_and_grad", script)
    adv = attack.perturb(None, x, torch.zeros(1, 2), torch.tensor([True]), 0.5)
    a = 1 / 255
    torch.testing.assert_close(script.points[1], torch.tensor([[[[0.5 + a, 0.5 + a]]]]))
    torch.testing.assert_close(adv, torch.tensor([[[[0.5 + 2 * a, 0.5]]]]))

    # l2: x1 = x + 0.1·[0.75, 0.25]/‖·‖₂, x2 = x1 + 0.1·[1, -1]/√2
    attack = ATTACKS.get("mi-fgsm")(ThreatModel("l2", 1.0), steps=2, step_size=0.1)
    script = Scripted(torch.tensor([3.0, 1.0]), torch.tensor([-10.0, -10.0]))
    monkeypatch.setattr(attack, "_gain_and_grad", script)
    adv = attack.perturb(None, x, torch.zeros(1, 2), torch.tensor([True]), 0.5)
    n1 = math.sqrt(0.75 ** 2 + 0.25 ** 2)
    x1 = [0.5 + 0.1 * 0.75 / n1, 0.5 + 0.1 * 0.25 / n1]
    x2 = [x1[0] + 0.1 / math.sqrt(2), x1[1] - 0.1 / math.sqrt(2)]
    torch.testing.assert_close(adv, torch.tensor([[[x2]]]))


def test_mim_with_zero_decay_is_bim(setup):
    model, probe, gallery, dodge = setup
    for norm in NORMS:
        eps = 0.5 * ThreatModel(norm).eps
        a = make("mim", norm, eps, steps=5, step_size=eps / 4, mu=0.0)
        b = make("bim", norm, eps, steps=5, step_size=eps / 4)
        torch.testing.assert_close(a.perturb(model, probe, gallery, dodge, 0.99),
                                   b.perturb(model, probe, gallery, dodge, 0.99))


def test_bim_is_deterministic_and_starts_clean(setup, monkeypatch):
    model, probe, gallery, dodge = setup
    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        outs.append(make("bim", "rel-l2", 0.02).perturb(model, probe, gallery, dodge, 0.99))
    assert torch.equal(outs[0], outs[1])
    attack = ATTACKS.get("bim")(ThreatModel("linf", 7.8))
    script = Scripted(torch.tensor([1.0, -1.0]))
    monkeypatch.setattr(attack, "_gain_and_grad", script)
    x = torch.full((1, 1, 1, 2), 0.5)
    adv = attack.perturb(None, x, torch.zeros(1, 2), torch.tensor([True]), 0.5)
    assert len(script.points) == 9 and torch.equal(script.points[0], x)
    torch.testing.assert_close(adv, x + torch.tensor([7.8, -7.8]) / 255)  # clipped to eps


@pytest.mark.parametrize("norm", NORMS)
def test_rfgsm_random_step_then_gradient_step(monkeypatch, norm):
    tm = ThreatModel(norm, {"linf": 8, "l2": 0.5, "rel-l2": 0.02}[norm])
    attack = ATTACKS.get("rfgsm")(tm, alpha=tm.eps / 4)
    x = torch.full((2, 3, 8, 8), 0.5)
    grad = torch.zeros(1, 3, 8, 8)
    grad[..., :4] = 1.0
    grad[..., 4:] = -1.0
    script = Scripted(grad)
    monkeypatch.setattr(attack, "_gain_and_grad", script)
    torch.manual_seed(3)
    adv = attack.perturb(None, x, torch.zeros(2, 4), torch.tensor([True, False]), 0.5)
    assert len(script.points) == 1  # one gradient, taken at the random point
    x_rand = script.points[0]
    r_alpha = tm.radius(x, eps=tm.eps / 4)
    torch.testing.assert_close(tm.norm_of(x_rand - x), r_alpha)
    if norm == "linf":  # alpha·sign(N(0, I)): every pixel moved by exactly ±alpha, both signs
        assert torch.allclose((x_rand - x).abs(), torch.full_like(x, 8 / 4 / 255))
        assert ((x_rand - x) > 0).any() and ((x_rand - x) < 0).any()
    rest = tm.radius(x, eps=tm.eps * 3 / 4).reshape(-1, 1, 1, 1)
    expected = tm.project(x_rand + rest * tm.normalize_step(grad.expand_as(x)), x)
    torch.testing.assert_close(adv, expected)
    torch.manual_seed(4)
    attack.perturb(None, x, torch.zeros(2, 4), torch.tensor([True, False]), 0.5)
    assert not torch.equal(script.points[1], x_rand)  # the first step is random


def test_rpgd_random_start_and_restarts_keep_the_best(setup, monkeypatch):
    model, probe, gallery, dodge = setup
    attack = make("rpgd", "linf", 4, steps=1, step_size=1e-6)
    script = Scripted(torch.ones(1))
    monkeypatch.setattr(attack, "_gain_and_grad", script)
    torch.manual_seed(0)
    attack.perturb(model, probe, gallery, dodge, 0.99)
    start = script.points[0] - probe
    assert start.abs().max() <= 4 / 255 + 1e-7 and start.abs().mean() > 1 / 255  # in the ball

    gains = {}
    for restarts in (1, 4):
        torch.manual_seed(5)
        adv = make("rpgd", "rel-l2", 0.01, steps=2, restarts=restarts).perturb(
            model, probe, gallery, dodge, 0.99)
        with torch.no_grad():
            gains[restarts] = gain(model(adv), gallery, dodge)
    assert (gains[4] >= gains[1] - 1e-6).all()  # restart 1 is the same draw, the best is kept
    assert (gains[4] > gains[1] + 1e-6).any()


# -- DFANet hooks --------------------------------------------------------------------------
class Recorder(nn.Module):
    """Conv net that records, on each forward, how many forward hooks its conv has and the
    share of exact zeros in the conv output (a positive conv: zeros come from dropout only)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        nn.init.constant_(self.conv.weight, 0.05)
        nn.init.constant_(self.conv.bias, 1.0)
        self.head = nn.Linear(4, 8)
        self.seen = []

    def forward(self, x):
        h = self.conv(x)
        self.seen.append((len(self.conv._forward_hooks), (h == 0).float().mean().item()))
        return self.head(h.mean(dim=(2, 3)))


def test_dfanet_drops_only_while_crafting():
    torch.manual_seed(0)
    model = Recorder().eval().requires_grad_(False)
    x = torch.rand(2, 3, 12, 12)
    gallery = torch.randn(2, 8)
    with torch.no_grad():
        before = model(x)
    attack = ATTACKS.get("dfanet")(ThreatModel("linf", 8), steps=4, p=0.3)
    attack.perturb(model, x, gallery, torch.tensor([True, False]), 0.5)
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    crafting = model.seen[1:-1]
    assert len(crafting) == 4 and all(hooks == 1 for hooks, _ in crafting)
    assert all(0.15 < zeros < 0.45 for _, zeros in crafting)  # about p of the outputs dropped
    assert model.seen[0] == (0, 0.0) and model.seen[-1] == (0, 0.0)
    assert not model.conv._forward_hooks


def test_dfanet_removes_hooks_when_crafting_fails_and_needs_convs():
    model = Recorder().eval().requires_grad_(False)
    attack = ATTACKS.get("dfanet")(ThreatModel("linf", 8), steps=2)
    with pytest.raises(RuntimeError):  # wrong gallery width: the cosine fails mid-attack
        attack.perturb(model, torch.rand(1, 3, 12, 12), torch.randn(1, 5), True, 0.5)
    assert not model.conv._forward_hooks
    with pytest.raises(FacebenchError, match="Conv2d"):
        attack.perturb(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), torch.rand(1, 3, 2, 2),
                       torch.randn(1, 4), True, 0.5)


def test_dfanet_hooks_reach_inside_a_defended_wrapper():
    from facebench.adaptive import bpda
    from facebench.registry import DEFENSES

    model = Recorder().eval().requires_grad_(False)
    defended = bpda(DEFENSES.get("bit-depth")()).wrap(model)
    attack = ATTACKS.get("dfanet")(ThreatModel("linf", 8), steps=2, p=0.3)
    adv = attack.perturb(defended, torch.rand(2, 3, 12, 12), torch.randn(2, 8),
                         torch.tensor([True, False]), 0.5)
    assert adv.shape == (2, 3, 12, 12)
    assert [hooks for hooks, _ in model.seen] == [1, 1] and min(z for _, z in model.seen) > 0
    assert not model.conv._forward_hooks


def test_dfanet_with_zero_rate_is_mi_fgsm(setup):
    model, probe, gallery, dodge = setup
    for norm in NORMS:
        a = make("dfanet", norm, 0.5 * ThreatModel(norm).eps, p=0.0)
        b = make("mi-fgsm", norm, 0.5 * ThreatModel(norm).eps)
        torch.testing.assert_close(a.perturb(model, probe, gallery, dodge, 0.99),
                                   b.perturb(model, probe, gallery, dodge, 0.99))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", NAMES)
def test_per_sample_budgets(setup, name, norm):
    """--minimal-eps swaps in one budget per probe: each probe must stay within its own."""
    import copy

    model, probe, gallery, dodge = setup
    top = 0.5 * ThreatModel(norm).eps
    attack = copy.copy(make(name, norm, top, **({"alpha": top / 4} if name == "rfgsm" else {})))
    eps = torch.tensor([top, top / 2, top / 8, 0.0], dtype=torch.float64)
    attack.threat = ThreatModel.per_sample(norm, eps)
    torch.manual_seed(2)
    adv = attack.perturb(model, probe, gallery, dodge, 0.99)
    tm = attack.threat
    size, radius = tm.norm_of(adv - probe), tm.radius(probe)
    assert (size <= radius * (1 + 1e-5) + 1e-7).all()
    assert (size[:3] > 0).all() and size[3] == 0
    assert adv.min() >= 0 and adv.max() <= 1

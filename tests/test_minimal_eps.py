"""Minimal-perturbation mode: per-sample budgets in ThreatModel and the ε bisection."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import facebench
from facebench.attack import Attack, success
from facebench.errors import FacebenchError
from facebench.minimal_eps import wrap_minimal
from facebench.registry import ATTACKS
from facebench.threat import ThreatModel

NORMS = ["linf", "l2", "rel-l2"]
THR = 0.9
S_DODGE = math.sqrt(1 / THR ** 2 - 1)  # dodging flips when s > this (gallery (1, 0))
S_IMP = THR / math.sqrt(1 - THR ** 2)  # impersonation flips when s >= this (gallery (0, 1))


class Ray(torch.nn.Module):
    """Embedding (1, s) with s = w·vec(x), Σw = 0 and |w_i| = 1 on 64 pixels.

    The cosine with gallery (1, 0) is 1/√(1+s²) and with (0, 1) it is s/√(1+s²), so an FGSM
    step of linf ε/255 raises s by exactly 64·ε/255 (FGM of l2 ε by ‖w‖·ε = 8ε) and the flip
    point ε* of each probe is known in closed form.
    """

    def __init__(self):
        super().__init__()
        w = torch.ones(64)
        w[1::2] = -1
        self.w = torch.nn.Parameter(w, requires_grad=False)

    def forward(self, x):
        s = x.flatten(1) @ self.w
        return torch.stack([torch.ones_like(s), s], dim=1)


def _probes(s0):
    """Probes 0.5 ± a·w with w·x = s0 (pixels stay well inside [0, 1])."""
    w = Ray().w
    a = torch.tensor(s0, dtype=torch.float32) / 64.0
    return (0.5 + a[:, None] * w[None, :]).reshape(-1, 1, 8, 8)


@pytest.fixture
def toy():
    model = Ray()
    s0 = [0.1, 0.3, 0.6, 0.3, 1.0, -2.0]
    dodge = torch.tensor([True, True, True, False, False, False])
    gallery = torch.where(dodge[:, None], torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    return model, _probes(s0), gallery, dodge, torch.tensor(s0, dtype=torch.float64)


def _analytic(s0, dodge, gain_per_eps):
    need = torch.where(dodge, S_DODGE - s0, S_IMP - s0)
    return (need / gain_per_eps).clamp_min(0.0)


@pytest.mark.parametrize("norm, eps_max, gain", [("linf", 16.0, 64 / 255), ("l2", 0.5, 8.0)])
def test_bisection_finds_the_analytic_minimal_eps(toy, norm, eps_max, gain):
    model, x, g, d, s0 = toy
    attack = wrap_minimal(ATTACKS.get("fgsm")(ThreatModel(norm, eps_max)))
    attack.reset_records()
    adv = attack.perturb(model, x, g, d, THR)
    found = torch.from_numpy(attack.recorded("min_eps"))
    want = _analytic(s0, d, gain)
    tol = eps_max / 2 ** 10
    for i in range(6):
        if want[i] == 0:  # probe 2 is already rejected clean: ε = 0, returned unchanged
            assert found[i] == 0 and torch.equal(adv[i], x[i])
        elif want[i] > eps_max:  # probe 5 needs more than the budget: +inf, full-eps example
            assert math.isinf(found[i])
        else:  # an upper bound within one bisection step of the true flip point
            assert want[i] - 1e-3 <= found[i] <= want[i] + tol + 1e-3, (i, found, want)
    # each example flips and lies inside its own minimal ball
    tm = ThreatModel(norm, eps_max)
    with torch.no_grad():
        ok = success(model(adv), g, d, THR)
    fin = torch.isfinite(found)
    assert ok[fin].all() and not ok[~fin].any()
    radius = tm.radius(x, eps=torch.where(fin, found, torch.full_like(found, eps_max)))
    assert (tm.norm_of(adv - x) <= radius * (1 + 1e-4) + 1e-7).all()
    # monotone: a dodging probe that starts further from the boundary needs more
    assert found[0] > found[1] > found[2]
    m = attack.extra_metrics(ok.numpy(), np.zeros(6))
    assert m["median_min_eps"] == pytest.approx(float(np.median(found.numpy())))
    assert m["min_eps_found"] == pytest.approx(5 / 6)
    assert m["mean_min_eps"] == pytest.approx(float(found[fin].mean()))


def test_search_steps_set_the_precision(toy):
    model, x, g, d, s0 = toy
    errs = []
    for steps in (3, 8):
        attack = wrap_minimal(ATTACKS.get("fgsm")(ThreatModel("linf", 16)), search_steps=steps)
        attack.reset_records()
        attack.perturb(model, x[:2], g[:2], d[:2], THR)
        errs.append((torch.from_numpy(attack.recorded("min_eps"))
                     - _analytic(s0[:2], d[:2], 64 / 255)).abs().max().item())
    assert errs[1] < errs[0] and errs[0] <= 16 / 2 ** 3 + 1e-3


@pytest.mark.parametrize("norm", NORMS)
def test_per_sample_threat_matches_row_by_row(norm):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    eps = torch.tensor([0.0, 0.5, 1.0, 2.0]) * (4.0 if norm == "linf" else 0.02 if norm == "rel-l2" else 0.5)
    tm = ThreatModel.per_sample(norm, eps)
    assert tm.is_per_sample and not ThreatModel(norm).is_per_sample
    far = x + 3.0 * torch.randn_like(x)
    p = tm.project(far, x)
    box = tm.projector(x)(far)
    start = tm.random_start(x)
    for i in range(4):
        one = ThreatModel(norm, float(eps[i]))
        torch.testing.assert_close(tm.radius(x)[i:i + 1], one.radius(x[i:i + 1]))
        torch.testing.assert_close(p[i:i + 1], one.project(far[i:i + 1], x[i:i + 1]))
        torch.testing.assert_close(box[i:i + 1], one.project(far[i:i + 1], x[i:i + 1]))
        assert one.norm_of(start[i:i + 1] - x[i:i + 1]) <= one.radius(x[i:i + 1]) * (1 + 1e-5) + 1e-7
    assert torch.equal(p[0], x[0])
    # step sizes derived from eps (PGD's 2.5·eps/steps) stay per sample
    torch.testing.assert_close(tm.radius(x, eps=tm.eps / 4), tm.radius(x) / 4)
    with pytest.raises(FacebenchError, match="4 values for a batch of 2"):
        tm.radius(x[:2])


def test_per_sample_pgd_equals_scalar_pgd():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 6))
    x = torch.rand(3, 3, 4, 4)
    with torch.no_grad():
        g = model(torch.rand(3, 3, 4, 4))
    d = torch.tensor([True, False, True])
    eps = [2.0, 4.0, 8.0]
    pgd = ATTACKS.get("pgd")
    batch = pgd(ThreatModel.per_sample("linf", eps), steps=5, random_start=False).perturb(
        model, x, g, d, 0.5)
    for i, e in enumerate(eps):
        one = pgd(ThreatModel("linf", e), steps=5, random_start=False).perturb(
            model, x[i:i + 1], g[i:i + 1], d[i:i + 1], 0.5)
        torch.testing.assert_close(batch[i:i + 1], one)


def test_per_sample_validation_and_labels():
    for bad, match in [([1.0, -1.0], ">= 0"), ([float("nan")], ">= 0"), ([300.0], "<= 255"),
                       ([], "at least one"), ("x", "numbers")]:
        with pytest.raises(FacebenchError, match=match):
            ThreatModel.per_sample("linf", bad)
    with pytest.raises(FacebenchError, match="<= 1"):
        ThreatModel.per_sample("rel-l2", [0.5, 2.0])
    with pytest.raises(FacebenchError, match="unknown threat norm"):
        ThreatModel.per_sample("l3", [1.0])
    tm = ThreatModel.per_sample("linf", [1, 2])
    assert "per-sample" in tm.describe() and tm == ThreatModel.per_sample("linf", [1.0, 2.0])
    assert tm != ThreatModel("linf", 1) and len({tm, ThreatModel.per_sample("linf", [1, 2])}) == 1


class _Query(Attack):
    gradient_based = False

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        return probe


def test_wrapper_rejects_what_it_cannot_bisect():
    tm = ThreatModel("linf", 8)
    with pytest.raises(FacebenchError, match="decision-based"):
        wrap_minimal(_Query(tm))
    with pytest.raises(FacebenchError, match="bounded"):
        wrap_minimal(ATTACKS.get("lots")(tm))
    with pytest.raises(FacebenchError, match="already"):
        wrap_minimal(wrap_minimal(ATTACKS.get("fgsm")(tm)))
    with pytest.raises(FacebenchError, match="search_steps"):
        wrap_minimal(ATTACKS.get("fgsm")(tm), search_steps=0)
    wrapped = wrap_minimal(ATTACKS.get("pgd")(tm))
    assert wrapped.name == "pgd" and not wrapped.cacheable and wrapped.inner.name == "pgd"


@pytest.mark.lfw
def test_minimal_eps_fgsm_on_lfw(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "runs.csv"
    facebench.run(protocol="dev-test", pairs=6, attack="fgsm", norm="linf", eps=8.0,
                  minimal_eps=True, dataset="lfw", data_home=str(shared_data), out=str(out), progress=False)
    df = pd.read_csv(out)
    assert "fgsm" not in set(df.attack)  # never mistaken for a fixed-budget fgsm cell
    adv = df[df.attack == "fgsm[min-eps]"].set_index("metric")["value"]
    assert (df[df.attack == "fgsm[min-eps]"]["budget"] == 8.0).all()
    assert 0 < adv["median_min_eps"] <= 8.0
    assert 0 < adv["mean_min_eps"] <= 8.0 and adv["min_eps_found"] > 0.5
    # examples at their minimal budgets: on average well inside the full ball
    assert adv["mean_linf"] < 8.0 / 255 - 1e-4


class _OneBudget(Attack):
    per_sample_budget = False  # declared, as library backends do

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        return probe


def test_wrapper_rejects_an_attack_declaring_one_budget_per_batch():
    with pytest.raises(FacebenchError, match="one budget per batch"):
        wrap_minimal(_OneBudget(ThreatModel("linf", 8)))


def test_library_backends_declare_one_budget_per_batch():
    from facebench.attacks.library import LibraryAttack

    assert LibraryAttack.per_sample_budget is False

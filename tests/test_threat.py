"""Threat-model geometry: radii, projection, steps, random starts and validation."""
import math

import pytest
import torch

from facebench.errors import FacebenchError
from facebench.threat import DEFAULT_EPS, ThreatModel

NORMS = ["linf", "l2", "rel-l2"]


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.rand(4, 3, 8, 8)


@pytest.mark.parametrize("norm", NORMS)
def test_project_stays_in_ball_and_box(norm, x):
    tm = ThreatModel(norm)
    far = x + 3.0 * torch.randn_like(x)
    p = tm.project(far, x)
    assert p.min() >= 0 and p.max() <= 1
    assert (tm.norm_of(p - x) <= tm.radius(x) * (1 + 1e-5) + 1e-7).all()
    # a point already inside (and in [0, 1]) is left alone
    inside = tm.project(x + 0.1 * (p - x), x)
    torch.testing.assert_close(tm.project(inside, x), inside)


@pytest.mark.parametrize("norm", NORMS)
def test_random_start_in_ball(norm, x):
    tm = ThreatModel(norm)
    s = tm.random_start(x, generator=torch.Generator().manual_seed(1))
    assert s.min() >= 0 and s.max() <= 1
    assert (tm.norm_of(s - x) <= tm.radius(x) * (1 + 1e-5) + 1e-7).all()
    assert (tm.norm_of(s - x) > 0).all()


def test_radius_per_norm(x):
    assert torch.allclose(ThreatModel("linf", 8).radius(x), torch.full((4,), 8 / 255))
    assert torch.allclose(ThreatModel("l2", 2).radius(x), torch.full((4,), 2.0))
    rel = ThreatModel("rel-l2", 0.04).radius(x)
    assert torch.allclose(rel, 0.04 * x.reshape(4, -1).norm(dim=1))
    assert torch.allclose(ThreatModel("linf", 8).radius(x, eps=2), torch.full((4,), 2 / 255))


def test_rel_l2_projection_hits_relative_budget(x):
    tm = ThreatModel("rel-l2", 0.04)
    x = x * 0.5 + 0.25  # away from the box so clipping does not shrink δ
    p = tm.project(x + 0.2 * torch.randn_like(x), x)
    rel = (p - x).reshape(4, -1).norm(dim=1) / x.reshape(4, -1).norm(dim=1)
    torch.testing.assert_close(rel, torch.full((4,), 0.04))


@pytest.mark.parametrize("norm", NORMS)
def test_normalize_step(norm):
    g = torch.randn(3, 2, 4, 4)
    g[1] = 0
    step = ThreatModel(norm).normalize_step(g)
    assert torch.isfinite(step).all() and (step[1] == 0).all()
    if norm == "linf":
        assert torch.equal(step, g.sign())
    else:
        n = step.reshape(3, -1).norm(dim=1)
        torch.testing.assert_close(n[[0, 2]], torch.ones(2))


def test_defaults_and_describe():
    assert DEFAULT_EPS == {"rel-l2": 0.04, "linf": 8.0, "l2": 2.0}
    assert ThreatModel("rel-l2").eps == 0.04
    assert ThreatModel("rel-l2").describe() == "rel-l2 0.04"
    assert ThreatModel("linf").describe() == "linf 8"
    assert ThreatModel("l2", 0.5) == ThreatModel("l2", 0.5)


def test_zero_eps_projects_to_clean(x):
    for norm in NORMS:
        tm = ThreatModel(norm, 0)
        assert torch.equal(tm.project(x + 0.3, x), x)


@pytest.mark.parametrize(
    "norm, eps",
    [("l3", 1.0), ("linf", -1.0), ("l2", math.nan), ("linf", 256), ("rel-l2", 1.5),
     ("l2", "big"), ("l2", math.inf)],
)
def test_validation(norm, eps):
    with pytest.raises(FacebenchError) as err:
        ThreatModel(norm, eps)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("norm,eps", [("linf", 8.0), ("l2", 1.0), ("rel-l2", 0.05)])
def test_projector_matches_project(norm, eps):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    x_adv = (x + torch.randn_like(x) * 0.3)
    tm = ThreatModel(norm, eps)
    assert torch.allclose(tm.projector(x)(x_adv), tm.project(x_adv, x), atol=1e-6)

"""LOTS: feature-space steps toward the target, per-sample stopping, τ-success metric."""
import numpy as np
import pytest
import torch

import facebench
from facebench.attack import success
from facebench.errors import FacebenchError
from facebench.registry import ATTACKS
from facebench.threat import ThreatModel

D = 3 * 6 * 6


class Linear(torch.nn.Module):
    """A tiny linear 'recognizer' F(x) = W·vec(x) with 8-D embeddings."""

    def __init__(self, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(8, D, generator=gen) / D ** 0.5,
                                    requires_grad=False)

    def forward(self, x):
        return x.flatten(1) @ self.w.t()


def lots(**params):
    return ATTACKS.get("lots")(ThreatModel("linf", 8), **params)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = Linear()
    probe = 0.3 + 0.4 * torch.rand(4, 3, 6, 6)
    with torch.no_grad():
        gallery = model(0.3 + 0.4 * torch.rand(4, 3, 6, 6))
        cos = torch.nn.functional.cosine_similarity(model(probe), gallery)
    return model, probe, gallery, cos


def _dist(model, x, t):
    with torch.no_grad():
        return (model(x) - t).norm(dim=1)


def test_one_step_moves_embedding_toward_target(setup):
    model, probe, gallery, cos = setup
    imp = torch.zeros(4, dtype=torch.bool)
    dodge = torch.ones(4, dtype=torch.bool)
    # thresholds no single step can reach, so every sample takes exactly one step
    adv = lots(steps=1, step=0.5).perturb(model, probe, gallery, imp, 1.0)
    assert (_dist(model, adv, gallery) < _dist(model, probe, gallery)).all()
    step = (adv - probe).flatten(1).abs().amax(dim=1)
    torch.testing.assert_close(step, torch.full((4,), 0.5 / 255))
    adv = lots(steps=1, step=0.5).perturb(model, probe, gallery, dodge, -1.0)
    # dodging targets the mirror -g: closer to it, and a lower cosine with g
    assert (_dist(model, adv, -gallery) < _dist(model, probe, -gallery)).all()
    with torch.no_grad():
        assert (torch.nn.functional.cosine_similarity(model(adv), gallery) < cos).all()
    assert torch.equal(probe, setup[1])  # inputs untouched


def test_stops_per_sample_at_first_flip(setup):
    model, probe, gallery, cos = setup
    dodge = torch.zeros(4, dtype=torch.bool)
    # a threshold above every clean cosine: all need several steps, not equally many
    thr = float(cos.max() + 0.02)
    attack = lots(steps=300)
    adv = attack.perturb(model, probe, gallery, dodge, thr)
    iters = attack.iterations.clone()
    with torch.no_grad():
        ok = success(model(adv), gallery, dodge, thr)
    assert ok.all() and (iters >= 1).all() and iters.unique().numel() > 1, iters
    # a sample that stopped at k steps is exactly iterate k: one step fewer is not flipped
    for i, k in enumerate(iters.tolist()):
        fewer = lots(steps=k - 1).perturb(model, probe, gallery, dodge, thr)
        with torch.no_grad():
            assert not bool(success(model(fewer[i:i + 1]), gallery[i:i + 1], dodge[i:i + 1], thr))
        again = lots(steps=k).perturb(model, probe, gallery, dodge, thr)
        torch.testing.assert_close(again[i], adv[i])


def test_already_flipped_probe_is_returned_unchanged(setup):
    model, probe, gallery, cos = setup
    imp = torch.zeros(4, dtype=torch.bool)
    thr = float(cos[0])  # sample 0 is accepted as is (cos >= thr)
    attack = lots(steps=50)
    adv = attack.perturb(model, probe, gallery, imp, thr)
    assert torch.equal(adv[0], probe[0]) and attack.iterations[0] == 0


def test_quantize_keeps_the_8bit_grid(setup):
    model, probe, gallery, cos = setup
    probe = torch.round(probe * 255) / 255
    imp = torch.zeros(4, dtype=torch.bool)
    adv = lots(steps=5, quantize=True).perturb(model, probe, gallery, imp, 1.0)
    levels = adv * 255
    torch.testing.assert_close(levels, torch.round(levels), atol=1e-4, rtol=0)
    assert (adv != probe).any()


def test_tau_metric_by_hand():
    attack = lots(taus=(1.5, 3.5, 10))
    succ = np.array([True, True, False, True])
    l2 = np.array([1.0, 2.0, 3.0, 4.0]) / 255.0
    m = attack.extra_metrics(succ, l2)
    assert m["tau_asr_1.5"] == pytest.approx(1 / 4)
    assert m["tau_asr_3.5"] == pytest.approx(2 / 4)  # probe 2 is small but failed
    assert m["tau_asr_10"] == pytest.approx(3 / 4)
    assert m["median_l2_255_success"] == pytest.approx(2.0)
    assert sorted(k for k in m if k.startswith("tau_asr_")) == [
        "tau_asr_1.5", "tau_asr_10", "tau_asr_3.5"]
    default = lots().extra_metrics(succ, l2 * 100)
    assert "tau_asr_500" in default and "tau_asr_2000" in default
    assert lots(taus="100, 50").taus == (50.0, 100.0)
    assert "taus" not in repr(lots(taus=(1, 2)))  # the example cache ignores τ


@pytest.mark.parametrize("params, match", [
    ({"steps": 0}, "steps"), ({"step": 0}, "step"), ({"taus": (100, -1)}, "taus"),
    ({"taus": "a,b"}, "taus"), ({"quantize": True, "step": 0.5}, "quantize"),
    ({"quantize": "yes"}, "quantize"), ({"eps": 3}, "unknown parameter")])
def test_bad_parameters(params, match):
    with pytest.raises(FacebenchError, match=match):
        lots(**params)


@pytest.mark.lfw
def test_lots_on_lfw_gives_tau_rows(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    df = facebench.run(protocol="dev-test", pairs=6, attack="lots", goal="impersonation",
                       attack_params={"steps": 100}, dataset="lfw", data_home=str(shared_data),
                       out=str(tmp_path / "runs.csv"), progress=False)
    assert set(df.attack) == {"none", "lots[steps=100]"}
    adv = df[df.attack == "lots[steps=100]"].set_index("metric")["value"]
    assert adv["asr"] >= 2 / 3
    taus = [adv[f"tau_asr_{t}"] for t in (50, 100, 250, 500, 1000, 2000)]
    assert all(b >= a for a, b in zip(taus, taus[1:])) and taus[-1] <= adv["asr"] + 1e-9
    assert taus[-1] > 0
    # unbounded: the threat model is recorded, not enforced
    assert (df[df.attack == "lots[steps=100]"]["budget"] == 0.04).all()

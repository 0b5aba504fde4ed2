"""Evolutionary (decision-based) attack: its update rules on toy models, and Table 4."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import facebench
from facebench.attack import success
from facebench.attacks.evolutionary import Evolutionary
from facebench.errors import FacebenchError
from facebench.registry import ATTACKS
from facebench.report import render_table
from facebench.results import COLUMNS, append_rows
from facebench.threat import ThreatModel

THR = 0.9


pytestmark = pytest.mark.usefixtures("one_thread")


class Linear(nn.Module):
    """A toy recognizer: a fixed random linear embedding of the centred 3×16×16 image."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.register_buffer("w", torch.randn(768, 8, generator=gen))

    def forward(self, x):
        return (x - 0.5).flatten(1) @ self.w


class Counting(nn.Module):
    """Wraps a model, logging the batch size of every forward call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


class Scripted(nn.Module):
    """Dodging decisions on demand: the start check is the real toy's, every search query
    is answered 'adversarial' (embedding −g) for rows in ``accept`` and 'accepted as the
    same person' (embedding g) for the others."""

    def __init__(self, inner, g, accept):
        super().__init__()
        self.inner, self.g, self.accept, self.first = inner, g, accept, True

    def forward(self, x):
        if self.first:
            self.first = False
            return self.inner(x)
        return torch.where(self.accept.reshape(-1, 1), -self.g, self.g)


def make(**params):
    params.setdefault("progress", False)
    return Evolutionary(ThreatModel("rel-l2"), **params)


@pytest.fixture(scope="module")
def toy():
    """Model, probes, their own embeddings (dodging) and other faces (impersonation)."""
    model = Linear().eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 16, 16, generator=gen)
    other = torch.rand(4, 3, 16, 16, generator=gen)
    with torch.no_grad():
        own, their = model(x), model(other)
    return model, x, other, own, their


def pair_batch(toy):
    """Rows 0-1 dodging (gallery = own embedding), rows 2-3 impersonation."""
    model, x, other, own, their = toy
    gallery_emb = torch.cat([own[:2], their[2:]])
    gallery = torch.cat([x[:2], other[2:]])
    dodge = torch.tensor([True, True, False, False])
    return model, x, gallery_emb, dodge, gallery


def decide(model, x, g, d):
    with torch.no_grad():
        return success(model(x), g, d, THR)


def test_toy_setup_is_meaningful(toy):
    """Clean pairs are not adversarial, the starts (noise / gallery) are."""
    model, x, gallery_emb, dodge, gallery = pair_batch(toy)
    assert not decide(model, x, gallery_emb, dodge).any()
    assert decide(model, gallery[2:], gallery_emb[2:], dodge[2:]).all()


def test_returns_adversarial_images_and_mse_never_increases(toy):
    model, x, gallery_emb, dodge, gallery = pair_batch(toy)
    budgets = (5, 10, 20, 40, 80)
    att = make(budgets=budgets, search_size=8, seed=0)
    att.reset_records()
    adv = att.perturb(model, x, gallery_emb, dodge, THR, gallery=gallery)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert decide(model, adv, gallery_emb, dodge).all()  # never left the adversarial region
    curve = np.stack([att.recorded(f"mse_at_{q}") for q in budgets])  # (budgets, probes)
    assert np.isfinite(curve).all()
    assert (np.diff(curve, axis=0) <= 0).all()
    assert (curve[-1] < curve[0]).all()  # and it does make progress on every probe
    final = ((adv.double() - x.double()) ** 2).flatten(1).mean(1).numpy()
    np.testing.assert_allclose(curve[-1], final, rtol=1e-5)


def test_non_adversarial_candidates_are_never_accepted(toy):
    """With every search query answered 'not adversarial' the start is kept, C untouched."""
    model, x, _, own, _ = toy
    dodge = torch.ones(4, dtype=torch.bool)
    scripted = Scripted(model, own, accept=torch.zeros(4, dtype=torch.bool))
    att = make(budgets=(30, 60), search_size=8, seed=3)
    att.reset_records()
    adv = att.perturb(scripted, x, own, dodge, THR)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(adv, noise)  # the U[0,1] start, drawn first from the seeded stream
    start_mse = ((noise - x) ** 2).flatten(1).mean(1).double().numpy()
    np.testing.assert_allclose(att.recorded("mse_at_60"), start_mse, rtol=1e-6)
    state = att.last_state
    assert torch.equal(state["cov"], torch.ones_like(state["cov"]))
    assert torch.equal(state["path"], torch.zeros_like(state["path"]))


def _start_distance(x, seed):
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    return (noise - x).flatten(1).norm(dim=1)


def test_adversarial_but_farther_candidates_are_rejected(toy):
    """Without rescale a long random step ends farther away: rejected though adversarial."""
    model, x, _, own, _ = toy
    dodge = torch.ones(4, dtype=torch.bool)
    att = make(budgets=(3,), search_size=8, sigma=0.8, rescale=False, seed=7)
    att.perturb(Scripted(model, own, torch.ones(4, dtype=torch.bool)), x, own, dodge, THR)
    assert torch.allclose(att.last_state["dist"], _start_distance(x, 7))
    assert torch.equal(att.last_state["cov"], torch.ones_like(att.last_state["cov"]))


def test_rescale_keeps_the_pulled_distance(toy):
    """With rescale an accepted step lands at (1 − mu)·‖δ‖ (or nearer, after clipping)."""
    model, x, _, own, _ = toy
    dodge = torch.ones(4, dtype=torch.bool)
    att = make(budgets=(1,), search_size=8, sigma=0.8, mu=0.1, seed=7)
    att.perturb(Scripted(model, own, torch.ones(4, dtype=torch.bool)), x, own, dodge, THR)
    d0 = _start_distance(x, 7)
    assert (att.last_state["dist"] <= 0.9 * d0 * (1 + 1e-5)).all()
    assert (att.last_state["cov"] != 1).any(dim=1).all()  # all four accepted


def test_mu_follows_the_one_fifth_success_rule(toy):
    """mu ← mu·exp(P_success − 1/5) per window: all failures shrink it, all successes grow it."""
    model, x, _, own, _ = toy
    dodge = torch.ones(4, dtype=torch.bool)
    accept = torch.tensor([False, False, True, True])
    # sigma < mu: every candidate is strictly closer, so accepted rows succeed every step
    att = make(budgets=(90,), search_size=8, mu=0.01, sigma=0.001, mu_window=30, seed=0)
    att.perturb(Scripted(model, own, accept), x, own, dodge, THR)
    mu = att.last_state["mu"].double()
    windows = 90 // 30
    expected_fail = 0.01 * math.exp(-0.2 * windows)
    expected_win = 0.01 * math.exp(0.8 * windows)
    np.testing.assert_allclose(mu[:2].numpy(), expected_fail, rtol=1e-5)
    np.testing.assert_allclose(mu[2:].numpy(), expected_win, rtol=1e-5)
    assert expected_fail < 0.01 < expected_win


def test_mu_never_exceeds_one(toy):
    model, x, _, own, _ = toy
    att = make(budgets=(300,), search_size=8, mu=0.5, sigma=0.001, mu_window=10, seed=0)
    att.perturb(Scripted(model, own, torch.ones(4, dtype=torch.bool)), x, own,
                torch.ones(4, dtype=torch.bool), THR)
    assert (att.last_state["mu"] <= 1.0).all()


def test_covariance_update_on_success(toy):
    """One accepted step: p = √(cc(2−cc))·u on the k kept coordinates, C = (1−ccov) + ccov·p²."""
    model, x, _, own, _ = toy
    dodge = torch.ones(4, dtype=torch.bool)
    accept = torch.tensor([True, False, True, False])
    att = make(budgets=(1,), search_size=8, coord_frac=0.1, cc=0.2, ccov=0.3, sigma=0.001,
               seed=5)
    att.perturb(Scripted(model, own, accept), x, own, dodge, THR)
    cov, path = att.last_state["cov"], att.last_state["path"]
    k = round(0.1 * 3 * 8 * 8)
    assert ((path[accept] != 0).sum(dim=1) == k).all()  # only the selected coordinates move
    assert torch.allclose(cov[accept], 0.7 + 0.3 * path[accept] ** 2, rtol=1e-6, atol=0)
    assert torch.equal(cov[~accept], torch.ones_like(cov[~accept]))
    assert torch.equal(path[~accept], torch.zeros_like(path[~accept]))
    assert ((cov[accept] - 0.7).abs() > 0).sum(dim=1).eq(k).all()  # grown where it moved


def test_query_count_is_exact_and_lock_step(toy):
    """One forward for the start checks, then exactly one batched forward per query."""
    model, x, gallery_emb, dodge, gallery = pair_batch(toy)
    counting = Counting(model)
    att = make(budgets=(7, 25), search_size=8, seed=0)
    att.perturb(counting, x, gallery_emb, dodge, THR, gallery=gallery)
    assert counting.calls == [8] + [4] * 25  # clean+start of 4 probes, then 25 batched steps


def test_candidates_share_one_forward_and_count_as_queries(toy):
    """(1+L): each step queries the L candidates of every probe in one forward, spends L
    queries per probe, keeps the closest adversarial one and still only improves."""
    model, x, gallery_emb, dodge, gallery = pair_batch(toy)
    counting = Counting(model)
    budgets = (8, 40, 160)
    att = make(budgets=budgets, search_size=8, seed=0, candidates=4)
    att.reset_records()
    adv = att.perturb(counting, x, gallery_emb, dodge, THR, gallery=gallery)
    assert counting.calls == [8] + [16] * 40  # 4 probes x 4 candidates, 160 / 4 steps
    assert decide(model, adv, gallery_emb, dodge).all()
    curve = np.stack([att.recorded(f"mse_at_{q}") for q in budgets])
    assert np.isfinite(curve).all() and (np.diff(curve, axis=0) <= 0).all()
    assert (curve[-1] < curve[0]).all()
    final = ((adv.double() - x.double()) ** 2).flatten(1).mean(1).numpy()
    np.testing.assert_allclose(curve[-1], final, rtol=1e-5)


def test_candidates_must_divide_the_budgets():
    with pytest.raises(FacebenchError, match="multiples of candidates=4"):
        make(budgets=(1000, 5002), candidates=4)
    with pytest.raises(FacebenchError, match="candidates"):
        make(budgets=(1000,), candidates=0)


def test_skipped_probes_and_metrics(toy):
    """A probe already adversarial when clean is skipped (NaN, returned unchanged)."""
    model, x, other, own, their = toy
    gallery_emb = torch.stack([own[0], their[1], their[2], own[3]])
    dodge = torch.tensor([True, True, False, False])  # row 1 dodges vs another face: done
    gallery = torch.stack([x[0], other[1], other[2], x[3]])  # row 3 impersonates itself: done
    att = make(budgets=(10, 20), search_size=8, seed=0)
    att.reset_records()
    adv = att.perturb(model, x, gallery_emb, dodge, THR, gallery=gallery)
    assert torch.equal(adv[1], x[1]) and torch.equal(adv[3], x[3])
    mse = att.recorded("mse_at_20")
    assert np.isnan(mse[[1, 3]]).all() and np.isfinite(mse[[0, 2]]).all()
    out = att.extra_metrics(success=np.ones(4, bool), l2=np.zeros(4))
    assert out["mse_at_20"] == pytest.approx(np.nanmean(mse))
    assert out["mse_dodging_at_20"] == pytest.approx(mse[0])
    assert out["mse_impersonation_at_20"] == pytest.approx(mse[2])
    assert out["evo_clean_adversarial"] == pytest.approx(0.5)
    assert "evo_start_failed" not in out


def test_failed_start_is_recorded(toy):
    """A dodging start that the system still accepts is given up: NaN and a share."""
    model, x, _, own, _ = toy

    class AcceptsEverything(nn.Module):  # every image embeds like its row's own probe
        def forward(self, z):
            return own.repeat(z.shape[0] // 4, 1)

    att = make(budgets=(5,), search_size=8, seed=0)
    att.reset_records()
    counting = Counting(AcceptsEverything())
    adv = att.perturb(counting, x, own, torch.ones(4, dtype=torch.bool), THR)
    assert torch.equal(adv, x) and counting.calls == [8]  # no search queries at all
    out = att.extra_metrics(success=np.zeros(4, bool), l2=np.zeros(4))
    assert out["evo_start_failed"] == pytest.approx(1.0) and math.isnan(out["mse_at_5"])
    assert "mse_impersonation_at_5" not in out


def test_deterministic_under_a_seed(toy):
    model, x, gallery_emb, dodge, gallery = pair_batch(toy)

    def once(**params):
        att = make(budgets=(15,), search_size=8, **params)
        att.reset_records()
        return att.perturb(model, x, gallery_emb, dodge, THR, gallery=gallery)

    assert torch.equal(once(seed=4), once(seed=4))
    assert not torch.equal(once(seed=4), once(seed=5))
    torch.manual_seed(11)
    a = once()
    torch.manual_seed(11)
    assert torch.equal(a, once())  # no seed: the global torch seed decides


def test_needs_gallery_for_impersonation(toy):
    model, x, gallery_emb, dodge, _ = pair_batch(toy)
    with pytest.raises(FacebenchError, match="gallery"):
        make(budgets=(2,)).perturb(model, x, gallery_emb, dodge, THR)


@pytest.mark.parametrize("budgets", [(0, 5), (5, 5), (10, 5), (), "a,b", True, 2.5, (1.5, 3),
                                     -3, [3, None]])
def test_bad_budgets_rejected(budgets):
    with pytest.raises(FacebenchError, match="budgets"):
        make(budgets=budgets)


def test_budget_forms_accepted():
    assert make(budgets="100,500").budgets == (100, 500)  # the CLI's KEY=VALUE form
    assert make(budgets=300).budgets == (300,)
    # what the CLI hands over for budgets=1000 and budgets=500,1000 (numbers, as floats)
    assert make(budgets=1000.0).budgets == (1000,)
    assert make(budgets=[500.0, 1000.0]).budgets == (500, 1000)


def test_budgets_from_the_command_line_reach_the_attack():
    from facebench.cli import build_parser, run_config

    for value, want in (("1000", (1000,)), ("500,1000", (500, 1000))):
        args = build_parser().parse_args(["run", "--attack", "evolutionary",
                                          "--attack-param", f"budgets={value}"])
        assert make(**run_config(args).attack_params).budgets == want
    assert make().budgets == (1000, 5000, 10000)


@pytest.mark.parametrize("params", [{"coord_frac": 0}, {"coord_frac": 1.5}, {"mu": 0},
                                    {"sigma": -1}, {"cc": 2}, {"ccov": 0}, {"mu_window": 0},
                                    {"search_size": 0}, {"seed": -1}, {"progress": "yes"}, {"rescale": 1},
                                    {"steps": 10}])
def test_bad_params_rejected(params):
    with pytest.raises(FacebenchError):
        make(**params)


def test_registered_with_decision_based_flags():
    cls = ATTACKS.get("evolutionary")
    assert cls is Evolutionary
    assert not cls.gradient_based and not cls.cacheable and cls.needs_gallery_image


# -- Table 4 layout ------------------------------------------------------------------------
def _rows(run_id, started, defense, goal, metrics, attack="evolutionary"):
    base = dict(run_id=run_id, started_at=started, facebench_version="t", git_sha="t",
                dataset="lfw", protocol="dev-test", n_pairs=8, recognizer="dlib-resnet",
                defense=defense, seed=0, attack=attack, threat_model="rel-l2", budget=0.04,
                goal=goal, adaptive="query", wall_s=1.0)
    rows = [dict(base, metric=k, value=v) for k, v in metrics.items()]
    assert all(set(r) == set(COLUMNS) for r in rows)
    return rows


def test_table4_layout(tmp_path):
    runs = tmp_path / "runs.csv"
    append_rows(runs, _rows("a", "2024-01-01T00:00:00", "none", "pair", {
        "mse_at_1000": 9.0, "mse_dodging_at_1000": 3.1e-3, "mse_impersonation_at_1000": 2.4e-3,
        "mse_dodging_at_5000": 2.5e-4, "mse_impersonation_at_5000": 2.4e-4}))
    # a newer dodging-only run replaces the dodging half of the pair run
    append_rows(runs, _rows("b", "2024-01-02T00:00:00", "none", "dodging",
                            {"mse_at_1000": 1.0, "mse_dodging_at_1000": 1.234e-3}))
    append_rows(runs, _rows("c", "2024-01-01T00:00:00", "jpeg", "impersonation",
                            {"mse_impersonation_at_5000": 0.05}))
    append_rows(runs, _rows("d", "2024-01-03T00:00:00", "median", "pair",
                            {"mse_dodging_at_1000": 7.0}, attack="pgd"))  # not this table
    md = render_table(str(runs), layout="table4")
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| Defense"))
    assert header == ("| Defense | Dodging 1000 | Dodging 5000 | Impersonation 1000 | "
                      "Impersonation 5000 |")
    body = {line.split(" | ")[0].strip("| "): line for line in lines
            if line.startswith("| ") and not line.startswith("| Defense")}
    assert list(body) == ["none", "jpeg"]  # the paper's defense order; median only has pgd
    assert body["none"] == "| none | 1.23e-3 | 2.50e-4 | 2.40e-3 | 2.40e-4 |"
    assert body["jpeg"] == "| jpeg | – | – | – | 5.00e-2 |"
    # scope filters apply as in the other layouts
    with pytest.raises(FacebenchError, match="evolutionary"):
        render_table(str(runs), layout="table4", filters={"protocol": "10-fold"})


# -- on real LFW crops ---------------------------------------------------------------------
@pytest.mark.lfw
def test_lfw_pair_run_and_table4(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "runs.csv"
    df = facebench.run(protocol="dev-test", pairs=4, attack="evolutionary", goal="pair",
                       attack_params={"budgets": (20, 60), "progress": False},
                       dataset="lfw", data_home=str(shared_data), out=str(out), progress=False)
    name = "evolutionary[budgets=20/60]"  # not progress: it changes nothing crafted
    assert set(df.attack) == {"none", name}
    adv = df[df.attack == name].set_index("metric")["value"]
    assert (df[df.attack == name]["adaptive"] == "query").all()
    for q in (20, 60):
        assert f"mse_at_{q}" in adv.index
    assert adv["mse_at_60"] <= adv["mse_at_20"] and adv["mse_at_20"] > 0
    modes = [m for m in ("dodging", "impersonation") if f"mse_{m}_at_60" in adv.index]
    assert modes  # at least one half was attacked (the others may be wrong when clean)
    for m in modes:
        assert adv[f"mse_{m}_at_60"] <= adv[f"mse_{m}_at_20"]
    assert adv["asr"] > 0  # the probes it searched on end on the other side of thr
    md = render_table(str(out), layout="table4")
    assert "| none |" in md and "Dodging 20" in md and "Impersonation 60" in md
    csv = pd.read_csv(out)
    assert set(csv["run_id"]) == {df["run_id"].iloc[0]}


def test_work_line_counts_queries_for_a_query_attack(capsys):
    """The up-front work line and the bar count the evolutionary attack's queries (its
    largest budget), not the two passes a steps-less attack is assumed to cost."""
    import facebench

    facebench.run(pairs=4, goal="dodging", attack="evolutionary", out=None, progress=True,
                  attack_params={"budgets": "5,10", "search_size": 8})
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("work:"))
    assert "evolutionary on the dodging probes × ~11 queries each" in line, line

"""Library backends (art:, foolbox:, torchattacks:) on a toy recognizer: names, errors,
parameter mapping, the two-logit wrapper, agreement with facebench's own PGD, and the seeding
and query/time bounds every library call runs under."""
import os
import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

from facebench.attack import success
from facebench.attacks.library import LIBRARIES, QueryBudget, TwoLogitVerifier, labels_for
from facebench.errors import FacebenchError
from facebench.registry import ATTACKS
from facebench.runner import build_attack
from facebench.threat import ThreatModel

# tiny tensors: intra-op threads only add contention (HopSkipJump queries one sample at a time)
pytestmark = pytest.mark.usefixtures("one_thread")

PREFIXES = [p for p, _ in ATTACKS.prefixes()]
#: backends the README's CI install puts in place: missing there is a failure, not a skip
CI_BACKENDS = ("art", "foolbox", "torchattacks")
PGD = {"art": "art:ProjectedGradientDescent", "foolbox": "foolbox:LinfPGD",
       "torchattacks": "torchattacks:PGD"}
L2PGD = {"art": "art:ProjectedGradientDescent", "foolbox": "foolbox:L2PGD",
         "torchattacks": "torchattacks:PGDL2"}
HSJ = ("art:HopSkipJump", {"max_iter": 2, "max_eval": 20, "init_eval": 5, "init_size": 20})


def need(prefix):
    """Skip, saying so, when an optional backend is missing; fail under CI=true, whose
    install has all of CI_BACKENDS, so a broken install cannot pass as skips."""
    module, pip, _ = LIBRARIES[prefix]
    try:
        __import__(module)
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true" and prefix in CI_BACKENDS:
            pytest.fail(f"CI=true but the {prefix}: backend is missing ({exc}); {pip}",
                        pytrace=False)
        pytest.skip(f"optional backend {prefix}: not installed ({pip})")


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
    assert {"art", "foolbox", "torchattacks"} <= set(PREFIXES)
    assert "torchattacks:PGD" in ATTACKS
    # the tables the parametrized tests use cover every registered prefix
    assert set(PREFIXES) <= set(PGD) and set(PREFIXES) <= set(LIBRARIES)


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_backend_fails_under_ci_and_skips_otherwise(ci, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # `import torchattacks` fails
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="torchattacks.*pip install --no-deps torchattacks"):
        need("torchattacks")


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
    monkeypatch.setitem(sys.modules, LIBRARIES[prefix][0], None)  # `import <lib>` fails
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


@pytest.mark.parametrize("prefix", PREFIXES)
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
    for key, bad, rule in [("max_queries", 0, "an integer >= 1"),
                           ("max_seconds", -1, "a number > 0"),
                           ("seed", -1, "an integer >= 0"), ("seed", 1.5, "an integer")]:
        with pytest.raises(FacebenchError, match=f"{key} must be {rule}"):
            build_attack(PGD[prefix], t, {key: bad})


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
@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("norm, eps", [("linf", 4), ("l2", 0.3)])
def test_library_pgd_equals_facebench_pgd(toy, prefix, norm, eps):
    need(prefix)
    rec, x, g, dodge, thr = toy
    name = (PGD if norm == "linf" else L2PGD)[prefix]
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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("numpy_seed", [2, 11])  # numpy's global state that once hung
# seed 3 (ART 1.20): pair 2, whose clean cosine is the threshold itself, falls into the
# endless step-size search and is stopped at the default budget of 20000 queries
@pytest.mark.parametrize("seed", [0, 3])
def test_art_decision_based_attack_queries_each_pair_against_its_own_gallery(
        toy, monkeypatch, numpy_seed, seed):
    """HopSkipJump attacks one sample at a time with noise starts that cannot be matched back
    to a pair, so every pair runs in a verifier holding only its own gallery. Its step-size
    search has no bound of its own (``while not success: epsilon /= 2``); facebench's query
    budget ends it, whatever state numpy's global generator was left in."""
    need("art")
    rec, x, g, dodge, thr = toy
    pairs_per_query = []
    original = TwoLogitVerifier.rows

    def spy(self, inp):
        pairs_per_query.append(self.probes.shape[0])
        return original(self, inp)

    monkeypatch.setattr(TwoLogitVerifier, "rows", spy)
    name, params = HSJ
    attack = build_attack(name, ThreatModel("l2", 20.0), {**params, "seed": seed})
    assert not attack.gradient_based and attack.query_limit() == 20000
    np.random.seed(numpy_seed)
    adv = attack.perturb(rec, x, g, dodge, thr)
    assert pairs_per_query and set(pairs_per_query) == {1}
    assert adv.shape == x.shape and (attack.threat.norm_of(adv - x) <= 20.0 + 1e-4).all()
    assert attack.budget_exhausted <= 1  # not == 1: another ART may have fixed its loop
    ok = success(rec(adv), g, dodge, thr)
    assert ok.float().mean() >= 0.5  # adversarial against its own gallery


def test_query_budget_stops_hop_skip_jump_early(toy, monkeypatch, capsys):
    """A tiny max_queries: every pair stops at it, never queries past it, and gets the
    closest adversarial input it queried inside the ball, or its clean probe."""
    need("art")
    rec, x, g, dodge, thr = toy
    used = {}
    original = QueryBudget.observe

    def spy(self, inp, *args):
        used[self] = used.get(self, 0) + inp.shape[0]  # keyed by the budget: kept alive
        return original(self, inp, *args)

    monkeypatch.setattr(QueryBudget, "observe", spy)
    name, params = HSJ
    t = ThreatModel("l2", 20.0)
    # init_size above the budget: a pair whose random start finds nothing adversarial keeps
    # drawing until the budget stops it, instead of ART giving up after init_size draws
    attack = build_attack(name, t, {**params, "init_size": 100, "max_queries": 30})
    attack.reset_records()
    adv = attack.perturb(rec, x, g, dodge, thr)
    assert adv.shape == x.shape and (t.norm_of(adv - x) <= 20.0 + 1e-4).all()
    assert 0 <= adv.min() and adv.max() <= 1
    assert len(used) == x.shape[0] and max(used.values()) <= 30
    assert attack.budget_exhausted == x.shape[0]
    clean = (adv == x).flatten(1).all(dim=1)
    assert (clean | success(rec(adv), g, dodge, thr)).all() and not clean.all()
    metrics = attack.extra_metrics(success=np.zeros(6, bool), l2=np.zeros(6))
    assert metrics == {"budget_exhausted": 1.0}
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("art:HopSkipJump stopped at its query budget (30 queries per probe) "
                    "on 6 probes")]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_time_budget_returns_clean_probes(toy, prefix):
    need(prefix)
    rec, x, g, dodge, thr = toy
    attack = build_attack(PGD[prefix], ThreatModel("linf", 4), {"steps": 3,
                                                                 "max_seconds": 1e-9})
    attack.reset_records()
    assert torch.equal(attack.perturb(rec, x, g, dodge, thr), x)
    assert attack.budget_exhausted == x.shape[0]
    assert "time budget (1e-09 s per batch) on 6 probes" in attack.budget_warning()
    assert attack.extra_metrics(success=np.zeros(6, bool), l2=np.zeros(6)) == {}


def test_default_query_limits():
    need("torchattacks")
    t = ThreatModel("linf", 4)
    assert build_attack("torchattacks:PGD", t, {"steps": 10}).query_limit() == 20000
    assert build_attack("torchattacks:PGD", t, {"steps": 1000}).query_limit() == 200000
    assert build_attack("torchattacks:Square", t, {}).query_limit() == 20000
    assert build_attack("torchattacks:PGD", t, {"max_queries": 7}).query_limit() == 7
    # facebench's own parameters never reach the library
    kw = build_attack("torchattacks:PGD", t, {"seed": 3, "max_queries": 7}).kwargs_for(
        torch.rand(2, 3, 4, 4))
    assert not {"seed", "max_queries", "max_seconds"} & set(kw)
    # a class with a seed keyword of its own gets facebench's
    square = build_attack("torchattacks:Square", t, {"seed": 5})
    assert square.kwargs_for(torch.rand(2, 3, 4, 4))["seed"] == 5


#: a random-start attack of each backend
RANDOM_START = {"art": "art:ProjectedGradientDescent", "foolbox": "foolbox:LinfPGD",
                "torchattacks": "torchattacks:PGD"}


def _scramble_global_rngs(k):
    np.random.seed(100 + k)
    np.random.rand(7 * k + 1)
    torch.manual_seed(200 + k)
    torch.rand(3 * k + 1)
    random.seed(300 + k)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_same_seed_same_output_whatever_ran_before(toy, prefix):
    need(prefix)
    rec, x, g, dodge, thr = toy
    t = ThreatModel("linf", 8)

    def run(seed, k):
        _scramble_global_rngs(k)
        attack = build_attack(RANDOM_START[prefix], t, {"steps": 1, "random_start": True,
                                                         "seed": seed})
        return attack.perturb(rec, x, g, dodge, thr)

    first = run(7, 0)
    assert torch.equal(first, run(7, 1))
    assert not torch.equal(first, run(8, 1))


def test_hop_skip_jump_repeats_with_its_seed(toy):
    """ART's HopSkipJump starts from an unseeded np.random.RandomState(): seeded too."""
    need("art")
    rec, x, g, dodge, thr = toy
    name, params = HSJ
    outs = []
    for k in range(2):
        _scramble_global_rngs(k)
        attack = build_attack(name, ThreatModel("l2", 20.0), params)
        outs.append(attack.perturb(rec, x[:2], g[:2], dodge[:2], thr))
    assert torch.equal(outs[0], outs[1])
    assert np.random.RandomState is np.random.mtrand.RandomState


@pytest.mark.parametrize("name", [RANDOM_START[p] for p in PREFIXES] + [HSJ[0]])
def test_global_state_is_left_as_it_was(toy, name):
    """numpy's and Python's global generators, torch's stream and the recognizer's train or
    eval mode are the same before and after a library call."""
    need(name.split(":")[0])
    rec, x, g, dodge, thr = toy
    params = HSJ[1] if name == HSJ[0] else {"steps": 2, "random_start": True}
    threat = ThreatModel("l2", 20.0) if name == HSJ[0] else ThreatModel("linf", 4)
    attack = build_attack(name, threat, params)
    for training in (False, True):
        rec.train(training)
        _scramble_global_rngs(1)
        before = np.random.get_state(), random.getstate(), torch.get_rng_state()
        attack.perturb(rec, x[:2], g[:2], dodge[:2], thr)
        after = np.random.get_state(), random.getstate(), torch.get_rng_state()
        assert before[0][0] == after[0][0] and np.array_equal(before[0][1], after[0][1])
        assert before[0][2:] == after[0][2:]
        assert before[1] == after[1] and torch.equal(before[2], after[2])
        assert all(m.training is training for m in rec.modules())
    rec.eval()

"""Metrics against hand-computed cases and scikit-learn."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.metrics.pairwise import cosine_similarity as sk_cos

from facebench import metrics as M
from facebench.errors import FacebenchError

# genuine .9 .8 .3 | impostor .7 .2 .1
S = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1]
Y = [1, 1, 1, 0, 0, 0]


def synthetic(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile([1, 0], n // 2)
    s = np.where(y == 1, rng.normal(0.6, 0.15, n), rng.normal(0.2, 0.15, n))
    return s, y


def test_cosine_similarity_numpy_torch_sklearn():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    ref = np.diag(sk_cos(a, b))
    np.testing.assert_allclose(M.cosine_similarity(a, b), ref, atol=1e-12)
    t = M.cosine_similarity(torch.tensor(a), torch.tensor(b))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), ref, atol=1e-12)
    assert M.cosine_similarity(np.zeros((1, 3)), np.ones((1, 3)))[0] == 0.0


def test_eer_hand_computed_exact_point():
    rate, thr = M.eer(S, Y)
    assert rate == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.7) == M.eer_threshold(S, Y)


def test_eer_hand_computed_interpolated():
    # ROC points (FAR, FRR): (0, 1/3) at .8 and (1/2, 1/3) at .5 -> crossing 2/3 of the way
    rate, thr = M.eer([0.9, 0.8, 0.4, 0.5, 0.1], [1, 1, 1, 0, 0])
    assert rate == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.6)


def test_eer_degenerate_cases():
    assert M.eer([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])[0] == 0.0
    assert M.eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0] == 1.0
    rate, thr = M.eer([0.5, 0.5], [1, 0])  # all tied: chance
    assert rate == pytest.approx(0.5) and thr == pytest.approx(0.5)


def test_eer_is_where_far_meets_frr_on_random_data():
    s, y = synthetic(2000, seed=3)
    rate, thr = M.eer(s, y)
    far = np.mean(s[y == 0] >= thr)
    frr = np.mean(s[y == 1] < thr)
    assert abs(far - rate) < 2e-3 and abs(frr - rate) < 2e-3


def test_roc_and_auc_agree_with_sklearn():
    s, y = synthetic(300, seed=2)
    fpr, tpr, thr = M.roc(s, y)
    rf, rt, rthr = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, rf)
    np.testing.assert_allclose(tpr, rt)
    np.testing.assert_allclose(thr, rthr)
    assert M.roc_auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert M.roc_auc(S, Y) == pytest.approx(8 / 9)  # 8 of 9 genuine/impostor orderings right


def test_tar_at_far_is_a_step():
    assert M.tar_at_far(S, Y, 0.0) == pytest.approx(2 / 3)
    assert M.tar_at_far(S, Y, 0.2) == pytest.approx(2 / 3)  # no interpolation toward 1/3 FAR
    assert M.tar_at_far(S, Y, 1 / 3) == pytest.approx(1.0)
    with pytest.raises(FacebenchError):
        M.tar_at_far(S, Y, 1.5)


def test_best_threshold_and_accuracy():
    # .25 and .75 both give 5/6; ties go to the lower midpoint
    assert M.best_threshold(S, Y) == pytest.approx(0.25)
    assert M.accuracy_at(S, Y, 0.25) == pytest.approx(5 / 6)
    assert M.accuracy_at(S, Y, 0.7) == pytest.approx(4 / 6)  # accept iff score >= thr
    assert M.accuracy_at(S, Y, 0.75) == pytest.approx(5 / 6)
    s, y = synthetic(400, seed=4)
    grid = np.linspace(-1, 2, 3001)
    brute = max(M.accuracy_at(s, y, t) for t in grid)
    assert M.accuracy_at(s, y, M.best_threshold(s, y)) >= brute - 1e-12


def test_lfw_10fold_hand_case():
    # fold 0 separable around .5, fold 1 inverted: each fold's threshold fails the other
    s = [0.9, 0.1, 0.3, 0.4]
    y = [1, 0, 1, 0]
    mean, std = M.lfw_10fold_accuracy(s, y, [0, 0, 1, 1])
    assert mean == pytest.approx(0.5) and std == pytest.approx(0.0)
    assert M.lfw_10fold_accuracy(s, y, 2) == (mean, std)


def test_lfw_10fold_synthetic():
    s, y = synthetic(600, seed=5)
    mean, std = M.lfw_10fold_accuracy(s, y, 10)
    ids = np.repeat(np.arange(10), 60)
    accs = []
    for k in range(10):
        t = M.best_threshold(s[ids != k], y[ids != k])
        accs.append(M.accuracy_at(s[ids == k], y[ids == k], t))
    assert mean == pytest.approx(np.mean(accs)) and std == pytest.approx(np.std(accs))
    assert 0.85 < mean <= 1.0 and std > 0
    assert M.lfw_10fold_accuracy(s, y, ids) == (mean, std)
    with pytest.raises(FacebenchError, match="at least 2 folds"):
        M.lfw_10fold_accuracy(s, y, 1)


def test_attack_success_rate():
    clean = [0.9, 0.8, 0.3, 0.7, 0.2]
    labels = [1, 1, 1, 0, 0]
    attacked = [True, True, True, True, False]
    adv = [0.4, 0.6, 0.9, 0.1, 0.9]
    # eligible: rows 0, 1 (row 2 and 3 wrong when clean, row 4 not attacked); row 0 flips
    assert M.attack_success_rate(clean, adv, labels, 0.5, attacked) == pytest.approx(0.5)
    assert math.isnan(M.attack_success_rate(clean, adv, labels, 0.5, [False] * 5))


def test_perturbation_sizes():
    x = torch.full((2, 1, 2, 2), 0.5)  # ‖x_i‖₂ = 1
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] += 0.1
    x_adv[1] -= 0.2
    linf, rel = M.perturbation_sizes(x, x_adv)
    np.testing.assert_allclose(linf, [0.1, 0.2], atol=1e-6)
    np.testing.assert_allclose(rel, [0.1, 0.4], atol=1e-6)


def test_nan_and_shape_errors():
    with pytest.raises(FacebenchError, match="contains NaN"):
        M.eer([0.1, float("nan")], [1, 0])
    with pytest.raises(FacebenchError, match="contains NaN"):
        M.attack_success_rate([0.9, 0.1], [np.nan, 0.1], [1, 0], 0.5, [True, True])
    with pytest.raises(FacebenchError):
        M.roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(FacebenchError):
        M.accuracy_at([0.1, 0.2], [1], 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_roc_and_auc_match_sklearn_with_ties_and_imbalance(seed):
    # coarse scores force many ties, also across classes; the class sizes differ
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
    y[:2] = [0, 1]
    s = np.round(rng.normal(0.3 * y, 0.3), int(rng.integers(0, 3)))
    fpr, tpr, thr = M.roc(s, y)
    rf, rt, rthr = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, rf)
    np.testing.assert_array_equal(tpr, rt)
    np.testing.assert_array_equal(thr, rthr)
    assert M.roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_metrics_module_needs_neither_sklearn_nor_torch():
    import subprocess
    import sys
    code = ("import sys, facebench.metrics as M; M.eer([.9, .1], [1, 0]); "
            "print(sorted(m for m in ('sklearn', 'torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

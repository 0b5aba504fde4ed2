"""Verification metrics: arrays of cosine scores and 0/1 labels in, plain floats out.

Every function checks its inputs once (NaN, shape, both classes present) so that a broken
recognizer or attack fails with one readable :class:`FacebenchError` instead of a silently
wrong number. Labels: 1 = same identity (genuine), 0 = different identities (impostor);
a pair is accepted iff ``score >= thr``.
"""
from __future__ import annotations

import sys
from typing import Tuple

import numpy as np

from .errors import FacebenchError


def _is_tensor(value) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch (a CLI that never made a
    tensor need not pay for it; if torch is not loaded, nothing can be a tensor)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _array(values, what: str) -> np.ndarray:
    """1-D float64 copy of ``values`` (numpy, torch or list); NaN is an error."""
    if _is_tensor(values):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(arr).any():
        raise FacebenchError(f"{what} contains NaN ({int(np.isnan(arr).sum())} of {arr.size})")
    return arr


def _check(scores, labels, both: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Validated (scores, labels) arrays; ``both`` demands genuine and impostor pairs."""
    s = _array(scores, "scores")
    y = _array(labels, "labels")
    if s.shape != y.shape:
        raise FacebenchError(f"scores has {s.size} entries but labels has {y.size}")
    if s.size == 0:
        raise FacebenchError("scores is empty")
    if not np.isin(y, (0.0, 1.0)).all():
        raise FacebenchError("labels must be 0 (different identity) or 1 (same identity)")
    y = y.astype(bool)
    if both and (y.all() or not y.any()):
        raise FacebenchError("labels must contain both same-identity and different-identity pairs")
    return s, y


def cosine_similarity(a, b):
    """Row-wise cosine of two N×D arrays; returns the input's type (torch stays differentiable)."""
    if _is_tensor(a) or _is_tensor(b):
        import torch

        a = torch.as_tensor(a)
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
        return torch.nn.functional.cosine_similarity(a.reshape(a.shape[0], -1),
                                                     b.reshape(b.shape[0], -1), dim=1, eps=1e-12)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    return np.sum(a * b, axis=1) / (na * nb)


def _roc(s: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of checked inputs: one point per distinct score, tied scores decided together.

    Scores sorted decreasing (stable, as scikit-learn's ``roc_curve``, whose output this
    matches exactly); at the last index of each run of equal scores the accepted genuine
    pairs are the cumulative count of labels, the accepted impostors the rest.
    """
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.r_[0.0, np.cumsum(y)[last]]
    fps = np.r_[0.0, 1.0 + last - tps[1:]]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, s[last]]


def roc(scores, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds decreasing from +inf; every operating point kept."""
    return _roc(*_check(scores, labels))


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (probability a genuine pair outscores an impostor pair, ties
    counting one half): the trapezoid rule on the full ROC, exact for step curves."""
    fpr, tpr, _ = roc(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def eer(scores, labels) -> Tuple[float, float]:
    """(EER, eer_threshold): where FAR meets FRR = 1 - TPR, linearly interpolated on the ROC.

    FAR - FRR rises from -1 (threshold +inf) to +1 (lowest threshold), so the first ROC point
    where it is >= 0 brackets the crossing with the point before it; EER and threshold are
    interpolated between the two. Perfect separation gives 0.0, fully inverted scores 1.0.
    """
    fpr, tpr, thr = roc(scores, labels)
    thr = thr.astype(np.float64).copy()
    thr[0] = thr[1]  # the "accept nobody" point has threshold +inf: use the top score instead
    diff = fpr - (1.0 - tpr)
    i = int(np.argmax(diff >= 0))  # exists: diff[-1] = 1; and i >= 1 since diff[0] = -1
    d0, d1 = diff[i - 1], diff[i]
    t = d0 / (d0 - d1)
    rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    threshold = thr[i - 1] + t * (thr[i] - thr[i - 1])
    return float(rate), float(threshold)


def eer_threshold(scores, labels) -> float:
    """The threshold at the EER crossing (second element of :func:`eer`)."""
    return eer(scores, labels)[1]


def tar_at_far(scores, labels, far: float) -> float:
    """TAR at the lowest threshold whose FAR is still <= ``far`` (step, never interpolated).

    This is the conservative reading: the reported operating point really exists on the
    empirical ROC, so the promised FAR is never exceeded.
    """
    far = float(far)
    if not 0.0 <= far <= 1.0:
        raise FacebenchError(f"far must be in [0, 1], got {far}")
    fpr, tpr, _ = roc(scores, labels)
    return float(tpr[fpr <= far].max())  # fpr[0] = 0, so the set is never empty


def accuracy_at(scores, labels, thr: float) -> float:
    """Share of pairs decided correctly when accepting iff score >= thr."""
    s, y = _check(scores, labels, both=False)
    return float(np.mean((s >= thr) == y))


def best_threshold(scores, labels) -> float:
    """Threshold maximising accuracy: a midpoint between adjacent distinct sorted scores.

    The candidates also include one below the lowest and one above the highest score
    (accept all / reject all). Ties go to the lowest such threshold.
    """
    s, y = _check(scores, labels, both=False)
    u = np.unique(s)
    cands = np.concatenate(([u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]))
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    # accepted genuine = #pos >= t ; rejected impostor = #neg < t
    correct = (pos.size - np.searchsorted(pos, cands, side="left")) + np.searchsorted(
        neg, cands, side="left")
    return float(cands[int(np.argmax(correct))])


def lfw_10fold_accuracy(scores, labels, folds=10) -> Tuple[float, float]:
    """(mean, population std) of the LFW protocol accuracy: threshold fit on the other folds.

    ``folds`` is either one fold id per pair, or a number of contiguous equal folds (the
    LFW ``pairs.txt`` lists its ten sets one after the other).
    """
    s, y = _check(scores, labels, both=False)
    if np.ndim(folds) == 0:
        k = int(folds)
        ids = np.zeros(s.size, dtype=np.int64)
        for j, part in enumerate(np.array_split(np.arange(s.size), max(k, 1))):
            ids[part] = j
    else:
        ids = np.asarray(folds).reshape(-1)
        if ids.size != s.size:
            raise FacebenchError(f"folds has {ids.size} entries but scores has {s.size}")
    names = np.unique(ids)
    if names.size < 2:
        raise FacebenchError(f"lfw_10fold_accuracy needs at least 2 folds, got {names.size}")
    accs = []
    for name in names:
        test = ids == name
        thr = best_threshold(s[~test], y[~test])
        accs.append(np.mean((s[test] >= thr) == y[test]))
    return float(np.mean(accs)), float(np.std(accs))


def attack_success_rate(clean_scores, adv_scores, labels, thr: float, attacked_mask) -> float:
    """Share of attacked pairs, decided correctly when clean, that are decided wrongly after.

    Pairs that were already misclassified before the attack are left out (they need no
    attack), so this is the standard ASR. NaN when no attacked pair was correct when clean.
    """
    clean, y = _check(clean_scores, labels, both=False)
    adv = _array(adv_scores, "adversarial scores")
    mask = _array(attacked_mask, "attacked_mask").astype(bool)
    if not (adv.shape == clean.shape == mask.shape):
        raise FacebenchError("clean scores, adversarial scores, labels and attacked_mask differ in length")
    base = mask & ((clean >= thr) == y)
    if not base.any():
        return float("nan")
    return float(np.mean((adv[base] >= thr) != y[base]))


def perturbation_sizes(x, x_adv) -> Tuple[np.ndarray, np.ndarray]:
    """Per-sample (L∞ of δ, ‖δ‖₂ / ‖x‖₂) in pixel units of [0, 1] images, as numpy arrays."""
    import torch  # only attacked runs get here; they have torch loaded already

    x = torch.as_tensor(x).detach().double().cpu()
    x_adv = torch.as_tensor(x_adv).detach().double().cpu()
    if x.shape != x_adv.shape:
        raise FacebenchError(f"x has shape {tuple(x.shape)} but x_adv has {tuple(x_adv.shape)}")
    d = (x_adv - x).reshape(x.shape[0], -1)
    linf = d.abs().amax(dim=1) if d.shape[1] else torch.zeros(x.shape[0], dtype=torch.float64)
    rel = d.norm(dim=1) / x.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    return linf.numpy(), rel.numpy()

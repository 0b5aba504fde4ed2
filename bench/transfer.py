"""Transfer between recognizers that crop the photo differently: the perturbation lives on
the photo both recognizers are shown.

A transfer run crafts on a *source* recognizer and scores on the *target*. When both use the
same alignment, the attack works on the target's own crops (the runner's plain transfer).
When they do not -- dlib-resnet sees a 150x150 dlib chip, sface a 112x112 ArcFace crop,
facenet a 160x160 MTCNN-style box -- the two crops are different images of one photo, and
the only perturbation both can see is one *of the photo*. So, per attacked probe:

1. the attack is crafted on the **source's crop** ``x_s`` of the photo (its gallery, its
   threshold, its budget): ``delta_s = adv_s - x_s``;
2. ``delta_s`` is carried to the **photo**: ``d = to_frame(delta_s)``, the source aligner's
   least-squares inverse (:mod:`facebench.data.geometry`; zero outside the source's box),
   clipped so the photo stays in [0, 1];
3. the **target's crop** of the perturbed photo is cut by the target's aligner with the
   same bilinear weights as its clean crop, in float: ``x_t + C_t d`` (clipped to [0, 1]),
   where ``x_t`` is exactly the clean crop the clean rows were scored on;
4. the target scores it against its clean gallery at its clean threshold, as in any run.

**The budget is stated on the source crop**: ``eps`` bounds ``delta_s`` in the source's
pixels, and the row's ``mean_rel_l2`` / ``mean_linf`` are measured there, as for every
transfer row. The rows add what the carrying did, so nobody mistakes one space for another:
``transfer_kept`` (``||C_s d|| / ||delta_s||``: the share of the crafted perturbation a photo
can hold -- below 1 where the source's crop enlarges the photo, as dlib's chip does),
``transfer_target_rel_l2`` (the perturbation the target's crop really received, relative to
that crop) and ``transfer_photo_l2`` (``||d||_2`` on the photo, [0, 1] pixels).

Geometry is fixed by the clean photo: detector-based aligners (``arcface-5pt``) locate the
face on the clean photo and both crops use that warp (``mode="linear"``, the default: the
measurement isolates the perturbation). ``mode="photo"`` instead renders the adversarial
photo to uint8 and runs the target's aligner on it, detector included -- the full pipeline a
deployed system would run, with its rounding and any landmark shift.

:func:`geometry_transfer` is the runner's entry point (``None`` when the source crops like the
target, which keeps today's transfer untouched); :func:`evaluate_transfer` runs a whole
transfer evaluation without the runner and returns its rows.
"""
from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from dataclasses import asdict, replace
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from . import metrics as M
from .errors import FacebenchError
from .registry import register_metric

MODES = ("linear", "photo")

for _name, _what in (
        ("transfer_kept", "share of the source-crop perturbation the photo carries"),
        ("transfer_target_rel_l2", "perturbation the target's crop received, ||d_t|| / ||x_t||"),
        ("transfer_photo_l2", "L2 of the perturbation on the photo, [0, 1] pixels"),
        ("source_asr", "ASR on the source itself, on its crafted crops"),
        ("source_asr_carried", "ASR on the source on its crop of the perturbed photo")):
    register_metric(_name, "percent" if "asr" in _name else "number", _what)


def _frame_files(pairs) -> list:
    """Where each of ``pairs.unique_paths()`` is read (under its root, never outside)."""
    from .data.images import _on_disk

    root = None if pairs.root is None else os.fspath(pairs.root)
    return [_on_disk(str(p), root) for p in pairs.unique_paths()]


class GeometryTransfer:
    """Carries probes crafted on the source's crops to the target's crops of the same photos.

    ``frames[i]`` is the photo file of image ``i``; ``source_images`` / ``target_images`` are
    the two aligners' uint8 crops of those photos (the stacks the runner holds), so image
    indices are the run's own. Call it as ``carry(image_idx, probe, adv)`` with the source's
    clean and crafted crops (N x 3 x h_s x w_s, [0, 1]); it returns the target's crops
    (N x 3 x h_t x w_t) and accumulates the ``transfer_*`` statistics :meth:`metrics` gives.
    """

    def __init__(self, frames: Sequence[str], source_aligner, target_aligner,
                 source_images: np.ndarray, target_images: np.ndarray, mode: str = "linear",
                 keep: int = 64):
        if mode not in MODES:
            raise FacebenchError(f"transfer mode must be one of {', '.join(MODES)}, got {mode!r}")
        for images, aligner, what in ((source_images, source_aligner, "source"),
                                      (target_images, target_aligner, "target")):
            if len(images) != len(frames) or tuple(images.shape[1:3]) != aligner.out_size:
                raise FacebenchError(f"{what} crops {images.shape} do not match {len(frames)} "
                                     f"photos cut by {aligner.key}")
        self.frames = list(frames)
        self.source_aligner, self.target_aligner = source_aligner, target_aligner
        self.source_images, self.target_images = source_images, target_images
        self.mode = mode
        self._keep = keep
        self._cache: "OrderedDict[int, tuple]" = OrderedDict()
        self.reset()

    @classmethod
    def for_pairs(cls, pairs, source_aligner, target_aligner, target_images: np.ndarray,
                  progress: bool = True, mode: str = "linear") -> "GeometryTransfer":
        """For a run's ``pairs``: the source's crops come from the crop cache like any."""
        from .data import pair_images

        source_images, _, _ = pair_images(pairs, source_aligner, progress=progress)
        return cls(_frame_files(pairs), source_aligner, target_aligner, source_images,
                   target_images, mode)

    @property
    def label(self) -> str:
        return f"{self.source_aligner.key} -> photo -> {self.target_aligner.key} ({self.mode})"

    def reset(self) -> None:
        self._kept, self._target_rel, self._photo_l2 = [], [], []

    def _prepared(self, i: int) -> Tuple[np.ndarray, Any, Any]:
        """(photo as [0, 1] floats, source geometry, target geometry) of image ``i``; the
        geometries hold factorisations, so only the last few are kept."""
        from .data.images import load_image

        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = load_image(self.frames[i])
        item = (img.astype(np.float64) / 255.0, self.source_aligner.geometry(img),
                self.target_aligner.geometry(img) if self.mode == "linear" else None)
        self._cache[i] = item
        if len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return item

    def carry_one(self, i: int, delta_src: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(target crop, source's crop of the perturbed photo), both h x w x 3 in [0, 1],
        for the source-crop perturbation ``delta_src`` (h_s x w_s x 3) of image ``i``."""
        frame, g_src, g_tgt = self._prepared(i)
        d = np.clip(frame + g_src.to_frame(delta_src), 0.0, 1.0) - frame  # what a photo holds
        seen_src = np.clip(self.source_images[i] / 255.0 + g_src.crop(d), 0.0, 1.0)
        clean_tgt = self.target_images[i] / 255.0
        if self.mode == "linear":
            tgt = np.clip(clean_tgt + g_tgt.crop(d), 0.0, 1.0)
        else:
            photo = np.round((frame + d) * 255.0).astype(np.uint8)
            tgt = self.target_aligner(photo) / 255.0
        norm = float(np.linalg.norm(delta_src))
        self._kept.append(float(np.linalg.norm(seen_src - self.source_images[i] / 255.0))
                          / norm if norm > 0 else math.nan)
        self._target_rel.append(float(np.linalg.norm(tgt - clean_tgt)
                                      / max(np.linalg.norm(clean_tgt), 1e-12)))
        self._photo_l2.append(float(np.linalg.norm(d)))
        return tgt, seen_src

    def __call__(self, image_idx, probe: torch.Tensor, adv: torch.Tensor,
                 source_view: bool = False):
        """The target's crops of the photos perturbed by ``adv - probe`` (source crops,
        N x 3 x h x w); with ``source_view``, also the source's crops of those photos."""
        delta = (adv.detach() - probe.detach()).double().cpu().permute(0, 2, 3, 1).numpy()
        out = [self.carry_one(int(i), d) for i, d in zip(np.asarray(image_idx), delta)]

        def stack(k: int) -> torch.Tensor:
            arr = np.stack([o[k] for o in out]).astype(np.float32)
            return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(adv.device)

        return (stack(0), stack(1)) if source_view else stack(0)

    def metrics(self) -> Dict[str, float]:
        """Means over the probes carried since the last :meth:`reset`."""
        mean = (lambda v: float(np.nanmean(v)) if len(v) else math.nan)
        return {"transfer_kept": mean(self._kept),
                "transfer_target_rel_l2": mean(self._target_rel),
                "transfer_photo_l2": mean(self._photo_l2)}


def source_label(source: Optional[str], carry: Optional["GeometryTransfer"]) -> Optional[str]:
    """What follows ``transfer:`` in the ``adaptive`` column: the source, plus ``@photo``
    when the adversarial photo was re-aligned by the target (the default carry, ``linear``,
    is the plain label), so rows of the two carries never share a cell."""
    if source is None or carry is None or carry.mode == "linear":
        return source
    return f"{source}@{carry.mode}"


def geometry_transfer(source, target_aligner, dataset, pairs, target_images: np.ndarray,
                      progress: bool = True, mode: str = "linear",
                      align: Optional[str] = None) -> Optional[GeometryTransfer]:
    """The runner's hook: a :class:`GeometryTransfer` when the transfer ``source`` (the
    runner's ``(recognizer, defense)`` or None) crops ``dataset``'s photos unlike
    ``target_aligner``; None otherwise (no source, or the same crops: plain transfer)."""
    if source is None:
        return None
    source_aligner = dataset.aligner(source[0], align)
    if source_aligner.key == target_aligner.key:
        return None
    return GeometryTransfer.for_pairs(pairs, source_aligner, target_aligner, target_images,
                                      progress=progress, mode=mode)


# ---------------------------------------------------------------- a whole evaluation

def _load(cfg, plan, mode: str):
    """The runner's ``load_evaluation``, with the carry kept beside the evaluation (this
    module's own craft loop also scores the source on what it crafted)."""
    from . import runner as R

    ev = R.load_evaluation(cfg, plan, transfer_mode=mode)
    return replace(ev, carry=None), ev.carry


def _craft(cfg, plan, ev, clean, view, carry, attacked: np.ndarray, dodge: np.ndarray):
    """Craft on the source's crops, carry to the target's, score: (Attacked, source scores
    on the crafted crops, source scores on its crops of the perturbed photos)."""
    from .embed import to_float
    from .runner import Attacked

    attack, device = plan.attack, plan.device
    images = ev.images if carry is None else carry.source_images
    pick = np.flatnonzero(attacked)
    scores = clean.scores.copy()
    src_clean = M.cosine_similarity(view.gallery_emb[ev.idx_a], view.gallery_emb[ev.idx_b]).numpy()
    src_adv, src_carried = src_clean.copy(), src_clean.copy()
    linf, rel, l2 = [], [], []
    attack.reset_records()
    torch.manual_seed(cfg.seed)
    for start in range(0, len(pick), cfg.batch_size):
        sel = pick[start:start + cfg.batch_size]
        probe = to_float(images[ev.idx_a[sel]], device)
        extra = ({"gallery": to_float(images[ev.idx_b[sel]], device)}
                 if attack.needs_gallery_image else {})
        gallery = view.gallery_emb[ev.idx_b[sel]].to(device)
        with torch.enable_grad():
            adv = attack.perturb(view.target, probe, gallery,
                                 torch.from_numpy(dodge[sel]).to(device), view.threshold, **extra)
        seen, seen_src = (adv, adv) if carry is None else carry(ev.idx_a[sel], probe, adv, True)
        with torch.no_grad():
            adv_emb = ev.defended(seen).float()
            src_adv[sel] = M.cosine_similarity(view.target(adv).float().cpu(),
                                               gallery.cpu()).numpy()
            src_carried[sel] = M.cosine_similarity(view.target(seen_src).float().cpu(),
                                                   gallery.cpu()).numpy()
        if not torch.isfinite(seen).all() or not torch.isfinite(adv_emb).all():
            raise FacebenchError(f"attack {cfg.attack!r} produced NaN/inf images or embeddings")
        scores[sel] = M.cosine_similarity(adv_emb.cpu(), clean.emb[ev.idx_b[sel]]).numpy()
        l_inf, l_rel = M.perturbation_sizes(probe.cpu(), adv.detach().cpu())
        linf.append(np.asarray(l_inf))
        rel.append(np.asarray(l_rel))
        l2.append((adv.detach().cpu().double() - probe.cpu().double()).flatten(1).norm(dim=1)
                  .numpy())
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    result = Attacked(scores, attacked, dodge, cat(linf), cat(rel), cat(l2))
    return result, src_clean, src_adv, src_carried


def evaluate_transfer(source: str, target: str, *, dataset: Optional[str] = None,
                      protocol: Optional[str] = None, pairs: Optional[int] = None,
                      attack: Optional[str] = None, norm: str = "rel-l2",
                      eps: Optional[float] = None, goal: str = "pair",
                      attack_params: Optional[dict] = None, defense: str = "none",
                      seed: int = 0, batch_size: int = 32, device: str = "cpu",
                      data_home=None, mode: str = "linear", out: Optional[str] = None,
                      progress: bool = False) -> pd.DataFrame:
    """Craft ``attack`` on ``source`` (``recognizer[+defense]``), score on ``target``
    (behind ``defense``): the rows a run would write (clean, then attacked with the
    ``transfer_*`` and ``source_asr*`` metrics), appended to ``out`` when given.

    Works for any two geometries (see the module docstring); for equal ones it is the
    runner's plain transfer. The budget ``eps`` is on the source's crop.
    """
    from .attack import attacked_mask
    from .knowledge import attacker_view
    from .plan import RunConfig, validate, with_defaults
    from .results import append_rows
    from . import runner as R

    if mode not in MODES:
        raise FacebenchError(f"transfer mode must be one of {', '.join(MODES)}, got {mode!r}")
    cfg = with_defaults(RunConfig(
        recognizer=target, dataset=dataset, protocol=protocol, pairs=pairs, defense=defense,
        attack=attack, norm=norm, eps=eps, goal=goal, source=source,
        attack_params=dict(attack_params or {}), seed=seed, batch_size=batch_size,
        device=device, out=out, data_home=data_home, progress=progress, adv_cache=False))
    plan = validate(cfg)
    if plan.attack is None:
        raise FacebenchError("a transfer evaluation needs an attack")
    cfg = replace(cfg, protocol=plan.protocol)
    torch.manual_seed(seed)
    np.random.seed(seed)
    ev, carry = _load(cfg, plan, mode)
    clean = R.clean_stage(cfg, ev)
    t0 = time.perf_counter()
    attacked, dodge = attacked_mask(cfg.goal, torch.from_numpy(ev.same))
    plan.attack.bind(defense=ev.defense, data_home=cfg.data_home)
    view = attacker_view(
        plan.attack, adaptive=False, eot_samples=None, source_label=cfg.source,
        source=ev.source, defense=ev.defense, defense_name=cfg.defense,
        recognizer=ev.recognizer, defended=ev.defended,
        images=ev.images if carry is None else carry.source_images, idx_a=ev.idx_a,
        idx_b=ev.idx_b, same=ev.same, clean_emb=clean.emb, clean_thr=clean.thr,
        batch_size=cfg.batch_size, device=plan.device, progress=cfg.progress)
    result, src_clean, src_adv, src_carried = _craft(cfg, plan, ev, clean, view, carry,
                                                    attacked.numpy(), dodge.numpy())
    wall = time.perf_counter() - t0
    rows = R.attacked_rows(cfg, plan, ev, clean, view, result, wall)
    extra = dict(carry.metrics()) if carry is not None else {}
    asr = (lambda adv: M.attack_success_rate(src_clean, adv, ev.same, view.threshold,
                                             result.attacked))
    extra.update(source_asr=asr(src_adv), source_asr_carried=asr(src_carried))
    rows += ev.rows.make(extra, wall, attack=getattr(plan.attack, "row_attack", cfg.attack),
                         threat_model=plan.threat.norm, budget=plan.threat.eps, goal=cfg.goal,
                         adaptive=view.label)
    if cfg.out:  # the clean rows are written already (clean_stage)
        append_rows(cfg.out, rows)
    df = pd.DataFrame(clean.rows + rows)
    df.attrs["config"] = dict(asdict(cfg), transfer_mode=mode,
                              transfer=None if carry is None else carry.label)
    return df

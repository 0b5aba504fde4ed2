"""One benchmark run: clean and attacked verification metrics on a pair protocol.

The run validates every name and budget before touching data, computes clean metrics on the
defended system (the purifier sees probe and gallery alike), appends those rows at once, then
attacks the probes and appends the attacked rows: an attack that fails never loses the clean
numbers.
"""
from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace  # noqa: F401 (replace: tests)
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from . import adv_cache
from . import transfer
from . import metrics as M
from .attack import attacked_mask
from .embed import embed_images, to_float
from .errors import FacebenchError
from .fingerprint import images_digest
from .knowledge import AttackerView, attacker_view
from .crops import aligned_pairs, row_recognizer
from .plan import (Plan, RunConfig, attack_passes, build_attack, build_defense,  # noqa: F401
                   check_training_protocol, parse_source, resolve_protocol, validate,
                   with_defaults)
from .protocol_attack import ProtocolAttack
from .registry import DEFENSES, RECOGNIZERS
from .results import append_rows, git_sha


def load_recognizer(name: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """A registered recognizer in eval mode: images in [0,1] NCHW RGB -> embeddings.

    Its weights are frozen: attacks need gradients w.r.t. the input only, and skipping the
    weight gradients makes each step about 1.5x faster. Call ``requires_grad_(True)`` to tune.
    """
    model = RECOGNIZERS.get(name or RECOGNIZERS.default())()
    return model.to(device).eval().requires_grad_(False)


def verification_metrics(scores: np.ndarray, same: np.ndarray, thr: float) -> Dict[str, float]:
    eer, _ = M.eer(scores, same)
    return {
        "eer": eer,
        "tar_at_far_1e-3": M.tar_at_far(scores, same, 1e-3),
        "tar_at_far_1e-2": M.tar_at_far(scores, same, 1e-2),
        "roc_auc": M.roc_auc(scores, same),
        "acc_at_clean_thr": M.accuracy_at(scores, same, thr),
    }


class _Rows:
    """Builds tidy rows that share the run's identifying columns."""

    def __init__(self, cfg: RunConfig, n_pairs: int, protocol: str,
                 defense_name: Optional[str] = None, recognizer_name: Optional[str] = None):
        self.base = dict(
            run_id=uuid.uuid4().hex[:12],
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            facebench_version=__version__, git_sha=git_sha(), dataset=cfg.dataset,
            protocol=protocol, n_pairs=n_pairs, recognizer=recognizer_name or cfg.recognizer,
            defense=defense_name or cfg.defense, seed=cfg.seed)

    def make(self, metrics: Dict[str, float], wall_s: float, attack="none", threat_model="none",
             budget=0.0, goal="none", adaptive="none") -> List[dict]:
        return [dict(self.base, attack=attack, threat_model=threat_model, budget=budget,
                     goal=goal, adaptive=adaptive, metric=k, value=float(v),
                     wall_s=round(wall_s, 3)) for k, v in metrics.items()]


def _announce_work(cfg: RunConfig, n_pairs: int, n_images: int, attack, defense) -> None:
    """One line up front: how much work this run is, so nobody waits blind."""
    if not cfg.progress:
        return
    what = f"{n_pairs} pairs ({n_images} images) clean through {cfg.recognizer}+{cfg.defense}"
    if attack is not None:
        probes = n_pairs if cfg.goal == "pair" else None
        per = attack_passes(attack, cfg, defense)
        unit = "forward+backward passes" if attack.gradient_based else "queries"
        what += (f", then {cfg.attack} on {probes or 'the ' + cfg.goal} probes × ~{per} "
                 f"{unit} each")
    print(f"work: {what}", file=sys.stderr)


def _warn_small_far(same: np.ndarray) -> None:
    """TAR@FAR=1e-3 from a few dozen impostor pairs is a number, not a measurement."""
    impostors = int((~same).sum())
    if impostors < 1000:
        print(f"note: tar_at_far_1e-3 rests on {impostors} impostor pairs (1000+ are needed to "
              f"resolve a 1e-3 FAR); read it as indicative only", file=sys.stderr)


@dataclass
class Evaluation:
    """The pairs, their aligned crops and the models one run evaluates."""

    pairs: Any
    images: np.ndarray
    idx_a: np.ndarray
    idx_b: np.ndarray
    same: np.ndarray
    aligner: Any
    defense: Any
    recognizer: Any
    defended: Any
    source: Optional[tuple]
    rows: "_Rows"
    device: torch.device
    carry: Any = None  # transfer.GeometryTransfer when the source crops the photos otherwise

    @property
    def attacker_images(self) -> np.ndarray:
        """The crops the attack is crafted on: the source's own when its geometry differs."""
        return self.images if self.carry is None else self.carry.source_images


@dataclass
class Clean:
    """Clean embeddings, scores, threshold and the rows already written."""

    emb: torch.Tensor
    scores: np.ndarray
    thr: float
    rows: List[dict]


@dataclass
class Attacked:
    """Attacked scores of every pair and the perturbation sizes of the attacked probes."""

    scores: np.ndarray
    attacked: np.ndarray
    dodge: np.ndarray
    linf: np.ndarray
    rel: np.ndarray
    l2: np.ndarray


def run(cfg: RunConfig | None = None, **overrides) -> pd.DataFrame:
    """Run one benchmark configuration; append its rows to ``cfg.out`` and return them.

    validate → load data and models → clean scores (rows written at once) → attacker view
    → craft (cached when grey-box) → attacked scores → rows."""
    cfg = with_defaults(RunConfig(**{**(asdict(cfg) if cfg else {}), **overrides}))
    plan = validate(cfg)
    cfg = replace(cfg, protocol=plan.protocol)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if isinstance(plan.attack, ProtocolAttack):
        return run_protocol_attack(cfg, plan)
    ev = load_evaluation(cfg, plan)
    clean = clean_stage(cfg, ev)
    if plan.attack is None:
        return _report(pd.DataFrame(clean.rows), cfg)
    t0 = time.perf_counter()
    attack = plan.attack
    attacked, dodge = attacked_mask(cfg.goal, torch.from_numpy(ev.same))
    attack.bind(defense=ev.defense, data_home=cfg.data_home)
    view = attacker_view(
        attack, adaptive=cfg.adaptive, eot_samples=cfg.eot_samples,
        source_label=transfer.source_label(cfg.source, ev.carry),
        source=ev.source, defense=ev.defense, defense_name=cfg.defense,
        recognizer=ev.recognizer, defended=ev.defended, images=ev.attacker_images, idx_a=ev.idx_a,
        idx_b=ev.idx_b, same=ev.same, clean_emb=clean.emb, clean_thr=clean.thr,
        batch_size=cfg.batch_size, device=plan.device, progress=cfg.progress)
    result = craft_stage(cfg, plan, ev, clean, view, attacked.numpy(), dodge.numpy())
    attack_rows = attacked_rows(cfg, plan, ev, clean, view, result, time.perf_counter() - t0)
    if cfg.out:
        append_rows(cfg.out, attack_rows)
    return _report(pd.DataFrame(clean.rows + attack_rows), cfg)


def run_protocol_attack(cfg: RunConfig, plan: Plan) -> pd.DataFrame:
    """Attacks with their own evaluation protocol (AdvHat: one photo per person vs a
    target) get the run's models and the row and output services."""
    defense = _defense_for(cfg, plan.dataset.held_out_protocol(plan.protocol), plan)
    recognizer = load_recognizer(cfg.recognizer, plan.device)
    defended = defense.wrap(recognizer).to(plan.device).eval()
    emitted: List[dict] = []

    def emit(new_rows: List[dict]) -> None:
        if cfg.out:
            append_rows(cfg.out, new_rows)
        emitted.extend(new_rows)

    plan.attack.run_protocol(
        cfg=cfg, recognizer=recognizer, defense=defense, defended=defended,
        device=plan.device, emit=emit,
        make_rows=lambda n, protocol: _Rows(cfg, n, protocol, getattr(defense, "row_name", None)))
    return _report(pd.DataFrame(emitted), cfg)


def load_evaluation(cfg: RunConfig, plan: Plan, transfer_mode: Optional[str] = None
                    ) -> Evaluation:
    """Pairs (checked against --pairs before any model loads), the defense, recognizer and
    transfer source, and the aligned crops of every distinct image."""

    pairs = plan.dataset.pairs(plan.protocol, data_home=cfg.data_home, pairs_file=cfg.pairs_file,
                               image_root=cfg.image_root, download=cfg.download)
    if cfg.pairs is not None:
        if cfg.pairs > len(pairs):
            raise FacebenchError(f"--pairs {cfg.pairs} but {cfg.dataset}"
                                 f"{'/' + plan.protocol if plan.protocol else ''} has only "
                                 f"{len(pairs)} pairs")
        pairs = pairs.subset(cfg.pairs, cfg.seed)
    _announce_work(cfg, len(pairs), len(pairs.unique_paths()), plan.attack,
                   DEFENSES.get(cfg.defense))
    defense = _defense_for(cfg, plan.dataset.held_out_protocol(plan.protocol), plan)
    recognizer = load_recognizer(cfg.recognizer, plan.device)
    defended = defense.wrap(recognizer).to(plan.device).eval()
    # the transfer source is built before any row is written: its errors lose nothing
    src = (_build_source(plan.source, recognizer, cfg, plan.device, plan)
           if plan.source is not None else None)
    aligner = plan.dataset.aligner(recognizer, cfg.align)
    pairs, images, idx_a, idx_b = aligned_pairs(cfg, pairs, aligner)
    carry = transfer.geometry_transfer(src, aligner, plan.dataset, pairs, images, cfg.progress,
                                       mode=transfer_mode or cfg.transfer_mode, align=cfg.align)
    protocol = plan.dataset.row_protocol(plan.protocol, cfg.pairs_file)
    rows = _Rows(cfg, len(pairs.same), protocol, getattr(defense, "row_name", None),
                 row_recognizer(cfg, plan.dataset, recognizer))
    return Evaluation(pairs, images, idx_a, idx_b, np.asarray(pairs.same, dtype=bool), aligner,
                      defense, recognizer, defended, src, rows, plan.device, carry)


def clean_stage(cfg: RunConfig, ev: Evaluation) -> Clean:
    """Clean metrics through the defended system, appended to the CSV before any attack."""
    from .clean_cache import embed_clean  # embeddings keyed by crops, models and code

    t0 = time.perf_counter()
    emb, _ = embed_clean(ev.defended, ev.images, batch_size=cfg.batch_size, device=ev.device,
                         recognizer_name=cfg.recognizer, defense_name=cfg.defense,
                         defense_params=cfg.defense_params, defense=ev.defense,
                         progress=cfg.progress, desc="clean", embed=embed_images)
    scores = M.cosine_similarity(emb[ev.idx_a], emb[ev.idx_b]).numpy()
    thr = M.best_threshold(scores, ev.same)
    metrics = verification_metrics(scores, ev.same, thr)
    if len(np.unique(ev.pairs.fold)) >= 2:
        metrics["accuracy_10fold"], metrics["accuracy_10fold_std"] = M.lfw_10fold_accuracy(
            scores, ev.same, ev.pairs.fold)
    rows = ev.rows.make(metrics, time.perf_counter() - t0)
    _warn_small_far(ev.same)
    if cfg.out:
        append_rows(cfg.out, rows)
    return Clean(emb, scores, thr, rows)


def _cached_examples(cfg: RunConfig, ev: Evaluation, attack, view: AttackerView, pick):
    """(cache key, cached probes or None) for grey-box examples, which no defense changes,
    and for transfer from a bare source, whose examples are the source's grey-box ones."""
    if not (cfg.adv_cache and attack.cacheable):
        return None, None
    if view.greybox:
        name, module, aligner = cfg.recognizer, ev.recognizer, ev.aligner
    elif view.examples_of is not None:
        name, module = view.examples_of, ev.source[0]
        aligner = ev.aligner if ev.carry is None else ev.carry.source_aligner
    else:
        return None, None
    images = ev.attacker_images
    key = adv_cache.cache_key(
        recognizer=name, pairs_name=ev.pairs.name, paths_a=list(ev.pairs.paths_a),
        paths_b=list(ev.pairs.paths_b), aligner_key=aligner.key, attack=attack,
        goal=cfg.goal, seed=cfg.seed, selected=pick, images_digest=images_digest(images),
        recognizer_module=module)
    cached = adv_cache.load(key, (len(pick), images.shape[3], *images.shape[1:3]))
    if cached is not None and cfg.progress:
        print(f"reusing cached grey-box {cfg.attack} examples of {name} ({len(pick)} probes)")
    return key, cached


def craft_stage(cfg: RunConfig, plan: Plan, ev: Evaluation, clean: Clean, view: AttackerView,
                attacked: np.ndarray, dodge: np.ndarray) -> Attacked:
    """Craft (or load) the attacked probes batch by batch and score them through the
    defended system against the clean gallery."""
    attack, device = plan.attack, plan.device
    pick = np.flatnonzero(attacked)
    scores = clean.scores.copy()
    linf, rel, l2 = [], [], []
    attack.reset_records()
    key, cached = _cached_examples(cfg, ev, attack, view, pick)
    crafted = []
    torch.manual_seed(cfg.seed)  # same random starts whatever the defense drew before
    bar, hook = _attack_progress(cfg, attack, ev.defense, view.target, len(pick),
                                 cached is not None)
    for start in range(0, len(pick), cfg.batch_size):
        sel = pick[start:start + cfg.batch_size]
        probe = to_float(ev.attacker_images[ev.idx_a[sel]], device)
        if cached is not None:
            adv = torch.from_numpy(cached[start:start + len(sel)]).to(device)
        else:
            extra = ({"gallery": to_float(ev.attacker_images[ev.idx_b[sel]], device)}
                     if attack.needs_gallery_image else {})
            with torch.enable_grad():
                adv = attack.perturb(view.target, probe,
                                     view.gallery_emb[ev.idx_b[sel]].to(device),
                                     torch.from_numpy(dodge[sel]).to(device), view.threshold,
                                     **extra)
            if key is not None:
                crafted.append(adv.detach().cpu().numpy())
        seen = adv if ev.carry is None else ev.carry(ev.idx_a[sel], probe, adv)
        with torch.no_grad():
            adv_emb = ev.defended(seen).float()
        if not torch.isfinite(seen).all() or not torch.isfinite(adv_emb).all():
            raise FacebenchError(f"attack {cfg.attack!r} produced NaN/inf images or embeddings")
        scores[sel] = M.cosine_similarity(adv_emb.cpu(), clean.emb[ev.idx_b[sel]]).numpy()
        l_inf, l_rel = M.perturbation_sizes(probe.cpu(), adv.detach().cpu())
        linf.append(np.asarray(l_inf))
        rel.append(np.asarray(l_rel))
        l2.append((adv.detach().cpu().double() - probe.cpu().double()).flatten(1).norm(dim=1)
                  .numpy())
        if hook is None:
            bar.update(len(sel))
    if hook is not None:
        hook.remove()
    bar.close()
    if crafted:
        adv_cache.save(key, np.concatenate(crafted))
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    return Attacked(scores, attacked, dodge, cat(linf), cat(rel), cat(l2))


def attacked_rows(cfg: RunConfig, plan: Plan, ev: Evaluation, clean: Clean, view: AttackerView,
                  res: Attacked, wall_s: float) -> List[dict]:
    """The attacked rows: verification metrics at the clean threshold, ASR, realised
    perturbation sizes and the attack's own metrics."""
    attack, thr = plan.attack, clean.thr
    metrics = verification_metrics(res.scores, ev.same, thr)
    metrics["asr"] = M.attack_success_rate(clean.scores, res.scores, ev.same, thr, res.attacked)
    metrics["mean_linf"] = float(res.linf.mean()) if res.linf.size else math.nan
    metrics["mean_rel_l2"] = float(res.rel.mean()) if res.rel.size else math.nan
    pick = np.flatnonzero(res.attacked)
    flipped = np.where(res.dodge[pick], res.scores[pick] < thr, res.scores[pick] >= thr)
    metrics.update(attack.extra_metrics(success=flipped, l2=res.l2))
    if ev.carry is not None:  # what carrying the source's perturbation did (bench/transfer.py)
        metrics.update(ev.carry.metrics())
    return ev.rows.make(metrics, wall_s, attack=getattr(attack, "row_attack", cfg.attack),
                        threat_model=plan.threat.norm, budget=plan.threat.eps, goal=cfg.goal,
                        adaptive=view.label)


def _attack_progress(cfg: RunConfig, attack, defense, target, n_probes: int, cached: bool):
    """A progress bar that moves with every forward pass of the attacked model (each attack
    step), not once per batch: a PGD batch on CPU takes minutes. Returns (bar, hook)."""
    if cached or not isinstance(target, torch.nn.Module) or not cfg.progress:
        return tqdm(total=n_probes, desc=cfg.attack, unit="pair",
                    disable=not cfg.progress), None
    bar = tqdm(total=n_probes * attack_passes(attack, cfg, defense), desc=cfg.attack,
               unit="img-pass", mininterval=0.5)

    def tick(module, inputs, output):
        n = inputs[0].shape[0] if inputs and hasattr(inputs[0], "shape") else 1
        if bar.total is not None and bar.n + n > bar.total:
            bar.total = bar.n + n  # an estimate, not a promise: never overflow the bar
        bar.update(n)

    return bar, target.register_forward_hook(tick)


def _defense_for(cfg: RunConfig, held_out: Optional[str], plan: Plan, name=None, params=None):
    """The run's defense (or the transfer source's), checked against the evaluated people."""
    defense = build_defense(name or cfg.defense, cfg.defense_params if params is None else params,
                            cfg.data_home, held_out, auto_train=cfg.auto_train,
                            progress=cfg.progress)
    check_training_protocol(defense, plan.dataset, plan.protocol)
    return defense


def _build_source(source, recognizer, cfg: RunConfig, device, plan: Plan):
    """(source recognizer, source defense) for a transfer run, checked against ours."""
    name, defense_name = source
    src = load_recognizer(name, device)
    src_defense = _defense_for(cfg, plan.dataset.held_out_protocol(plan.protocol), plan,
                               defense_name, {})
    # another geometry is carried through the shared photo (transfer.geometry_transfer)
    return src, src_defense


def _report(df: pd.DataFrame, cfg: RunConfig) -> pd.DataFrame:
    df.attrs["config"] = asdict(cfg)
    return df

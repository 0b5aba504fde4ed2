"""One benchmark run: clean and attacked verification metrics on a pair protocol.

The run validates every name and budget before touching data, computes clean metrics on the
defended system (the purifier sees probe and gallery alike), appends those rows at once, then
attacks the probes and appends the attacked rows: an attack that fails never loses the clean
numbers.
"""
from __future__ import annotations

import inspect
import math
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from . import adv_cache
from . import metrics as M
from .attack import GOALS, attacked_mask
from .dataset import Dataset, load_dataset
from .embed import embed_images, to_float
from .errors import FacebenchError
from .fileio import resolve_device
from .fingerprint import images_digest
from .knowledge import AttackerView, attacker_view
from .paths import default_runs_csv
from .protocol_attack import ProtocolAttack
from .registry import ATTACKS, DEFENSES, RECOGNIZERS
from .results import append_rows, check_writable, git_sha
from .threat import DEFAULT_EPS, ThreatModel
from .trainable import NoModelError, is_trainable



@dataclass
class RunConfig:
    recognizer: str = "dlib-resnet"
    dataset: str = "lfw-sample"  # the embedded 100-pair sample: works offline, in minutes
    protocol: Optional[str] = None  # None: a learned defense's own protocol, else the default
    pairs: Optional[int] = None
    defense: str = "none"
    attack: str = "pgd"
    norm: str = "rel-l2"
    eps: Optional[float] = None
    goal: str = "pair"
    adaptive: bool = False
    eot_samples: Optional[int] = None
    source: Optional[str] = None  # transfer: craft on "recognizer[+defense]", evaluate on ours
    minimal_eps: bool = False  # binary-search the smallest successful eps per probe
    minimal_eps_steps: int = 10  # bisection rounds of --minimal-eps
    attack_params: Dict[str, Any] = field(default_factory=dict)
    defense_params: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 32
    device: str = "cpu"
    out: Optional[str] = field(default_factory=lambda: str(default_runs_csv()))
    data_home: Optional[str] = None
    pairs_file: Optional[str] = None
    image_root: Optional[str] = None
    download: bool = True
    progress: bool = True
    adv_cache: bool = True
    auto_train: bool = True


def build_attack(name: str, threat: ThreatModel, params: Dict[str, Any]):
    """Instantiate a registered attack; the attack's spec rejects what it does not take."""
    return ATTACKS.get(name)(threat, **params)


def build_defense(name: str, params: Dict[str, Any], data_home=None, protocol=None,
                  auto_train: bool = False, progress: bool = True):
    """Instantiate a registered defense; data-backed ones (quilting) get the run's data.

    With ``auto_train``, a trainable defense that has no trained model yet and no
    explicit ``checkpoint`` is first trained with the quick preset.
    """
    cls = DEFENSES.get(name)
    accepted = inspect.signature(cls.__init__).parameters
    # a key the defense does not take fails with its spec's line (did you mean ...) before
    # the run's keywords are added; a defense with only ``defaults`` may also take its
    # constructor's other keywords
    spec = cls.param_spec() if hasattr(cls, "param_spec") else None
    if spec is not None:
        declared = getattr(cls, "spec", None) is not None
        known = set(spec.names()) | (set() if declared else set(accepted) - {"self"})
        takes_any = not declared and any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        unknown = [k for k in params if k not in known]
        if unknown and not takes_any:
            raise spec.unknown(unknown[0])
    params = dict(params)
    if "data_home" in accepted:
        params.setdefault("data_home", data_home)
    if "protocol" in accepted and protocol is not None:
        params.setdefault("protocol", protocol)
    if "progress" in accepted:
        params.setdefault("progress", progress)
    try:
        try:
            return cls(**params)
        except NoModelError as exc:
            if not auto_train or params.get("checkpoint") is not None or not is_trainable(cls):
                raise
            # A learned defense with no model yet: train the CPU quick preset once, shown
            # and cached in the user data folder, then use it (a GPU user runs `train --preset
            # full` instead).
            from .training import train

            print(f"{exc}\ntraining the quick preset of {name} first (once; it is cached)",
                  file=sys.stderr)
            train(name, preset="quick", data_home=data_home, protocol=protocol or "dev-test",
                  progress=progress)
            return cls(**params)
    except TypeError as exc:
        raise FacebenchError(f"defense {name!r}: {exc}") from None


def check_training_protocol(defense, dataset, protocol: str,
                            trained: Optional[str] = None) -> None:
    """Refuse to evaluate a learned defense on people it may have been trained on.

    A model trained for ``dev-test`` holds out only dev-test's people; the other protocols'
    pairs include people of its training split, so their numbers would be optimistic.
    ``dataset`` is a :class:`Dataset` (or its name); ``trained`` defaults to the loaded
    defense's recorded protocol.
    """
    if trained is None:
        trained = (getattr(defense, "meta", None) or {}).get("protocol")
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    held_out = dataset.held_out_protocol(protocol)
    if held_out is None or trained is None or trained == held_out:
        return
    name = getattr(defense, "registry_name", getattr(defense, "__name__", str(defense)))
    raise FacebenchError(
        f"the {name} model was trained on people held out of LFW {trained!r}, but this run "
        f"evaluates {held_out!r}, whose pairs include some of its training people; train one "
        f"for it (`facebench train {name} --protocol {held_out} --out-dir DIR`) and pass "
        f"--defense-param checkpoint=DIR")


def resolve_protocol(dataset: Dataset, cfg: "RunConfig") -> Optional[str]:
    """The protocol to run: the user's, else the one a learned defense's model was trained
    for (said in one line), else the dataset's default. Checked against the model's training
    split here, before any heavy work, from its manifest alone."""
    cls = DEFENSES.get(cfg.defense)
    trained = cls.trained_protocol(cfg.defense_params)
    protocol = dataset.check_protocol(cfg.protocol)
    if cfg.protocol is None and trained is not None and trained in dataset.protocols \
            and trained != protocol:
        protocol = trained  # said even with --quiet: it changes what the run measures
        print(f"protocol {trained}: the {cfg.defense} model was trained without its "
              f"people (--protocol to choose another)", file=sys.stderr)
    check_training_protocol(cls, dataset, protocol, trained)
    return protocol


def load_recognizer(name: str = "dlib-resnet", device: str = "cpu") -> torch.nn.Module:
    """A registered recognizer in eval mode: images in [0,1] NCHW RGB -> embeddings.

    Its weights are frozen: attacks need gradients w.r.t. the input only, and skipping the
    weight gradients makes each step about 1.5x faster. Call ``requires_grad_(True)`` to tune.
    """
    model = RECOGNIZERS.get(name)()
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
                 defense_name: Optional[str] = None):
        self.base = dict(
            run_id=uuid.uuid4().hex[:12],
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            facebench_version=__version__, git_sha=git_sha(), dataset=cfg.dataset,
            protocol=protocol, n_pairs=n_pairs, recognizer=cfg.recognizer,
            defense=defense_name or cfg.defense, seed=cfg.seed)

    def make(self, metrics: Dict[str, float], wall_s: float, attack="none", threat_model="none",
             budget=0.0, goal="none", adaptive="none") -> List[dict]:
        return [dict(self.base, attack=attack, threat_model=threat_model, budget=budget,
                     goal=goal, adaptive=adaptive, metric=k, value=float(v),
                     wall_s=round(wall_s, 3)) for k, v in metrics.items()]


@dataclass
class Plan:
    """What :func:`validate` checked and resolved, before any data or model is loaded."""

    dataset: Dataset
    protocol: Optional[str]
    device: torch.device
    attack: Any = None
    threat: Optional[ThreatModel] = None
    source: Optional[tuple] = None


def validate(cfg: RunConfig) -> Plan:
    """Every name, budget, size and path of ``cfg`` checked cheaply: a typo or an impossible
    request fails in one line before any image is decoded or model loaded."""
    if cfg.goal not in GOALS:
        raise FacebenchError(f"unknown goal {cfg.goal!r}; choose from: {', '.join(GOALS)}")
    if cfg.batch_size < 1:
        raise FacebenchError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.pairs is not None and (isinstance(cfg.pairs, bool) or cfg.pairs < 2):
        raise FacebenchError(f"--pairs must be at least 2 (one same and one different pair), "
                             f"got {cfg.pairs}")
    device = resolve_device(cfg.device)
    rec_cls = RECOGNIZERS.get(cfg.recognizer)
    dataset = load_dataset(cfg.dataset)
    protocol = resolve_protocol(dataset, cfg)
    attack = threat = None
    if cfg.attack != "none":
        eps = DEFAULT_EPS.get(cfg.norm) if cfg.eps is None else cfg.eps
        threat = ThreatModel(cfg.norm, eps)
        _check_reachable(threat, getattr(rec_cls, "input_size", None))
        params = dict(cfg.attack_params)
        if "seed" in (getattr(ATTACKS.get(cfg.attack), "defaults", None) or {}):
            params.setdefault("seed", cfg.seed)  # attacks with their own RNG follow --seed
        attack = build_attack(cfg.attack, threat, params)
        if isinstance(attack, ProtocolAttack):
            attack.check_config(cfg)  # its datasets, goals and knowledge, before any data
        if cfg.minimal_eps:
            from .minimal_eps import wrap_minimal

            attack = wrap_minimal(attack, search_steps=cfg.minimal_eps_steps)
    source = parse_source(cfg.source) if cfg.source else None
    if attack is not None and getattr(attack, "knowledge", None) and (cfg.adaptive or source):
        raise FacebenchError(f"attack {cfg.attack!r} is already adaptive "
                             f"({attack.knowledge}); drop --adaptive / --source")
    if source is not None and (attack is None or not attack.gradient_based):
        raise FacebenchError("--source (transfer) needs a gradient attack to craft on the source")
    if source is not None and cfg.adaptive:
        raise FacebenchError("--source crafts on another model; it cannot be --adaptive too")
    if cfg.out:
        check_writable(cfg.out)
    return Plan(dataset, protocol, device, attack, threat, source)


def _check_reachable(threat: ThreatModel, input_size) -> None:
    """An l2 budget beyond the largest distance two images can have is no threat model."""
    if threat.norm != "l2" or not input_size:
        return
    h, w = input_size
    largest = math.sqrt(3 * h * w)
    if threat.eps > largest:
        raise FacebenchError(
            f"l2 eps {threat.eps:g} exceeds the largest possible L2 distance between two "
            f"{h}x{w} RGB images in [0, 1] ({largest:.1f}); the attack would be unbounded")


def attack_passes(attack, cfg: RunConfig, defense) -> int:
    """Rough forward passes per probe an attack costs, for the up-front work estimate."""
    params = getattr(attack, "params", {}) or {}
    passes = 1
    for key in ("steps", "restarts", "search_steps"):
        value = params.get(key)
        if isinstance(value, int) and value > 0:
            passes *= value
    if cfg.adaptive and getattr(defense, "randomized", False):
        passes *= cfg.eot_samples or 8
    return passes + 1


def _announce_work(cfg: RunConfig, n_pairs: int, n_images: int, attack, defense) -> None:
    """One line up front: how much work this run is, so nobody waits blind."""
    if not cfg.progress:
        return
    what = f"{n_pairs} pairs ({n_images} images) clean through {cfg.recognizer}+{cfg.defense}"
    if attack is not None:
        probes = n_pairs if cfg.goal == "pair" else None
        per = attack_passes(attack, cfg, defense)
        what += (f", then {cfg.attack} on {probes or 'the ' + cfg.goal} probes × ~{per} "
                 f"forward+backward passes each")
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
    cfg = RunConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
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
    if hasattr(attack, "data_home"):  # an attack that reads data itself gets the run's
        attack.data_home = cfg.data_home
    if hasattr(attack, "bind_defense"):  # an attack built on the evaluated defense (a*)
        attack.bind_defense(ev.defense)
    view = attacker_view(
        attack, adaptive=cfg.adaptive, eot_samples=cfg.eot_samples, source_label=cfg.source,
        source=ev.source, defense=ev.defense, defense_name=cfg.defense,
        recognizer=ev.recognizer, defended=ev.defended, images=ev.images, idx_a=ev.idx_a,
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


def load_evaluation(cfg: RunConfig, plan: Plan) -> Evaluation:
    """Pairs (checked against --pairs before any model loads), the defense, recognizer and
    transfer source, and the aligned crops of every distinct image."""
    from .data import pair_images
    from .data.align import ResizeOnly, get_aligner

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
    size = getattr(recognizer, "input_size", (150, 150))
    aligner = (get_aligner(getattr(recognizer, "alignment", "dlib-chip"), size)
               if plan.dataset.raw_frames else ResizeOnly(size))
    images, idx_a, idx_b = pair_images(pairs, aligner, progress=cfg.progress)
    protocol = plan.dataset.row_protocol(plan.protocol, cfg.pairs_file)
    rows = _Rows(cfg, len(pairs.same), protocol, getattr(defense, "row_name", None))
    return Evaluation(pairs, images, idx_a, idx_b, np.asarray(pairs.same, dtype=bool), aligner,
                      defense, recognizer, defended, src, rows, plan.device)


def clean_stage(cfg: RunConfig, ev: Evaluation) -> Clean:
    """Clean metrics through the defended system, appended to the CSV before any attack."""
    t0 = time.perf_counter()
    emb = embed_images(ev.defended, ev.images, cfg.batch_size, ev.device, "clean",
                       cfg.progress)
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
    """(cache key, cached probes or None) for grey-box examples, which no defense changes."""
    if not (view.greybox and cfg.adv_cache and attack.cacheable):
        return None, None
    key = adv_cache.cache_key(
        recognizer=cfg.recognizer, pairs_name=ev.pairs.name, paths_a=list(ev.pairs.paths_a),
        paths_b=list(ev.pairs.paths_b), aligner_key=ev.aligner.key, attack=attack,
        goal=cfg.goal, seed=cfg.seed, selected=pick, images_digest=images_digest(ev.images),
        recognizer_module=ev.recognizer)
    images = ev.images
    cached = adv_cache.load(key, (len(pick), images.shape[3], *images.shape[1:3]))
    if cached is not None and cfg.progress:
        print(f"reusing cached grey-box {cfg.attack} examples ({len(pick)} probes)")
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
        probe = to_float(ev.images[ev.idx_a[sel]], device)
        if cached is not None:
            adv = torch.from_numpy(cached[start:start + len(sel)]).to(device)
        else:
            extra = ({"gallery": to_float(ev.images[ev.idx_b[sel]], device)}
                     if attack.needs_gallery_image else {})
            with torch.enable_grad():
                adv = attack.perturb(view.target, probe,
                                     view.gallery_emb[ev.idx_b[sel]].to(device),
                                     torch.from_numpy(dodge[sel]).to(device), view.threshold,
                                     **extra)
            if key is not None:
                crafted.append(adv.detach().cpu().numpy())
        with torch.no_grad():
            adv_emb = ev.defended(adv).float()
        if not torch.isfinite(adv).all() or not torch.isfinite(adv_emb).all():
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


def parse_source(spec: str):
    """``recognizer[+defense]`` -> (recognizer name, defense name), both validated."""
    name, _, defense_name = spec.partition("+")
    RECOGNIZERS.get(name)
    if defense_name:
        DEFENSES.get(defense_name)
    return name, defense_name or "none"


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
    if getattr(src, "input_size", None) != getattr(recognizer, "input_size", None):
        # the probes are the target's aligned crops; another geometry would need re-alignment
        raise FacebenchError(f"source {name!r} takes another input size than {cfg.recognizer!r}; "
                             "transfer between geometries is not supported yet")
    return src, src_defense


def _report(df: pd.DataFrame, cfg: RunConfig) -> pd.DataFrame:
    df.attrs["config"] = asdict(cfg)
    return df

"""The first stage of a run: its configuration, checked cheaply into a :class:`Plan`.

Every name, budget, size and path is validated here, before any image is decoded or model
loaded, so a typo or an impossible request costs one line and no work. Defaults the user
left open come from the registries (the plugin registered as the default).
"""
from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Optional

import torch

from .attack import GOALS
from .dataset import Dataset, load_dataset
from .errors import FacebenchError
from .fileio import resolve_device
from .paths import default_runs_csv
from .protocol_attack import ProtocolAttack
from .registry import ATTACKS, DATASETS, DEFENSES, RECOGNIZERS
from .results import check_writable
from .threat import DEFAULT_EPS, ThreatModel
from .trainable import NoModelError, is_trainable


@dataclass
class RunConfig:
    recognizer: Optional[str] = None  # None: the recognizer registered as the default
    dataset: Optional[str] = None  # None: the default dataset (an offline sample, minutes)
    protocol: Optional[str] = None  # None: a learned defense's own protocol, else the default
    pairs: Optional[int] = None
    defense: str = "none"
    attack: Optional[str] = None  # None: the attack registered as the default
    norm: str = "rel-l2"
    eps: Optional[float] = None
    goal: str = "pair"
    adaptive: bool = False
    eot_samples: Optional[int] = None
    source: Optional[str] = None  # transfer: craft on "recognizer[+defense]", evaluate on ours
    transfer_mode: str = "linear"  # another geometry: carry the crop's delta, or re-align
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
    align: Optional[str] = None  # None/"auto": the dataset's own; "detect", "fixed" or a name
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



def with_defaults(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the registered defaults filled in for what the user left unnamed."""
    return replace(cfg, recognizer=cfg.recognizer or RECOGNIZERS.default(),
                   dataset=cfg.dataset or DATASETS.default(),
                   attack=cfg.attack or ATTACKS.default())



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
    cfg = with_defaults(cfg)
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
    if cfg.align not in (None, "auto"):
        from .data.align import aligner_name

        aligner_name(rec_cls, cfg.align)  # declared by the recognizer, or registered
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
    if cfg.transfer_mode not in ("linear", "photo"):
        raise FacebenchError(f"--transfer-mode must be linear or photo, got {cfg.transfer_mode!r}")
    if cfg.transfer_mode != "linear" and source is None:
        raise FacebenchError("--transfer-mode photo needs --source (it says how a transfer "
                             "reaches the target's crop)")
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
    """Rough forward passes per probe an attack costs, for the up-front work estimate (a
    query attack says its own: ``queries_per_probe``)."""
    queries = getattr(attack, "queries_per_probe", None)
    if isinstance(queries, int) and not isinstance(queries, bool) and queries > 0:
        return queries + 1
    params = getattr(attack, "params", {}) or {}
    passes = 1
    for key in ("steps", "restarts", "search_steps"):
        value = params.get(key)
        if isinstance(value, int) and value > 0:
            passes *= value
    if cfg.adaptive and getattr(defense, "randomized", False):
        passes *= cfg.eot_samples or 8
    return passes + 1



def parse_source(spec: str):
    """``recognizer[+defense]`` -> (recognizer name, defense name), both validated."""
    name, _, defense_name = spec.partition("+")
    RECOGNIZERS.get(name)
    if defense_name:
        DEFENSES.get(defense_name)
    return name, defense_name or "none"

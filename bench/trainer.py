"""The training loop shared by the learned defenses: data, phases, checkpoints, manifest.

A defense supplies a :class:`Trainer` (its phases, one optimisation step, its state, and
optionally a ``prepare`` hook for artefacts it needs before the first step); this module
runs it reproducibly and resumably, and knows nothing of what the defense learns:

* Data: the training split of a dataset (the images of people in no pair of the
  evaluation protocol; the registered default for training unless named), cropped with the
  recognizer's own aligner (the defense sees those crops at test time). A ``max_images``
  cap takes an evenly spaced, seed-free subset of the sorted list, so caches keyed by the
  image list are shared across seeds.
* Order: batch ``s`` comes from the permutation of epoch ``s // (N // B)`` drawn from a
  generator seeded with (seed, epoch); the last incomplete batch is dropped (as in the
  code). Sampling noise (clones, Gaussian noise, masks) comes from one CPU generator whose
  state is checkpointed, so an interrupted run resumes to the same weights.
* Files in ``out_dir``: ``checkpoint.pt`` (resume state; written atomically every
  ``checkpoint_every`` steps, at phase ends, at the end and on Ctrl-C), ``model.pt`` (the
  inference weights, written whenever training stops; ``meta.complete`` says whether the
  schedule finished), ``manifest.json``, ``log.jsonl``, and what ``prepare`` adds (it
  names its files and manifest sections in ``ctx.files`` and ``ctx.sections``).
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .embed import to_float
from .errors import FacebenchError
from .fileio import resolve_device, save_torch_atomic as save_atomic
from .results import git_sha
from .trainable import MODEL_FILE, MODEL_FORMAT, default_out_dir
from .training_data import batch_indices, evenly_spaced, load_training_images

__all__ = ["TrainContext", "Trainer", "batch_indices", "evenly_spaced", "fit",
           "frozen_recognizer", "load_training_images", "run_training"]

CHECKPOINT_FILE = "checkpoint.pt"
STATE_FORMAT = "facebench-train-state/1"
RECENT = 100  # final metrics = mean over the last RECENT steps


@dataclass
class TrainContext:
    defense: str
    preset: str
    cfg: Dict[str, Any]
    out_dir: Path
    seed: int
    device: torch.device
    recognizer: nn.Module
    recognizer_name: str
    images: np.ndarray
    key_lines: List[str]  # what identifies the images (cache keys of derived artefacts)
    data_info: Dict[str, Any]
    progress: bool = True
    generator: torch.Generator = field(default_factory=torch.Generator)
    extras: Dict[str, Any] = field(default_factory=dict)  # what ``prepare`` built
    sections: Dict[str, Any] = field(default_factory=dict)  # extra manifest sections
    files: Dict[str, str] = field(default_factory=dict)  # extra output files, by role

    def batch(self, step: int) -> torch.Tensor:
        """Clean RGB [0,1] images of step ``step``: B x 3 x H x W on the device."""
        idx = batch_indices(step, len(self.images), self.cfg["batch_size"], self.seed)
        return to_float(self.images[idx.numpy()], self.device)

    def identity(self) -> Dict[str, Any]:
        """What must match for a checkpoint to be resumed."""
        return json.loads(json.dumps({
            "defense": self.defense, "preset": self.preset, "cfg": self.cfg,
            "seed": self.seed, "recognizer": self.recognizer_name,
            "image_list_sha256": self.data_info["image_list_sha256"]}))


class Trainer:
    """One defense's training: phases, a step, and the state to checkpoint."""

    #: keyword arguments of ``fit`` that go to :meth:`prepare`, not into the settings
    fit_options: Dict[str, Any] = {}
    #: metrics shown beside the progress bar
    progress_keys: Tuple[str, ...] = ("loss",)
    #: settings that only set phase lengths: a checkpoint may be resumed under other values
    #: of these as long as the steps it already ran are the same (see ``_Run.resume``)
    schedule_keys: Tuple[str, ...] = ()

    @staticmethod
    def check_config(cfg: Dict[str, Any]) -> None:
        """Reject settings the recipe would misuse (a FacebenchError naming the key)."""

    @staticmethod
    def resolve_steps(cfg: Dict[str, Any], n_images: int) -> Dict[str, Any]:
        """Settings with counts that depend on the data size (epochs -> steps) filled in."""
        return cfg

    @classmethod
    def prepare(cls, ctx: TrainContext, resume: bool = True, **fit_options) -> None:
        """Build what the model needs before its first step (in ``ctx.extras``) and record
        it (``ctx.sections``, ``ctx.files``); runs before the model is initialised."""

    def __init__(self, ctx: TrainContext):
        self.ctx = ctx
        self.phase: str | None = None

    def phases(self) -> List[Tuple[str, int]]:
        return self.phases_for(self.ctx.cfg)

    def phases_for(self, cfg: Dict[str, Any]) -> List[Tuple[str, int]]:
        """(name, steps) of each phase under settings ``cfg``."""
        raise NotImplementedError

    def begin_phase(self, name: str) -> None:
        self.phase = name

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The batch in the recipe's input space (from RGB [0,1] images)."""
        return images

    def step(self, phase: str, x: torch.Tensor, phase_step: int) -> Dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        raise NotImplementedError

    def export(self) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
        """(model config, state dict) of the inference model."""
        raise NotImplementedError


def _locate(phases, step):
    start = 0
    for name, n in phases:
        if step < start + n:
            return name, step - start, start + n
        start += n
    raise IndexError(step)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _means(rows) -> Dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


class _Run:
    """Bookkeeping of one training call: resume, checkpoint, manifest, log."""

    def __init__(self, trainer: Trainer, ctx: TrainContext):
        self.trainer, self.ctx = trainer, ctx
        self.out = ctx.out_dir
        self.step, self.wall, self.recent = 0, 0.0, deque(maxlen=RECENT)
        self.started = _now()

    def resume(self) -> bool:
        path = self.out / CHECKPOINT_FILE
        if not path.is_file():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling errors come in many types
            raise FacebenchError(f"cannot resume from {path}: {err}; delete it or pass "
                                 f"resume=False") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise FacebenchError(f"{path} is not a facebench training checkpoint")
        mine, theirs = self.ctx.identity(), state["identity"]
        if mine != theirs and not self._same_run_rescheduled(mine, theirs, int(state["step"])):
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            diff += sorted(f"cfg.{k}" for k in set(mine["cfg"]) | set(theirs["cfg"])
                           if "cfg" in diff and mine["cfg"].get(k) != theirs["cfg"].get(k))
            raise FacebenchError(
                f"{self.out} holds a training run with other settings ({', '.join(diff)} "
                f"differ); use another output folder or resume=False to start over")
        self.trainer.load_state_dict(state["trainer"])
        self.ctx.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.wall = int(state["step"]), float(state["wall_s"])
        self.recent.extend(state["recent"])
        self.started = state.get("started_at", self.started)
        return True

    def _same_run_rescheduled(self, mine: dict, theirs: dict, step: int) -> bool:
        """True when only the phase lengths (the recipe's ``schedule_keys``) differ and the
        ``step`` steps already run are the same under both schedules: every phase before the
        one ``step`` falls in keeps its length and that one is not cut below what it ran. The
        weights are then those the new schedule would have reached, so the run continues (or
        ends) under it, and the manifest records the change."""
        keys = set(getattr(self.trainer, "schedule_keys", ()))
        a, b = dict(mine), dict(theirs)
        ca, cb = a.pop("cfg"), b.pop("cfg")
        if a != b or not keys or {k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k)} - keys:
            return False
        old = self.trainer.phases_for(cb)
        new = self.trainer.phases_for(ca)
        if [n for n, _ in old] != [n for n, _ in new]:
            return False
        done = 0
        for (name, n_old), (_, n_new) in zip(old, new):
            if step <= done + min(n_old, n_new):
                break  # the phase the run is in: the new one must cover what it ran
            if n_old != n_new:
                return False
            done += n_old
        self.rescheduled = {"at_step": step, "from": [{"name": n, "steps": k} for n, k in old]}
        return True

    def save_checkpoint(self) -> None:
        save_atomic({"format": STATE_FORMAT, "identity": self.ctx.identity(),
                     "step": self.step, "wall_s": self.wall, "started_at": self.started,
                     "trainer": self.trainer.state_dict(),
                     "generator": self.ctx.generator.get_state(),
                     "torch_rng": torch.get_rng_state(), "recent": list(self.recent)},
                    self.out / CHECKPOINT_FILE)

    def export(self, total: int) -> None:
        config, state = self.trainer.export()
        meta = {"preset": self.ctx.preset, "steps": self.step, "total_steps": total,
                "complete": self.step >= total, "seed": self.ctx.seed,
                "trained_with": self.ctx.recognizer_name, "protocol":
                self.ctx.data_info["protocol"], "git_sha": git_sha()}
        save_atomic({"format": MODEL_FORMAT, "defense": self.ctx.defense, "config": config,
                     "state_dict": {k: v.detach().cpu() for k, v in state.items()},
                     "meta": meta}, self.out / MODEL_FILE)

    def manifest(self, status: str, total: int) -> None:
        ctx = self.ctx
        data = {
            "defense": ctx.defense, "preset": ctx.preset, "status": status,
            "steps_done": self.step, "total_steps": total,
            "phases": [{"name": n, "steps": s} for n, s in self.trainer.phases()],
            "seed": ctx.seed, "git_sha": git_sha(), "facebench_version": __version__,
            "recognizer": ctx.recognizer_name, "device": str(ctx.device),
            "config": ctx.cfg, "data": ctx.data_info, **ctx.sections,
            "files": {"model": MODEL_FILE, "checkpoint": CHECKPOINT_FILE, "log": "log.jsonl",
                      **ctx.files},
            "started_at": self.started, "updated_at": _now(), "wall_s": round(self.wall, 1),
            "final_metrics": _means(self.recent) if self.recent else {},
            "final_metrics_window": len(self.recent),
        }
        if getattr(self, "rescheduled", None):
            data["rescheduled"] = self.rescheduled
        tmp = self.out / "manifest.json.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.out / "manifest.json")


def _trim_log(path: Path, step: int) -> None:
    """Drop log rows past the checkpoint being resumed (they will be logged again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except (ValueError, AttributeError):
            pass  # a row cut short by the interruption
    path.write_text("".join(line + "\n" for line in keep))


def run_training(trainer: Trainer, ctx: TrainContext, max_steps: int | None = None,
                 resume: bool = True) -> Path:
    """Run (or resume) ``trainer`` until its schedule or ``max_steps`` total steps."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(trainer, ctx)
    resumed = run.resume() if resume else False
    if resumed:
        _trim_log(ctx.out_dir / "log.jsonl", run.step)
    phases = trainer.phases()
    total = sum(n for _, n in phases)
    stop = total if max_steps is None else min(total, int(max_steps))
    every, log_every = ctx.cfg["checkpoint_every"], ctx.cfg["log_every"]
    run.manifest("running", total)
    window: List[Dict[str, float]] = []
    in_step = False  # a Ctrl-C inside a step leaves weights and counters out of step
    bar = tqdm(total=stop, initial=min(run.step, stop), desc=f"train {ctx.defense}",
               unit="step", disable=not ctx.progress)
    try:
        with open(ctx.out_dir / "log.jsonl", "a" if resumed else "w") as log:
            while run.step < stop:
                phase, phase_step, phase_end = _locate(phases, run.step)
                if trainer.phase != phase:
                    trainer.begin_phase(phase)
                t0 = time.perf_counter()
                in_step = True
                metrics = trainer.step(phase, trainer.inputs(ctx.batch(run.step)), phase_step)
                run.step += 1
                in_step = False
                run.wall += time.perf_counter() - t0
                run.recent.append(metrics)
                window.append(metrics)
                bar.update(1)
                if run.step % log_every == 0 or run.step in (stop, phase_end):
                    row = {"step": run.step, "phase": phase, **_means(window)}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix({k: f"{v:.3g}" for k, v in row.items()
                                     if k in trainer.progress_keys})
                    window = []
                if run.step % every == 0 or run.step in (stop, phase_end):
                    run.save_checkpoint()
                    run.manifest("running", total)
    except KeyboardInterrupt:
        if not in_step:  # else the last periodic checkpoint is the consistent one
            run.save_checkpoint()
        run.manifest("interrupted", total)
        raise
    finally:
        bar.close()
    if run.step >= stop:
        run.save_checkpoint()
    run.export(total)
    run.manifest("complete" if run.step >= total else "partial", total)
    return ctx.out_dir


def frozen_recognizer(recognizer, device) -> tuple[nn.Module, str]:
    """(module, name) of ``recognizer`` (a registered name or a module), frozen on device."""
    if isinstance(recognizer, nn.Module):
        name = getattr(recognizer, "registry_name", type(recognizer).__name__)
        model = recognizer
    else:
        from .registry import RECOGNIZERS

        name = str(recognizer or RECOGNIZERS.default())
        model = RECOGNIZERS.get(name)()
    return model.to(device).eval().requires_grad_(False), name


def fit(defense: type, preset: str, data_home, protocol: str, out_dir, seed: int,
        progress: bool, max_steps: int | None, recognizer, device: str, resume: bool,
        download: bool, image_cache_dir=None, dataset: str | None = None,
        **options) -> Path:
    """:meth:`facebench.trainable.Trainable.fit` of ``defense`` (see there)."""
    name, recipe, table = defense.registry_name, defense.trainer_class, defense.presets
    if preset not in table:
        raise FacebenchError(f"unknown preset {preset!r} for {name}; choose from: "
                             f"{', '.join(table)}")
    extra = {k: options.pop(k) for k in list(options) if k in recipe.fit_options}
    cfg = dict(table[preset])
    unknown = sorted(set(options) - set(cfg))
    if unknown:
        raise FacebenchError(f"{name} has no training option {unknown[0]!r}; it "
                             f"takes: {', '.join(sorted(cfg))}")
    cfg.update(options)
    recipe.check_config(cfg)
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 0):
        raise FacebenchError(f"max_steps must be an integer >= 0, got {max_steps!r}")
    dev = resolve_device(device)
    rec_net, rec_name = frozen_recognizer(recognizer, dev)

    images, key_lines, data_info = load_training_images(
        data_home, protocol, rec_net, cfg.get("max_images"), progress, download,
        image_cache_dir, dataset)
    cfg = recipe.resolve_steps(cfg, len(images))
    out = Path(out_dir).expanduser() if out_dir else default_out_dir(name, preset)
    out.mkdir(parents=True, exist_ok=True)
    ctx = TrainContext(defense=name, preset=preset, cfg=cfg, out_dir=out, seed=int(seed),
                       device=dev, recognizer=rec_net, recognizer_name=rec_name,
                       images=images, key_lines=key_lines, data_info=data_info,
                       progress=progress)
    recipe.prepare(ctx, resume, **extra)
    torch.manual_seed(seed)  # model initialisation
    ctx.generator.manual_seed(int(seed))
    return run_training(recipe(ctx), ctx, max_steps, resume)

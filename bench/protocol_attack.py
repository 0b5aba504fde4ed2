"""Attacks that bring their own evaluation protocol instead of the runner's pair loop.

Most attacks perturb each probe of a pair; a few (one universal sticker against a target, say)
pick their own faces and score them their own way. They subclass :class:`ProtocolAttack`,
declare what they run on, and implement :meth:`ProtocolAttack.evaluate`. The core hands them
a :class:`ProtocolContext` with the pieces every protocol needs — the clean threshold through
the defended system, the attacker's model, the grey-box cache, row emission — so none of them
re-implements those, and the core never names one of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import adv_cache
from . import metrics as M
from .attack import Attack
from .errors import FacebenchError


@dataclass(frozen=True)
class CleanThreshold:
    """The protocol's clean operating point: threshold and the rates it gives."""

    thr: float
    tar: float  # share of genuine pairs accepted
    far: float  # share of impostor pairs accepted
    n_pairs: int


def clean_threshold(pairs, aligner, defended, *, batch_size: int = 32, device="cpu",
                    progress: bool = False, desc: str = "clean pairs") -> CleanThreshold:
    """Best-accuracy threshold of ``pairs`` scored through ``defended``: what the deployed
    system would use, so an attack is judged at the operating point the defender chose."""
    from .data import pair_images
    from .embed import embed_images

    images, idx_a, idx_b = pair_images(pairs, aligner, progress=progress)
    emb = embed_images(defended, images, batch_size, device, desc, progress)
    scores = M.cosine_similarity(emb[idx_a], emb[idx_b]).numpy()
    same = np.asarray(pairs.same, dtype=bool)
    thr = M.best_threshold(scores, same)
    tar = float(np.mean(scores[same] >= thr)) if same.any() else float("nan")
    far = float(np.mean(scores[~same] >= thr)) if (~same).any() else float("nan")
    return CleanThreshold(float(thr), tar, far, len(same))


class ProtocolContext:
    """What the runner lends a protocol attack for one run; built by ``run_protocol``."""

    def __init__(self, *, cfg, recognizer, defense, defended, device,
                 make_rows: Callable[[int, str], Any], emit: Callable[[List[dict]], None]):
        self.cfg, self.recognizer, self.defense = cfg, recognizer, defense
        self.defended, self.device = defended, device
        self._make_rows, self._emit, self._rows = make_rows, emit, None

    # -- the defended system ----------------------------------------------------------
    def clean_threshold(self, pairs, aligner, desc: str = "clean pairs") -> CleanThreshold:
        """:func:`clean_threshold` with this run's defended system, batch and device."""
        return clean_threshold(pairs, aligner, self.defended, batch_size=self.cfg.batch_size,
                               device=self.device, progress=self.cfg.progress, desc=desc)

    def embed(self, images_u8: np.ndarray, desc: str) -> torch.Tensor:
        """Embeddings of aligned uint8 crops through the defended system."""
        from .embed import embed_images

        return embed_images(self.defended, images_u8, self.cfg.batch_size, self.device, desc,
                            self.cfg.progress)

    def attacker_model(self) -> Tuple[torch.nn.Module, str]:
        """(model the attacker differentiates, its ``adaptive`` column): the bare recognizer
        (grey-box), or with ``--adaptive`` the defense with BPDA/EOT as it needs."""
        if not self.cfg.adaptive:
            return self.recognizer, "none"
        from .adaptive import adaptive_target

        model, adaptive = adaptive_target(self.defense, self.recognizer, self.cfg.eot_samples)
        return model.to(self.device).eval(), adaptive

    # -- the grey-box cache -------------------------------------------------------------
    @property
    def cache_enabled(self) -> bool:
        """Grey-box results do not depend on the defense; adaptive ones do (never cached)."""
        return bool(self.cfg.adv_cache) and not self.cfg.adaptive and not self.cfg.source

    def cache_get(self, key: str, shape) -> Optional[np.ndarray]:
        """The float32 array cached under ``key`` (None when absent, disabled or misshapen)."""
        return adv_cache.load(key, shape) if self.cache_enabled else None

    def cache_put(self, key: str, array: np.ndarray) -> None:
        if self.cache_enabled:
            adv_cache.save(key, array)

    # -- output -------------------------------------------------------------------------
    def start_rows(self, n: int, protocol: str) -> None:
        """Open the run's rows (one run id) for ``n`` evaluated items on ``protocol``."""
        self._rows = self._make_rows(n, protocol)

    def emit(self, metrics: Dict[str, float], wall_s: float, **columns) -> List[dict]:
        """Append one row per metric (to the runs CSV at once); ``columns`` as ``_Rows.make``."""
        if self._rows is None:
            raise FacebenchError("protocol attack emitted rows before start_rows")
        rows = self._rows.make(metrics, wall_s, **columns)
        self._emit(rows)
        return rows

    def artifacts_dir(self, name: str) -> Optional[Path]:
        """``<folder of --out>/<name>`` for images a run leaves behind; None without --out."""
        return Path(self.cfg.out).parent / name if self.cfg.out else None


class ProtocolAttack(Attack):
    """An attack with its own evaluation protocol; subclasses implement :meth:`evaluate`.

    Declarations, checked before any data is read: ``datasets`` it runs on (empty: any),
    ``goals`` it accepts, ``transfer`` whether ``--source`` makes sense for it.
    """

    kind = "protocol"
    cacheable = False  # the pair loop's probe cache does not apply; see ProtocolContext
    datasets: Tuple[str, ...] = ()
    goals: Tuple[str, ...] = ("dodging", "impersonation", "pair")
    transfer: bool = False

    def check_config(self, cfg) -> None:
        """Refuse a run configuration this protocol cannot honour, in one line."""
        if self.datasets and cfg.dataset not in self.datasets:
            raise FacebenchError(f"{self.name} runs its own protocol on --dataset "
                                 f"{' or '.join(self.datasets)} only, not {cfg.dataset!r}")
        if cfg.source and not self.transfer:
            raise FacebenchError(f"{self.name} does not support --source (transfer)")
        if cfg.goal not in self.goals:
            raise FacebenchError(f"{self.name} takes --goal {' or '.join(self.goals)}, "
                                 f"not {cfg.goal!r}")

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        raise FacebenchError(f"{self.name} has its own protocol, not the pair loop; run it "
                             f"with `facebench run --attack {self.name}`")

    def run_protocol(self, *, cfg, recognizer, defense, defended, device, make_rows, emit):
        """The runner's entry point: check, then :meth:`evaluate` with a context."""
        self.check_config(cfg)
        self.evaluate(ProtocolContext(cfg=cfg, recognizer=recognizer, defense=defense,
                                      defended=defended, device=device, make_rows=make_rows,
                                      emit=emit))

    def evaluate(self, ctx: ProtocolContext) -> None:  # pragma: no cover
        """Run the protocol, emitting its rows through ``ctx.emit``."""
        raise NotImplementedError


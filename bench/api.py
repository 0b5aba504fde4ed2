"""Python API mirroring the CLI, for notebooks and other tools."""
from __future__ import annotations

from typing import Optional

import pandas as pd
import torch

from . import runner as _runner  # looked up per call: whoever patches the runner patches us
from .runner import RunConfig, load_recognizer
from .threat import DEFAULT_EPS, ThreatModel


def load_defense(name: str = "none", **params) -> torch.nn.Module:
    """A registered defense; ``defense.wrap(recognizer)`` gives the defended system."""
    return _runner.build_defense(name, params).eval()


def load_attack(name: str, norm: str = "rel-l2", eps: Optional[float] = None, **params):
    """A registered attack under an explicit threat model (eps default per norm)."""
    threat = ThreatModel(norm, DEFAULT_EPS[norm] if eps is None and norm in DEFAULT_EPS else eps)
    return _runner.build_attack(name, threat, params)


def run(**options) -> pd.DataFrame:
    """Same options as ``facebench run`` (underscored); returns the tidy rows it appended.

    Pass ``out=None`` to keep the rows in memory only.
    """
    return _runner.run(RunConfig(**options))


__all__ = ["load_recognizer", "load_defense", "load_attack", "run"]

"""On-disk cache of grey-box adversarial probes.

Grey-box examples are crafted on the bare recognizer, so they do not depend on the defense:
a Table 1 sweep over defenses crafts each attack once and only re-evaluates. The key covers
everything that determines the examples — recognizer, pairs and crop, attack with its
parameters and threat model, goal, seed — plus a hash of the attack and threat source code,
so editing an attack never serves stale examples.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Optional

import numpy as np

from . import attack as attack_module
from . import threat as threat_module
from .fileio import atomic_write
from .paths import cache_dir


def default_dir() -> Path:
    return cache_dir("adversarial")


def _source_hash(attack) -> str:
    h = hashlib.sha256()
    # a wrapper attack (a*, minimal-eps) also depends on the attack it drives
    for obj in (type(attack), type(getattr(attack, "inner", attack)), attack_module,
                threat_module):
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):  # no source (frozen app): never reuse across versions
            h.update(repr(id(obj)).encode())
    return h.hexdigest()[:16]


def cache_key(*, recognizer: str, pairs_name: str, paths_a, paths_b, aligner_key: str,
              attack, goal: str, seed: int, selected) -> str:
    """Hex digest naming one set of adversarial probes."""
    payload = json.dumps({
        "recognizer": recognizer, "pairs": pairs_name, "aligner": aligner_key,
        "paths": hashlib.sha256("\n".join(map(str, paths_a + paths_b)).encode()).hexdigest(),
        "attack": repr(attack), "source": _source_hash(attack), "goal": goal, "seed": seed,
        "selected": hashlib.sha256(np.asarray(selected, np.int64).tobytes()).hexdigest(),
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load(key: str, shape, cache_dir: Optional[Path] = None) -> Optional[np.ndarray]:
    """The cached float32 probes, or None when absent, unreadable or of another shape."""
    path = Path(cache_dir or default_dir()) / f"{key}.npy"
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.shape == tuple(shape) and arr.dtype == np.float32 else None


def save(key: str, probes: np.ndarray, cache_dir: Optional[Path] = None) -> None:
    """Write atomically; a cache that cannot be written is skipped, never fatal."""
    path = Path(cache_dir or default_dir()) / f"{key}.npy"
    data = np.ascontiguousarray(probes, dtype=np.float32)
    try:
        atomic_write(path, lambda fh: np.save(fh, data, allow_pickle=False))
    except OSError:
        pass

"""On-disk cache of grey-box adversarial probes.

Grey-box examples are crafted on the bare recognizer, so they do not depend on the defense:
a Table 1 sweep over defenses crafts each attack once and only re-evaluates. The key covers
everything that determines the examples — the exact aligned pixels the attack starts from
(``images_digest``), recognizer, pairs and crop, attack with its parameters and threat model,
goal, seed — plus a code version: facebench's version and the source of the attack's, its
inner attack's, the threat model's and the recognizer's modules. Editing any of them, or
running the same pairs CSV over another image folder, crafts anew instead of serving stale
examples.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np

from . import attack as attack_module
from . import threat as threat_module
from .fileio import atomic_write
from .fingerprint import code_version
from .paths import cache_dir


def default_dir() -> Path:
    return cache_dir("adversarial")


def _code_version(attack, recognizer_module) -> str:
    # a wrapper attack (a*, minimal-eps) also depends on the attack it drives
    inner = getattr(attack, "inner", None)
    return code_version(attack, inner, attack_module, threat_module, recognizer_module)


def cache_key(*, recognizer: str, pairs_name: str, paths_a, paths_b, aligner_key: str,
              attack, goal: str, seed: int, selected, images_digest: str,
              recognizer_module=None) -> str:
    """Hex digest naming one set of adversarial probes.

    ``images_digest`` is :func:`facebench.fingerprint.images_digest` of the aligned uint8
    stack the probes are cut from; ``recognizer_module`` the recognizer (object, class or
    module) whose code, with the attack's, made them.
    """
    if not isinstance(images_digest, str) or not images_digest:
        raise TypeError("cache_key needs images_digest: fingerprint.images_digest(images)")
    payload = json.dumps({
        "recognizer": recognizer, "pairs": pairs_name, "aligner": aligner_key,
        "paths": hashlib.sha256("\n".join(map(str, list(paths_a) + list(paths_b))).encode())
        .hexdigest(),
        "attack": repr(attack), "goal": goal, "seed": seed,
        "selected": hashlib.sha256(np.asarray(selected, np.int64).tobytes()).hexdigest(),
        "images": images_digest, "code_version": _code_version(attack, recognizer_module),
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

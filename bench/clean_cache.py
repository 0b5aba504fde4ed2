"""On-disk cache of clean embeddings: the clean stage of a repeated evaluation is free.

Every run of a configuration starts by embedding each distinct aligned crop through the
defended system (recognizer∘defense). That is the same work for every attack evaluated on
the same pairs, and for SIDE it costs more than many attacks do. The cache keeps those
embeddings under a key made of *what determines them*, like the grey-box example cache:

- the exact aligned pixels (:func:`facebench.fingerprint.images_digest` of the uint8 stack);
- the recognizer and defense as run: registered names, the parameters given, and the content
  of the defended module — every parameter and buffer (so the weights, whatever file they
  were read from), every public setting of every sub-module (``quality``, ``inference``,
  ``seed``, ``fold``, ...), the identity (size, mtime, edges) of the model files named by
  ``*_path`` settings, and ``extra_repr``;
- the code version of every module the defended system runs (recognizer, defense, its
  networks, the embedding code, this file) and torch's version;
- batch size and device, which can change the last bits of a convolution.

Randomized defenses. A defense declaring ``randomized`` is cached only when its draws come
from private ``torch.Generator`` objects (a seeded SIDE, tvm/quilting with ``seed=``): their
states at the start are part of the key, and the states after embedding are stored with the
entry and restored on a hit, so later draws (the attacked probes) are those of an uncached
run. A randomized defense on torch's global RNG (``seed=None``) is never cached. Any
computation that consumed torch's, numpy's or Python's global RNG is not stored either, so a
defense that draws without declaring it cannot be served from the cache.

Entries are written atomically (a killed run leaves no half file) and verified on load (the
key inside, shape, dtype, finiteness, generator states): a corrupt or foreign file is simply
recomputed. ``FACEBENCH_CLEAN_CACHE=0`` turns the cache off.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
import weakref
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import embed as embed_module
from .fileio import atomic_write
from .fingerprint import code_version, file_fingerprint, images_digest
from .paths import cache_dir

FORMAT = "facebench-clean-embeddings/1"
ENV_SWITCH = "FACEBENCH_CLEAN_CACHE"
_SCALARS = (type(None), bool, int, float, str)


def default_dir() -> Path:
    return cache_dir("clean")


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


# ---------------------------------------------------------------- content of a module

# id(tensor) -> (weak reference, stamp, digest); a dict keyed by id, not a WeakKeyDictionary,
# whose key comparison would call Tensor.__eq__
_TENSOR_DIGESTS: Dict[int, tuple] = {}


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 (32 hex) of a tensor's dtype, shape and values; remembered per tensor while
    its storage and version stay the same (a process embedding many configurations hashes
    its weights once)."""
    stamp = (t.data_ptr(), t._version, t.dtype, tuple(t.shape), str(t.device))
    cached = _TENSOR_DIGESTS.get(id(t))
    if cached is not None and cached[0]() is t and cached[1] == stamp:
        return cached[2]
    flat = t.detach().reshape(-1).cpu().contiguous()
    h = hashlib.sha256(f"{flat.dtype}{tuple(t.shape)}\n".encode())
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy())
    digest = h.hexdigest()[:32]
    if len(_TENSOR_DIGESTS) > 4096:  # drop entries of tensors that are gone
        for k in [k for k, v in _TENSOR_DIGESTS.items() if v[0]() is None]:
            del _TENSOR_DIGESTS[k]
    try:
        _TENSOR_DIGESTS[id(t)] = (weakref.ref(t), stamp, digest)
    except TypeError:  # not weak-referenceable: just not remembered
        pass
    return digest


def _describe(value, depth: int = 0):
    """A JSON-able description of a setting's value; tensors and arrays by content."""
    if isinstance(value, _SCALARS):
        return value if not isinstance(value, float) or np.isfinite(value) else repr(value)
    if isinstance(value, torch.Tensor):
        return "tensor:" + tensor_digest(value)
    if isinstance(value, np.ndarray):
        return "array:" + images_digest(value)
    if isinstance(value, np.generic):
        return _describe(value.item(), depth)
    if isinstance(value, torch.Generator):
        return "generator"  # its state is keyed separately (see generators())
    if isinstance(value, (torch.device, torch.dtype, Path)):
        return str(value)
    if isinstance(value, torch.nn.Module):
        return "module"  # walked by module_content() itself
    if depth >= 3:
        return type(value).__qualname__
    if isinstance(value, (list, tuple)):
        return [_describe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v, depth + 1) for k, v in sorted(value.items(), key=str)}
    if callable(value):
        return getattr(value, "__qualname__", type(value).__qualname__)
    public = {k: v for k, v in vars(value).items() if not k.startswith("_")} \
        if hasattr(value, "__dict__") else {}
    return {"type": type(value).__qualname__, **{k: _describe(v, depth + 1)
                                                 for k, v in sorted(public.items())}}


def _file_identity(value) -> Optional[list]:
    if not isinstance(value, (str, Path)) or not str(value):
        return None
    try:
        if not Path(value).is_file():
            return None
        return list(file_fingerprint(value))
    except OSError:
        return None


def module_content(module: torch.nn.Module) -> dict:
    """What a module computes with: per sub-module its class, public settings (model files
    by identity too) and ``extra_repr``; every parameter and buffer by content."""
    subs = {}
    for name, sub in module.named_modules():
        settings = {k: v for k, v in vars(sub).items()
                    if not k.startswith("_") and k != "training"}
        files = {k: _file_identity(v) for k, v in settings.items() if k.endswith("_path")}
        subs[name or "."] = {
            "class": f"{type(sub).__module__}.{type(sub).__qualname__}",
            "settings": {k: _describe(v) for k, v in sorted(settings.items())},
            "files": {k: v for k, v in files.items() if v is not None},
            "repr": sub.extra_repr(),
        }
    tensors = {f"{kind}:{name}": tensor_digest(t)
               for kind, named in (("param", module.named_parameters()),
                                   ("buffer", module.named_buffers()))
               for name, t in named}
    return {"modules": subs, "tensors": tensors}


def generators(module: torch.nn.Module) -> Dict[str, torch.Generator]:
    """Every torch.Generator a (sub-)module holds as an attribute, by ``path.attr``."""
    found = {}
    for name, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, torch.Generator):
                found[f"{name or '.'}.{attr}"] = value
    return found


def randomized(module: torch.nn.Module, defense=None) -> bool:
    """Whether the defended system declares random draws (its defense, or any part)."""
    parts = list(module.modules()) + ([defense] if defense is not None else [])
    return any(bool(getattr(p, "randomized", False)) for p in parts)


# ---------------------------------------------------------------- key

def cache_key(*, defended: torch.nn.Module, images: np.ndarray, recognizer_name: str,
              defense_name: str, defense_params: Optional[dict] = None, defense=None,
              batch_size: int, device) -> Optional[str]:
    """Hex digest naming the clean embeddings of ``images`` through ``defended``, or None
    when they must not be cached (a randomized defense without private generators)."""
    gens = generators(defended)
    if randomized(defended, defense) and not gens:
        return None
    # the modules whose code runs: every part of the defended system, the embedding loop
    parts = [m for m in {type(m): m for m in defended.modules()}.values()
             if type(m).__module__.split(".")[0] != "torch"]
    payload = json.dumps({
        "format": FORMAT,
        "recognizer": recognizer_name,
        "defense": defense_name,
        "defense_params": _describe(dict(defense_params or {})),
        "row_name": getattr(defense, "row_name", None),
        "content": module_content(defended),
        "generators": {k: tensor_digest(g.get_state()) for k, g in sorted(gens.items())},
        "images": images_digest(images),
        "code_version": code_version(*parts, defense, embed_module, sys.modules[__name__]),
        "torch": torch.__version__,
        "batch_size": int(batch_size),
        "device": str(torch.device(device)),
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


# ---------------------------------------------------------------- files

def _path(key: str, folder=None) -> Path:
    return Path(folder or default_dir()) / f"{key}.npz"


def load(key: str, n_images: int, generator_names, folder=None
         ) -> Optional[Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
    """(embeddings, generator states after them), or None when absent, unreadable, corrupt,
    of another key or shape, not finite, or missing a generator state."""
    try:
        with np.load(_path(key, folder), allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            emb = np.array(z["emb"])
            states = {name: np.array(z[f"gen:{name}"]) for name in generator_names}
    except Exception:  # noqa: BLE001 - a damaged cache file is a miss, whatever the damage
        return None
    if (emb.dtype != np.float32 or emb.ndim != 2 or emb.shape[0] != n_images
            or not np.isfinite(emb).all()
            or any(s.dtype != np.uint8 or s.ndim != 1 for s in states.values())):
        return None
    return torch.from_numpy(emb), {k: torch.from_numpy(v) for k, v in states.items()}


def save(key: str, emb: torch.Tensor, states: Dict[str, torch.Tensor], folder=None) -> bool:
    """Write atomically; a cache that cannot be written is skipped, never fatal."""
    arrays = {"key": np.array(key), "emb": emb.detach().cpu().float().numpy()}
    arrays.update({f"gen:{k}": v.cpu().numpy() for k, v in states.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write(_path(key, folder), lambda fh: fh.write(buf.getvalue()))
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- the clean stage's call

def _global_rng_states(device) -> List:
    states = [torch.get_rng_state(), np.random.get_state(), random.getstate()]
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        states.append(torch.cuda.get_rng_state(dev))
    return states


def _same_states(a: List, b: List) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, tuple) and len(x) == 5 and isinstance(x[1], np.ndarray):  # numpy
            if x[0] != y[0] or not np.array_equal(x[1], y[1]) or x[2:] != y[2:]:
                return False
        elif x != y:
            return False
    return True


def embed_clean(defended: torch.nn.Module, images: np.ndarray, *, batch_size: int, device,
                recognizer_name: str, defense_name: str, defense_params=None, defense=None,
                progress: bool = False, desc: str = "clean",
                embed: Optional[Callable] = None, folder=None) -> Tuple[torch.Tensor, bool]:
    """(clean embeddings of ``images`` through ``defended``, whether they came from the
    cache). ``embed`` is the embedding function (default :func:`facebench.embed.embed_images`)."""
    embed = embed or embed_module.embed_images
    key = None
    if enabled():
        key = cache_key(defended=defended, images=images, recognizer_name=recognizer_name,
                        defense_name=defense_name, defense_params=defense_params,
                        defense=defense, batch_size=batch_size, device=device)
    gens = generators(defended)
    if key is not None:
        hit = load(key, len(images), list(gens), folder)
        if hit is not None:
            emb, states = hit
            for name, state in states.items():
                gens[name].set_state(state)  # continue the draws as an uncached run would
            if progress:
                print(f"reusing cached clean embeddings ({len(images)} images)", file=sys.stderr)
            return emb, True
    before = _global_rng_states(device) if key is not None else None
    emb = embed(defended, images, batch_size, device, desc, progress)
    if key is not None and _same_states(before, _global_rng_states(device)):
        save(key, emb, {name: g.get_state() for name, g in gens.items()}, folder)
    return emb, False

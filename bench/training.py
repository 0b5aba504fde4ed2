"""``train()``: fit a learned purifier (SIDE or PIN) on the LFW training split.

The trained model lands in ``out_dir`` (default ``user_data_dir("facebench")/models/
<defense>/<preset>``, or ``$FACEBENCH_MODELS/<defense>/<preset>``), where the registered
defense finds it: ``facebench run --defense side`` loads the finished default run (full,
else quick), and ``--defense-param checkpoint=PATH`` picks any other output folder or
model file. Re-running ``train`` with the same settings resumes from ``checkpoint.pt``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .eigen_purifier import EIGEN_FILE, default_out_dir
from .eigenfaces import cached_eigenbasis, save_atomic
from .errors import FacebenchError
from .fileio import resolve_device
from .trainer import TrainContext, load_training_images, run_training

# defense -> (module, trainer class)
TRAINABLE = {"side": ("facebench.train_side", "SIDETrainer"),
             "pin": ("facebench.train_pin", "PINTrainer")}


def presets(defense_name: str) -> dict:
    """The presets (name -> settings) of a trainable defense."""
    if defense_name not in TRAINABLE:
        raise FacebenchError(f"defense {defense_name!r} has no training recipe; trainable: "
                             f"{', '.join(sorted(TRAINABLE))}")
    return importlib.import_module(TRAINABLE[defense_name][0]).PRESETS


def _recognizer(recognizer, device) -> tuple[nn.Module, str]:
    if isinstance(recognizer, nn.Module):
        name = getattr(recognizer, "registry_name", type(recognizer).__name__)
        model = recognizer
    else:
        from .registry import RECOGNIZERS

        name = str(recognizer)
        model = RECOGNIZERS.get(name)()
    return model.to(device).eval().requires_grad_(False), name


def train(defense_name: str, preset: str = "quick", data_home=None,
          protocol: str = "dev-test", out_dir=None, seed: int = 0, progress: bool = True,
          max_steps: int | None = None, *, recognizer: Any = "dlib-resnet",
          device: str = "cpu", resume: bool = True, download: bool = True,
          image_cache_dir=None, eigen_cache_dir=None, **options) -> Path:
    """Train ``defense_name`` (``side`` or ``pin``) with ``preset`` (``quick``/``full``).

    ``options`` override preset settings by name (e.g. ``use_memory=False``,
    ``ssat=False``, ``k=20`` for the paper's ablations); unknown names are an error.
    ``recognizer`` (a registered name or a module) is F in the affinity and the FGSM, used
    frozen; its aligner crops the training images. ``max_steps`` caps the *total* step
    count (a later call with a larger cap, or none, continues). Returns the output folder.
    """
    module_name, class_name = TRAINABLE.get(defense_name, (None, None))
    table = presets(defense_name)
    if preset not in table:
        raise FacebenchError(f"unknown preset {preset!r} for {defense_name}; choose from: "
                             f"{', '.join(table)}")
    cfg = dict(table[preset])
    unknown = sorted(set(options) - set(cfg))
    if unknown:
        raise FacebenchError(f"{defense_name} has no training option {unknown[0]!r}; it "
                             f"takes: {', '.join(sorted(cfg))}")
    cfg.update(options)
    module = importlib.import_module(module_name)
    module.check_config(cfg)
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 0):
        raise FacebenchError(f"max_steps must be an integer >= 0, got {max_steps!r}")
    dev = resolve_device(device)
    rec_net, rec_name = _recognizer(recognizer, dev)

    images, key_lines, data_info = load_training_images(
        data_home, protocol, rec_net, cfg["max_images"], progress, download, image_cache_dir)
    if hasattr(module, "resolve_steps"):
        cfg = module.resolve_steps(cfg, len(images))
    basis, basis_path = cached_eigenbasis(images, key_lines, cfg["n_components"],
                                          eigen_cache_dir, cfg["face_size"])
    out = Path(out_dir).expanduser() if out_dir else default_out_dir(defense_name, preset)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / EIGEN_FILE).is_file() or not resume:
        save_atomic(basis.to_dict(), out / EIGEN_FILE)
    eigen_info = {"K": basis.k, "face_size": basis.size, "cache_file": str(basis_path),
                  "n_images": len(images), "method": "float64 eigh (Gram if N <= d)"}

    torch.manual_seed(seed)  # model initialisation
    ctx = TrainContext(defense=defense_name, preset=preset, cfg=cfg, out_dir=out,
                       seed=int(seed), device=dev, recognizer=rec_net,
                       recognizer_name=rec_name, images=images, data_info=data_info,
                       basis=basis.to(dev), eigen_info=eigen_info, progress=progress)
    ctx.generator.manual_seed(int(seed))
    trainer = getattr(module, class_name)(ctx)
    return run_training(trainer, ctx, max_steps, resume)

"""PIN (Ren et al., IEEE TIFS 2022): perturbation inactivation, SIDE's predecessor.

A frozen denoising auto-encoder (applied twice) feeds a selector that picks a subset of
the top-2500 eigenfaces; the *raw* input is projected onto it. Trained with Gaussian noise
and a pixel-only reward (no recognizer). Needs a model trained by
``facebench train pin`` (the recipe and its presets: :mod:`.trainer`); ``checkpoint`` as for
``side``.
The official weights and eigen file are not used: the benchmark's basis is computed on the
LFW training split, so no test identity leaks into it.
"""
from __future__ import annotations

from facebench.defenses.eigen.purifier import EigenPurifier
from facebench.registry import register_defense

from .model import PINModel
from .trainer import PRESETS, PINTrainer


@register_defense("pin")
class PIN(EigenPurifier):
    """PIN (TIFS 2022): DAE-guided eigenface selection + projection; gray output, trained model"""

    defense_name = "pin"
    table_order = 6.0  # the SIDE paper's Table 1 row order
    model_class = PINModel
    presets = PRESETS
    trainer_class = PINTrainer
    defaults = {"checkpoint": None, "inference": "sample", "seed": 0, "clamp": False}
    # the DAE's optimizer is ours (its training code is not released): rows name the models
    # trained with Adam, so the first (SGD) models keep their names
    variant_defaults = {"dae_optimizer": "sgd"}
    variant_legacy = {"dae_optimizer": "sgd"}

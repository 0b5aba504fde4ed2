"""SIDE (Ren et al., IJCV 2024): the artificial-immune-system purifier.

Per input, the antigen analyzer H, the noise memory and the antibody generator G choose a
subset (antibody) of the top-1500 eigenfaces; the face is projected onto it, removing every
component outside it. Needs a model trained by ``facebench train side`` (the recipe and its
presets: :mod:`.trainer`); ``checkpoint`` picks it (a model file, an output folder, a preset
name, or ``weights`` for the copy committed under ``weights/side/``), and by default the
first of the finished full and medium runs, the committed weights, and the quick run is used.
"""
from __future__ import annotations

from facebench.defenses.eigen.purifier import EigenPurifier
from facebench.registry import register_defense

from . import tables  # noqa: F401  (registers the Table 8 / 10 layouts)
from .model import SIDEModel
from .trainer import PRESETS, SIDETrainer


@register_defense("side")
class SIDE(EigenPurifier):
    """SIDE (IJCV 2024): per-input eigenface antibody + projection; gray output, trained model"""

    defense_name = "side"
    table_order = 7.0  # the SIDE paper's Table 1 row order
    model_class = SIDEModel
    presets = PRESETS
    trainer_class = SIDETrainer
    defaults = {"checkpoint": None, "inference": "sample", "seed": 0, "clamp": False}
    # Tables 8 and 10, the affinity weights of Eq. 13, and the score calibration they act on
    variant_defaults = {"use_memory": True, "ssat": True, "k": 10, "lambdas": [8.0, 1.0, 0.003],
                        "calibration": "centre", "prior_topk": 0}
    variant_legacy = {"calibration": "none"}  # models trained before calibration existed

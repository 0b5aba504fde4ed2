"""``train()``: fit any registered learned defense by name (``facebench train NAME``).

The trained model lands in ``out_dir`` (default ``user_data_dir("facebench")/models/
<defense>/<preset>``, or ``$FACEBENCH_MODELS/<defense>/<preset>``), where the registered
defense finds it (:func:`facebench.trainable.find_checkpoint`); ``--defense-param
checkpoint=PATH`` picks any other output folder or model file. Re-running ``train`` with the
same settings resumes from ``checkpoint.pt``.
"""
from __future__ import annotations

from pathlib import Path

from .trainable import trainable


def presets(defense_name: str) -> dict:
    """The presets (name -> settings) of a trainable defense."""
    return trainable(defense_name).presets


def train(defense_name: str, preset: str = "quick", data_home=None,
          protocol: str = "dev-test", out_dir=None, seed: int = 0, progress: bool = True,
          max_steps: int | None = None, **kwargs) -> Path:
    """Train the registered defense ``defense_name`` with ``preset``; the output folder.

    Every other keyword goes to :meth:`facebench.trainable.Trainable.fit` (``recognizer``,
    ``device``, ``resume``, ``download``, cache folders, and preset overrides such as
    ``use_memory=False`` or ``k=20`` for the paper's ablations).
    """
    return trainable(defense_name).fit(
        preset=preset, data_home=data_home, protocol=protocol, out_dir=out_dir, seed=seed,
        progress=progress, max_steps=max_steps, **kwargs)

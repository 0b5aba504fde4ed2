"""What an AdvHat run leaves to look at: the printable sticker and stickered faces.

A number alone does not show whether the sticker is plausible print or a purifier ate it, so
each run with ``--out`` writes the sticker PNG and a figure of a few evaluation faces.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import sticker as S

FIGURE_FACES = 8


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def save(folder: Path, cfg, target, adaptive, sticker, faces_u8, place, defense, adv_cos, thr,
         device) -> None:
    """``sticker_<tag>.png`` and ``faces_<tag>.png`` (clean, stickered, purified rows)."""
    from facebench.embed import to_float

    tag = f"{slug(target)}_{slug(getattr(defense, 'row_name', cfg.defense))}"
    tag += "" if adaptive == "none" else f"_adaptive-{slug(adaptive)}"
    tag += f"_seed{cfg.seed}"
    S.save_png(sticker, folder / f"sticker_{tag}.png")
    pick = np.unique(np.linspace(0, len(faces_u8) - 1, min(FIGURE_FACES, len(faces_u8)))
                     .round().astype(int))
    clean = to_float(faces_u8[pick], device)
    stuck = S.apply(sticker, clean, place)
    rows = [("clean", clean), ("with the sticker", stuck)]
    if cfg.defense != "none" and getattr(defense, "purifier", False):
        with torch.no_grad():
            rows.append((f"after {cfg.defense}", defense(stuck).clamp(0, 1)))
    best = adv_cos[pick].max(axis=1)  # the gallery photo each face comes closest to
    captions = [f"cos {c:.3f}{' *' if c >= thr else ''}" for c in best]
    note = (f"cos: highest cosine to a gallery photo of {target} through {cfg.defense}; "
            f"* = accepted as {target} (threshold {thr:.4f})")
    S.save_figure(folder / f"faces_{tag}.png", sticker.cpu(),
                  [(t, x.cpu()) for t, x in rows], captions, note)

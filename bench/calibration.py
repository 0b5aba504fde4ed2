"""Recognizer-calibrated similarity: one cosine scale for every recognizer a defense learns on.

Why: learned defenses weigh a recognizer's cosine against pixel and size costs with fixed
weights (SIDE's lambda_1 = 8 of Eq. 13) that were tuned on ArcFace, whose impostor pairs sit
near cosine 0 and genuine pairs near 0.6-0.7. Other recognizers compress identity into a
narrow band (dlib-resnet: impostors 0.83, genuine 0.95), which makes every such weight several
times too weak. Subtracting the mean embedding of a training split before the cosine removes
the component all faces share; for an ArcFace-like recognizer that mean is already close to
zero, so the calibration is then (near) the identity.

``centre`` is the default of the defenses that use it; ``none`` keeps the paper's raw cosine.
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import torch
from torch import nn

from .errors import FacebenchError

CALIBRATIONS = ("centre", "none")


def check_calibration(kind: str) -> str:
    if kind not in CALIBRATIONS:
        raise FacebenchError(f"calibration must be one of {', '.join(CALIBRATIONS)}, "
                             f"got {kind!r}")
    return kind


class Calibration(nn.Module):
    """Maps L2-normalised embeddings to the unit vectors whose dot product is the score.

    ``mean`` is the centre (all zeros for ``none``); ``cosine(a, b)`` is the calibrated score
    of row-aligned embeddings."""

    def __init__(self, mean: torch.Tensor, kind: str = "centre"):
        super().__init__()
        self.kind = check_calibration(kind)
        self.register_buffer("mean", mean.detach().clone().float().reshape(-1))

    @classmethod
    def identity(cls, dim: int) -> "Calibration":
        return cls(torch.zeros(dim), "none")

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return embeddings
        return nn.functional.normalize(embeddings - self.mean.to(embeddings), dim=-1)

    def cosine(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self(a) * self(b)).sum(-1)


def fit_centre(embeddings: torch.Tensor) -> torch.Tensor:
    """The centre of L2-normalised embeddings (N x d), computed in float64."""
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise FacebenchError("calibration needs at least two embeddings (N x d)")
    if not torch.isfinite(embeddings).all():
        raise FacebenchError("calibration embeddings contain NaN or inf")
    unit = nn.functional.normalize(embeddings.double(), dim=1)
    return unit.mean(0).float()


@torch.no_grad()
def fit_calibration(kind: str, embed: Callable[[torch.Tensor], torch.Tensor],
                    images: np.ndarray, to_input: Callable[[np.ndarray], torch.Tensor],
                    batch: int = 32) -> tuple[Calibration, Dict[str, float]]:
    """Fit ``kind`` on ``images`` (uint8 N x H x W x 3, the defense's training split).

    ``embed`` maps a batch from ``to_input`` to L2-normalised embeddings. Returns the
    calibration and what the manifest records about it (how many images, the norm of the
    centre, mean raw and calibrated cosine between different images of the split)."""
    check_calibration(kind)
    chunks = [embed(to_input(images[i:i + batch])) for i in range(0, len(images), batch)]
    emb = torch.cat(chunks).float()
    dim = emb.shape[1]
    cal = Calibration(fit_centre(emb), "centre") if kind == "centre" else Calibration.identity(dim)
    # mean off-diagonal similarity: mostly different people, so an impostor-like level
    n = len(emb)
    raw = emb @ emb.T
    centred = cal(emb) @ cal(emb).T
    off = ~torch.eye(n, dtype=torch.bool)
    info = {"kind": kind, "n_images": int(n), "centre_norm": float(cal.mean.norm()),
            "mean_raw_cosine": float(raw[off].mean()),
            "mean_calibrated_cosine": float(centred[off].mean())}
    return cal, info

"""Base class of recognizers: pixel-space modules that map aligned faces to embeddings."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .errors import FacebenchError


def load_checked_state(module: nn.Module, state: dict, source) -> None:
    """Load converted weights only when every tensor name and shape matches the module:
    a port that silently skipped or mis-shaped a layer would still run, wrongly."""
    own = module.state_dict()
    for key in sorted(set(own) | set(state)):
        if key not in state or key not in own or state[key].shape != own[key].shape:
            got = tuple(state[key].shape) if key in state else "nothing"
            want = tuple(own[key].shape) if key in own else "nothing"
            raise FacebenchError(f"{source}: {key} has shape {got}, expected {want}")
    module.load_state_dict(state)


class Recognizer(nn.Module):
    """A face recognizer that takes float RGB images in [0, 1], NCHW, of ``input_size``.

    Every recognizer applies its own normalisation inside ``forward`` so that attacks and
    defenses can work in pixel space; the output is the raw embedding (compare by cosine).
    """

    #: (height, width) of the aligned chip the network expects
    input_size: Tuple[int, int] = (112, 112)
    #: length of the embedding
    embedding_dim: int = 512
    #: name of the aligner geometry LFW photos are cropped with for this recognizer
    alignment: str = "center"
    #: ``--align detect``: the aligner that finds the face itself (raw photos); None: none
    detect_alignment: Optional[str] = None
    #: ``--align fixed``: the aligner that cuts one fixed geometry of an LFW-like frame
    fixed_alignment: Optional[str] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

"""Batched embedding of uint8 image stacks, with a progress bar."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def to_float(images_u8: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 N×H×W×3 -> float NCHW in [0, 1] (the pixel space every module works in).

    The result keeps the stack's pixel-interleaved memory order (NCHW shape, channels_last
    strides): no transposing copy, and the layout CPU convolutions run fastest on.
    """
    t = torch.from_numpy(np.ascontiguousarray(images_u8)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def embed_images(model, images_u8: np.ndarray, batch_size: int = 64, device="cpu",
                 desc: str = "embed", progress: bool = True) -> torch.Tensor:
    """Embeddings (N×D, float32, on CPU) of a uint8 image stack.

    The forwards run under ``torch.inference_mode`` (no autograd bookkeeping at all, a
    little cheaper than ``no_grad``); the result is concatenated outside it, so it is an
    ordinary tensor that attacks may use inside autograd (e.g. as the gallery side).
    """
    out = []
    for start in tqdm(range(0, len(images_u8), batch_size), desc=desc, unit="batch",
                      disable=not progress, leave=False):
        with torch.inference_mode():
            emb = model(to_float(images_u8[start:start + batch_size], device)).float().cpu()
        out.append(emb)
    return torch.cat(out) if out else torch.empty(0)

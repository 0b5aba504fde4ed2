"""Batched embedding of uint8 image stacks, with a progress bar."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def to_float(images_u8: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 N×H×W×3 -> float NCHW in [0, 1] (the pixel space every module works in)."""
    t = torch.from_numpy(np.ascontiguousarray(images_u8)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def embed_images(model, images_u8: np.ndarray, batch_size: int = 64, device="cpu",
                 desc: str = "embed", progress: bool = True) -> torch.Tensor:
    """Embeddings (N×D, float32, on CPU) of a uint8 image stack."""
    out = []
    for start in tqdm(range(0, len(images_u8), batch_size), desc=desc, unit="batch",
                      disable=not progress, leave=False):
        out.append(model(to_float(images_u8[start:start + batch_size], device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)

"""What a learned defense trains on: the training split's aligned crops, and the order its
batches come in (seeded per epoch, so a resumed run sees the same batches)."""
from __future__ import annotations

import hashlib
from typing import List

import torch
from torch import nn

from .errors import FacebenchError


def evenly_spaced(items: List[str], m: int | None) -> List[str]:
    if m is None or len(items) <= m:
        return list(items)
    return [items[(i * len(items)) // m] for i in range(m)]


def load_training_images(data_home, protocol: str, recognizer: nn.Module, max_images,
                         progress: bool = True, download: bool = True, cache_dir=None,
                         dataset: str | None = None):
    """Aligned uint8 crops of ``dataset``'s training split and a description of them."""
    from .data import default_cache_dir, load_aligned
    from .dataset import load_dataset
    from .registry import DATASETS

    dataset = dataset or DATASETS.default("train")
    ds = load_dataset(dataset)
    split = ds.training_split(protocol, data_home=data_home, download=download)
    paths = evenly_spaced(split.paths, max_images)
    if len(paths) < 2:
        raise FacebenchError(f"the {dataset} training split of {protocol!r} has {len(paths)} "
                             f"images")
    aligner = ds.aligner(recognizer)
    images = load_aligned(paths, aligner, cache_dir or default_cache_dir(),
                          cache_key=f"{split.name.replace(':', '_')}_train", progress=progress,
                          root=split.root)
    key_lines = [split.name, aligner.key] + paths
    info = {"dataset": split.dataset, "protocol": split.protocol, "location": split.location,
            "split": split.description, "n_images": len(paths),
            "max_images": max_images, "aligner": aligner.key,
            "image_list_sha256": hashlib.sha256("\n".join(key_lines).encode()).hexdigest()}
    return images, key_lines, info


def batch_indices(step: int, n: int, batch: int, seed: int) -> torch.Tensor:
    per_epoch = n // batch
    if per_epoch < 1:
        raise FacebenchError(f"batch size {batch} exceeds the {n} training images")
    epoch, j = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)[j * batch:(j + 1) * batch]

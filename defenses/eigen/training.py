"""What SIDE's and PIN's recipes share on top of the generic loop: the eigenbasis and gray faces.

Before the first step, :meth:`EigenTrainer.prepare` computes (or takes from the cache) the
top-``n_components`` eigenfaces of the training images, saves them as ``eigen.pt`` in the
output folder and records them in the manifest's ``eigen`` section; each batch reaches the
recipe as gray ``face_size`` faces in [-1, 1].
"""
from __future__ import annotations

import torch
from torch import nn

from facebench.trainer import TrainContext, Trainer

from .faces import cached_eigenbasis, face_to_rgb, rgb_to_face, save_atomic
from .purifier import EIGEN_FILE


def embed(recognizer: nn.Module, faces: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings of gray [-1,1] faces, fed as gray RGB at F's input size."""
    size = tuple(getattr(recognizer, "input_size", faces.shape[-2:]))
    return nn.functional.normalize(recognizer(face_to_rgb(faces, size).contiguous()), dim=1)


class EigenTrainer(Trainer):
    """A recipe that learns to select eigenfaces of a basis fixed before training."""

    fit_options = {"eigen_cache_dir": None}  # where bases are cached (default: user cache)
    progress_keys = ("loss", "affinity", "cos", "sparsity")

    @classmethod
    def prepare(cls, ctx: TrainContext, resume: bool = True, eigen_cache_dir=None) -> None:
        cfg = ctx.cfg
        basis, basis_path = cached_eigenbasis(ctx.images, ctx.key_lines, cfg["n_components"],
                                              eigen_cache_dir, cfg["face_size"])
        if not (ctx.out_dir / EIGEN_FILE).is_file() or not resume:
            save_atomic(basis.to_dict(), ctx.out_dir / EIGEN_FILE)
        ctx.sections["eigen"] = {"K": basis.k, "face_size": basis.size,
                                 "cache_file": str(basis_path), "n_images": len(ctx.images),
                                 "method": "float64 eigh (Gram if N <= d)"}
        ctx.files["eigen"] = EIGEN_FILE
        ctx.extras["basis"] = basis.to(ctx.device)

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        self.basis = ctx.extras["basis"]

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return rgb_to_face(images, self.ctx.cfg["face_size"])

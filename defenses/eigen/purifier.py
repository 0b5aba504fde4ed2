"""Shared purifier of SIDE and PIN: select eigenfaces for the input, project onto them.

Pipeline of ``forward``: RGB [0,1] at the recognizer's size -> gray 112x112 in [-1,1]
(:func:`facebench.defenses.eigen.faces.rgb_to_face`) -> learned selector -> one antibody (mask) ->
``E diag(m) E^T (x - mu) + mu`` -> back to [0,1], resized to the input size and replicated
to three channels. The recognizer therefore sees a *gray* face, as in both papers, so the
no-defense baseline it should be compared with is the gray-replicated one as well.

Inference modes: ``sample`` (default; one Bernoulli mask, the authors' demo) draws from a
CPU generator seeded with ``seed`` at construction, so a run is reproducible for a fixed
image order and batch size; ``reset_rng()`` restarts the stream. ``threshold`` uses p > 0.5
(deterministic); ``mean`` uses p > mean(p) (PIN's unused alternative). The mask is a hard
0/1 choice, so the defense is not differentiable; gradients that reach the input flow only
through the projection (mask held constant), which is what BPDA-style attacks use.
The output is not clamped to [0,1] (neither codebase clamps the reconstruction); pass
``clamp=True`` to clamp it. The inner model always runs in eval mode (BN running
statistics, memory read-only), whatever mode the wrapper is put in.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from facebench.defense import Defense
from facebench.errors import FacebenchError
from facebench.trainable import (Trainable, find_checkpoint, load_model_file,
                                 verify_model_hash)

from .antibody import sample_antibodies, threshold_antibody
from .faces import EigenBasis, face_to_rgb, load_basis_file, rgb_to_face

EIGEN_FILE = "eigen.pt"
INFERENCE = ("sample", "threshold", "mean")


def load_basis_beside(model_path, data_home=None, progress: bool = True) -> EigenBasis:
    """The eigenbasis of a trained model: ``eigen.pt`` in its folder, or, for committed
    weights (which do not ship it), recomputed from the LFW images its manifest names."""
    folder = Path(model_path).parent
    if (folder / EIGEN_FILE).is_file():
        return load_basis_file(folder / EIGEN_FILE)
    from .committed import rebuild_basis

    return rebuild_basis(folder, data_home, progress)


class EigenPurifier(Trainable, Defense):
    """Base of the eigen-subspace purifiers; subclasses build ``model`` from a checkpoint."""

    differentiable = False
    defense_name = "eigen"

    #: the trained network's class (SIDEModel, PINModel); set by each registered subclass
    model_class: type | None = None
    #: training options of the paper's ablations -> their default; a model trained with
    #: another value is a variant, named in the runs CSV as e.g. ``side[quick,no-memory,k=20]``
    variant_defaults: dict = {}
    #: what a manifest written before an option existed means by leaving it out
    variant_legacy: dict = {}

    def __init__(self, checkpoint=None, inference: str = "sample", seed: int = 0,
                 clamp: bool = False, *, model: nn.Module | None = None,
                 basis: EigenBasis | None = None, data_home=None, progress: bool = True):
        """Load the trained model (``checkpoint``: see :func:`find_checkpoint`), or take
        ``model`` and ``basis`` directly (tests). ``data_home`` is where LFW is, needed only
        to recompute the eigenbasis of committed weights."""
        meta, path = {}, None
        if model is None or basis is None:
            data, basis, path = self.read_checkpoint(self.defense_name, checkpoint, data_home,
                                                     progress)
            model = self.model_class(**data["config"])
            model.load_state_dict(data["state_dict"])
            meta = data.get("meta", {})
        super().__init__()
        self.checkpoint_path = str(path) if path else None
        if inference not in INFERENCE:
            raise FacebenchError(f"{self.defense_name} inference must be one of "
                                 f"{', '.join(INFERENCE)}, got {inference!r}")
        k = model.config["n_components"]
        if basis.k < k:
            raise FacebenchError(f"{self.defense_name} model selects among {k} eigenfaces but "
                                 f"the basis has only {basis.k}")
        # channels_last: the analyzer's full-resolution convolutions run 1.4x faster on CPU
        # (measured, one thread: 0.154 -> 0.107 s per face; outputs within 3e-8)
        self.model = model.eval().to(memory_format=torch.channels_last)
        for q in self.model.parameters():
            q.requires_grad_(False)
        self.basis = basis if basis.k == k else basis.truncate(k)
        self.face_size = int(model.config.get("image_size", self.basis.size))
        if self.face_size != self.basis.size:
            raise FacebenchError(f"{self.defense_name} model works on {self.face_size}px faces "
                                 f"but the eigenbasis on {self.basis.size}px ones")
        self.inference = inference
        self.randomized = inference == "sample"
        self.seed = int(seed)
        self.clamp = bool(clamp)
        self.meta = dict(meta)
        self.row_name = self.defense_name + self.variant_suffix(path)
        self._last_input = None  # (input, its version, its selection probabilities)
        self.reset_rng()

    def variant_suffix(self, model_path) -> str:
        """What sets this model apart from the paper's, read from its training manifest: the
        schedule when it is not the paper's (``quick``, ``medium``) and the ablation options
        that differ from their defaults, e.g. ``[quick,no-memory,k=20]``; ``""`` for a model
        trained with the full schedule and default options (or with no manifest)."""
        if model_path is None:
            return ""
        manifest = Path(model_path).parent / "manifest.json"
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        config = info.get("config", {})
        parts = [str(info["preset"])] if info.get("preset") not in (None, "full") else []
        for key, default in self.variant_defaults.items():
            value = config.get(key, self.variant_legacy.get(key, default))
            if value == default:
                continue
            if isinstance(value, (list, tuple)):  # no commas: they separate the tags
                value = "/".join(f"{v:g}" for v in value)
            parts.append(f"no-{key.replace('use_', '')}" if value is False else f"{key}={value}")
        return f"[{','.join(parts)}]" if parts else ""

    @classmethod
    def export_manifest(cls, run_dir: Path, manifest: dict) -> None:
        from .committed import export_manifest

        export_manifest(run_dir, manifest)

    @staticmethod
    def read_checkpoint(defense: str, checkpoint, data_home=None, progress: bool = True
                        ) -> tuple[dict, EigenBasis, Path]:
        path = find_checkpoint(defense, checkpoint)
        verify_model_hash(path)
        data = load_model_file(path, defense)
        return data, load_basis_beside(path, data_home, progress), path

    def reset_rng(self) -> None:
        """Restart the mask stream (the same images in the same order get the same masks)."""
        self.generator = torch.Generator().manual_seed(self.seed)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # a frozen plug-in: never update BN statistics or the memory
        return self

    def masks(self, p: torch.Tensor) -> torch.Tensor:
        if self.inference == "sample":
            return sample_antibodies(p, 1, self.generator)[:, 0]
        return threshold_antibody(p, "half" if self.inference == "threshold" else "mean")

    def purify_gray(self, y: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        """Gray [-1,1] faces -> their projections onto the selected eigenfaces (``p``: the
        selection probabilities of ``y`` when already known)."""
        with torch.no_grad():
            if p is None:
                p = self.model(y.contiguous(memory_format=torch.channels_last))
            mask = self.masks(p)
        return self.basis.project(y, mask)

    def _known_selection(self, x: torch.Tensor):
        """The selection probabilities of the last input when ``x`` holds the same pixels:
        EOT calls the purifier several times on one unchanged batch, and only the antibody
        draw is random, so the analyzer (most of the cost) runs once. Same storage, offset,
        shape, strides and version counter means the same pixels: the last input is held, so
        its memory cannot be reused by another tensor, and an in-place step bumps the version."""
        last = self._last_input
        if last is None:
            return None
        held, version, p = last
        same = (held.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
                and held.data_ptr() == x.data_ptr() and held.shape == x.shape
                and held.stride() == x.stride() and x._version == version
                and held.dtype == x.dtype and held.device == x.device)
        return p if same else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        y = rgb_to_face(x, self.face_size)
        # inference tensors (the clean pass) keep no version counter, and see each batch once
        reuse = not torch.is_grad_enabled() and not x.is_inference()
        p = self._known_selection(x) if reuse else None
        if p is None:
            with torch.no_grad():
                p = self.model(y.contiguous(memory_format=torch.channels_last))
            self._last_input = (x.detach(), x._version, p) if reuse else None
        out = face_to_rgb(self.purify_gray(y, p), size).contiguous()
        return out.clamp(0.0, 1.0) if self.clamp else out

    def extra_repr(self) -> str:
        return f"inference={self.inference!r}, seed={self.seed}, K={self.basis.k}"

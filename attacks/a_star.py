"""a*: SIDE's own adaptive attack (Ren et al., Sec. 4.3, Eq. 20).

Every antibody SIDE (or PIN) can pick is a subset of the top eigenfaces, so the attacker
preprocesses with the fixed "super-antibody" of all of them, P*(x) = E Eᵀ(x − μ) + μ, in the
defense's gray 112×112 [-1, 1] space, replicated to three channels before the recognizer, and
runs an ordinary attack on F(P*(x')). The noise then lives in the subspace no antibody removes.
P* is linear, so the surrogate is exact and deterministic: no BPDA, no EOT, no gradient through
the selector. Rows record the base attack (fgsm / deepfool / pgd) in the ``attack`` column and
``a*`` in the ``adaptive`` column, so Table 7 is the defense×attack table of ``adaptive=a*``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from facebench.attack import Attack, row_tags, tagged
from facebench.defenses.eigen.faces import EigenBasis, face_to_rgb, load_basis_file, rgb_to_face
from facebench.defenses.eigen.purifier import EIGEN_FILE, load_basis_beside
from facebench.errors import FacebenchError
from facebench.fingerprint import file_sha256
from facebench.registry import ATTACKS, register_attack
from facebench.trainable import MODEL_FILE, find_checkpoint

BASES = ("fgsm", "deepfool", "pgd")


class SuperAntibody(nn.Module):
    """``model ∘ P*``: the recognizer behind the projection onto all top-K eigenfaces."""

    def __init__(self, model: nn.Module, basis: EigenBasis):
        super().__init__()
        self.model = model
        self.basis = basis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rgb_to_face(x, self.basis.size)
        return self.model(face_to_rgb(self.basis.project(y), tuple(x.shape[-2:])).contiguous())


def basis_path(source) -> Path:
    """The file that fixes the attacker's eigenbasis: ``eigen.pt`` beside a trained SIDE/PIN
    model, an eigen file, or, for committed weights (which ship no basis), the model file.

    ``source`` is ``side`` / ``pin`` (that defense's default trained model), a training output
    folder, a model file, or an ``eigen.pt`` file. White-box knowledge of the defense includes
    its basis, which is fixed once trained.
    """
    text = str(source)
    path = Path(text).expanduser()
    if text in ("side", "pin"):
        path = find_checkpoint(text)
    elif path.is_dir():
        path = path / MODEL_FILE
    if path.name == MODEL_FILE and (path.parent / EIGEN_FILE).is_file():
        path = path.parent / EIGEN_FILE
    if not path.is_file():
        raise FacebenchError(f"a-star basis {text!r}: no model or eigenbasis file at {path}")
    return path


def load_basis(source, n_components: int, data_home=None) -> EigenBasis:
    """The top ``n_components`` eigenfaces of :func:`basis_path`'s file (``data_home``: where
    LFW is, to rebuild the basis of committed weights)."""
    path = basis_path(source)
    basis = (load_basis_file(path) if path.name == EIGEN_FILE
             else load_basis_beside(path, data_home))
    if basis.k < n_components:
        raise FacebenchError(f"a-star wants the top {n_components} eigenfaces but {path} has "
                             f"only {basis.k}")
    return basis.truncate(n_components)


@register_attack("a-star")
class AStar(Attack):
    """SIDE's adaptive a*: a base attack (fgsm|deepfool|pgd) on F(P*(x)), P* = top-1500 projection.

    ``basis`` picks the attacker's eigenfaces (default: the trained SIDE model's). The base
    attack keeps its own defaults; ``steps`` and ``step_size`` are passed on when set.
    """

    defaults = {"base": "pgd", "basis": "side", "n_components": 1500, "steps": None,
                "step_size": None}
    knowledge = "a*"
    data_home = None  # set by bind(): where a committed model's basis is rebuilt from

    def validate(self) -> None:
        if self.base not in BASES:
            raise FacebenchError(f"a-star base must be one of {', '.join(BASES)}, "
                                 f"got {self.base!r}")
        self._int_at_least("n_components", 1)
        params = {k: getattr(self, k) for k in ("steps", "step_size")
                  if getattr(self, k) is not None}
        cls = ATTACKS.get(self.base)
        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise FacebenchError(f"a-star base {self.base} has no parameter {unknown[0]!r}")
        self.inner = cls(self.threat, **params)
        self._basis = None

    @property
    def row_attack(self) -> str:
        """The runs CSV names the base attack (with its non-default parameters); the
        ``adaptive`` column says ``a*``."""
        own = {k: self.params[k] for k in ("basis", "n_components")}
        if Path(str(own["basis"])).is_file():  # a file of the user's: by content, not by path
            own["basis"] = "sha256:" + file_sha256(own["basis"])[:12]
        return tagged(self.inner.row_attack, row_tags(own, type(self).defaults))

    def eigenbasis(self) -> EigenBasis:
        """The attacker's basis, loaded on first use (construction stays cheap)."""
        if self._basis is None:
            self._basis = load_basis(self.params["basis"], self.n_components, self.data_home)
        return self._basis

    def __repr__(self) -> str:
        # the cache key: which basis file (and which version of it) the surrogate used
        path = basis_path(self.params["basis"])
        stamp = f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        return f"a-star[{stamp}]({self.inner!r}, n_components={self.n_components})"

    def bind(self, *, defense, data_home=None) -> None:
        """With ``basis`` naming the evaluated defense (side, pin), use *its* model's basis;
        ``data_home`` is where a committed model's basis is rebuilt from."""
        self.data_home = data_home
        path = getattr(defense, "checkpoint_path", None)
        if path and self.params["basis"] == getattr(defense, "defense_name", None):
            self.params["basis"] = path
            self._basis = None
            basis = getattr(defense, "basis", None)
            if basis is not None and basis.k >= self.n_components:
                self._basis = basis.truncate(self.n_components)  # already loaded or rebuilt

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        surrogate = SuperAntibody(model, self.eigenbasis().to(probe.device))
        base = copy.copy(self.inner)
        base.threat = self.threat  # a per-sample budget (--minimal-eps) reaches the base attack
        return base.perturb(surrogate, probe, gallery_emb, dodge, thr)

"""A verification pair list: the one shape every dataset is turned into before evaluation.

Attacks and metrics only see image paths, same/different labels and fold numbers, so adding
a dataset means writing a parser that returns a :class:`PairList` and nothing else.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FacebenchError


def outside_root(path: str) -> str | None:
    """Why ``path`` would leave its image root (absolute, ``..``, NUL), or None when it stays.

    Lexical on purpose: symlinks are not resolved, since a root may legitimately hold links
    to images elsewhere; only what the list itself writes is judged.
    """
    path = str(path)
    if "\0" in path:
        return "contains a NUL character"
    if os.path.isabs(path) or os.path.splitdrive(path)[0]:
        return "is absolute"
    norm = os.path.normpath(path)
    if norm == ".." or norm.startswith(".." + os.sep):
        return "points outside the image root (..)"
    return None


@dataclass
class PairList:
    """Pairs of images with labels; paths are relative to ``root`` and stay inside it."""

    paths_a: list[str]
    paths_b: list[str]
    same: np.ndarray
    fold: np.ndarray
    root: Path
    name: str = field(default="pair-list")

    def __post_init__(self) -> None:
        self.paths_a = [str(p) for p in self.paths_a]
        self.paths_b = [str(p) for p in self.paths_b]
        self.same = np.asarray(self.same, dtype=bool).reshape(-1)
        self.fold = np.asarray(self.fold, dtype=np.int64).reshape(-1)
        self.root = Path(self.root)
        n = len(self.paths_a)
        if not (len(self.paths_b) == len(self.same) == len(self.fold) == n):
            raise ValueError(
                f"PairList {self.name!r}: paths_a, paths_b, same and fold differ in length "
                f"({n}, {len(self.paths_b)}, {len(self.same)}, {len(self.fold)})"
            )

    def __len__(self) -> int:
        return len(self.paths_a)

    def __repr__(self) -> str:
        n_same = int(self.same.sum())
        folds = len(np.unique(self.fold)) if len(self) else 0
        return (
            f"PairList({self.name!r}, {len(self)} pairs: {n_same} same / "
            f"{len(self) - n_same} different, {folds} fold(s), root={str(self.root)!r})"
        )

    def resolve(self, path: str) -> Path:
        """Where an image of this list lives on disk: always under ``root``."""
        problem = outside_root(path)
        if problem:
            raise FacebenchError(f"image path {path!r} of {self.name} {problem}; image paths "
                                 f"must be relative to the image root {self.root}")
        return self.root / path

    def unique_paths(self) -> list[str]:
        """Every image once, in order of first appearance, so each is decoded only once."""
        return list(dict.fromkeys(self.paths_a + self.paths_b))

    def select(self, indices) -> "PairList":
        """The pairs at ``indices`` (in that order), same root and name."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return PairList(
            paths_a=[self.paths_a[i] for i in idx],
            paths_b=[self.paths_b[i] for i in idx],
            same=self.same[idx],
            fold=self.fold[idx],
            root=self.root,
            name=self.name,
        )

    def subset(self, n: int, seed: int = 0) -> "PairList":
        """A seeded subset of ``n`` pairs, half same and half different, spread over folds.

        Cheap runs (attacks are slow) must still measure both error types and keep every
        cross-validation fold populated. An odd ``n`` gives one more different pair than same;
        when one class runs short the other fills the gap so the result still has ``n`` pairs;
        ``n`` at least the list length returns the whole list. Pairs keep their original
        order and fold labels.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise FacebenchError(f"subset size must be an integer, got {n!r}")
        n = int(n)
        if n < 2:
            raise FacebenchError(
                f"subset size must be at least 2 (one same and one different pair), got {n}"
            )
        if n >= len(self):
            return self.select(np.arange(len(self)))
        rng = np.random.default_rng(seed)
        # different pairs visit the folds in reverse order, so the folds that get a spare
        # same pair are the last to get a spare different one: fold sizes stay even too
        folds = rng.permutation(np.unique(self.fold))
        order_same = self._fold_round_robin(np.flatnonzero(self.same), folds, rng)
        order_diff = self._fold_round_robin(np.flatnonzero(~self.same), folds[::-1], rng)
        want_same = n // 2
        want_diff = n - want_same
        take_same = min(want_same, len(order_same))
        take_diff = min(want_diff, len(order_diff))
        short = n - take_same - take_diff
        if short:  # one class ran out: fill from the other
            if take_same < len(order_same):
                take_same = min(len(order_same), take_same + short)
            else:
                take_diff = min(len(order_diff), take_diff + short)
        chosen = np.concatenate([order_same[:take_same], order_diff[:take_diff]])
        return self.select(np.sort(chosen))

    def _fold_round_robin(
        self, indices: np.ndarray, folds: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Shuffle within each fold, then interleave folds so any prefix is fold-balanced."""
        groups = [rng.permutation(indices[self.fold[indices] == f]) for f in folds]
        out = []
        for k in range(max((len(g) for g in groups), default=0)):
            out.extend(int(g[k]) for g in groups if k < len(g))
        return np.asarray(out, dtype=np.int64)

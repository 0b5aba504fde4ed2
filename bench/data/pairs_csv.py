"""A generic pairs dataset: a CSV ``path_a,path_b,same`` over a folder of crops or photos.

This is how users benchmark on their own faces: no parser to write, just a CSV. The crops
are taken as already aligned and only resized to the recognizer's input, unless ``--align``
says otherwise (``detect``: raw photos, the face found and aligned). Image paths
must stay inside the image root: a shared CSV cannot make a run read other files.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import FacebenchError
from .pairs import PairList, outside_root

COLUMNS = ("path_a", "path_b", "same")
_TRUE = {"1", "true"}
_FALSE = {"0", "false"}


def _check_inside(path: str, where: str, line: int, root: Path) -> None:
    """One line naming the CSV line whose image path would leave the image root."""
    problem = outside_root(path)
    if problem:
        raise FacebenchError(f"{where} line {line}: image path {path!r} {problem}; paths "
                             f"must be relative to the image root {root}")


def csv_pairs(pairs_file, image_root=None) -> PairList:
    """Parse ``pairs_file``; paths are relative to ``image_root`` (default: the CSV's folder)."""
    pairs_file = Path(pairs_file).expanduser()
    root = Path(image_root).expanduser() if image_root is not None else pairs_file.parent
    where = pairs_file.name
    try:
        handle = open(pairs_file, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise FacebenchError(f"pairs file not found: {pairs_file}") from None
    except OSError as err:
        reason = err.strerror or err
        raise FacebenchError(f"cannot read pairs file {pairs_file}: {reason}") from None
    paths_a, paths_b, same = [], [], []
    try:
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise FacebenchError(f"{where} is empty; expected a header line path_a,path_b,same")
            header = [h.strip().lower() for h in header]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise FacebenchError(
                    f"{where} line 1: header lacks column(s) {', '.join(missing)}; "
                    f"expected path_a,path_b,same"
                )
            col = {c: header.index(c) for c in COLUMNS}
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                if len(row) < len(header):
                    raise FacebenchError(
                        f"{where} line {line}: expected {len(header)} fields, got {len(row)}"
                    )
                a, b = row[col["path_a"]].strip(), row[col["path_b"]].strip()
                if not a or not b:
                    raise FacebenchError(f"{where} line {line}: empty image path")
                _check_inside(a, where, line, root)
                _check_inside(b, where, line, root)
                flag = row[col["same"]].strip().lower()
                if flag not in _TRUE | _FALSE:
                    raise FacebenchError(
                        f"{where} line {line}: 'same' must be 0, 1, true or false, "
                        f"got {row[col['same']]!r}"
                    )
                paths_a.append(a)
                paths_b.append(b)
                same.append(flag in _TRUE)
    except (csv.Error, UnicodeDecodeError) as err:
        raise FacebenchError(f"{where} is not a readable UTF-8 CSV file: {err}") from None
    if not paths_a:
        raise FacebenchError(f"{where} has a header but no pairs")
    return PairList(
        paths_a=paths_a,
        paths_b=paths_b,
        same=np.array(same, dtype=bool),
        fold=np.zeros(len(same), dtype=np.int64),
        root=root,
        name=f"pairs/{pairs_file.stem}",
    )

"""Labeled Faces in the Wild: strict parsing of the official pair lists and the image layout.

The protocol files are parsed strictly (counts, field numbers, positive image numbers) so a
truncated download or a hand-edited list fails loudly instead of silently shrinking the
benchmark. The layout is scikit-learn's cache: ``lfw_home/{lfw/,pairs*.txt}``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facebench.data.pairs import PairList
from facebench.errors import FacebenchError

PROTOCOLS = {
    "10-fold": "pairs.txt",
    "dev-train": "pairsDevTrain.txt",
    "dev-test": "pairsDevTest.txt",
}
IMAGE_DIR = "lfw"


def check_protocol(protocol: str) -> str:
    """The pairs file name of ``protocol``; an unknown protocol is a user error."""
    if protocol not in PROTOCOLS:
        raise FacebenchError(
            f"unknown LFW protocol {protocol!r}; choose from: {', '.join(PROTOCOLS)}"
        )
    return PROTOCOLS[protocol]


def lfw_home_dir(data_home) -> Path:
    """The ``lfw_home`` folder for ``data_home``, which may be its parent or the folder itself."""
    data_home = Path(data_home).expanduser()
    if (data_home / "lfw_home").is_dir():
        return data_home / "lfw_home"
    if data_home.name == "lfw_home" or (data_home / IMAGE_DIR).is_dir():
        return data_home
    if any((data_home / f).is_file() for f in PROTOCOLS.values()):
        return data_home
    return data_home / "lfw_home"


def image_path(name: str, number: int) -> str:
    """Relative path of LFW image ``number`` (1-based) of person ``name``."""
    return f"{IMAGE_DIR}/{name}/{name}_{number:04d}.jpg"


def _fail(path: Path, line_no: int, message: str) -> FacebenchError:
    return FacebenchError(f"{path.name} line {line_no}: {message} (in {path})")


def _positive_int(text: str, path: Path, line_no: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or not text.isdigit():
        raise _fail(path, line_no, f"{what} must be a positive integer, got {text!r}")
    return value


def parse_pairs_file(path) -> list[tuple[str, int, str, int, bool, int]]:
    """Rows ``(name_a, n_a, name_b, n_b, same, fold)`` of an LFW pairs file.

    The header is ``<folds>\\t<pairs per class>`` (``pairs.txt``) or ``<pairs per class>``
    (the dev files); each fold holds that many same-person lines (``Name n1 n2``) followed
    by that many different-person lines (``NameA n1 NameB n2``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FacebenchError(f"LFW pairs file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FacebenchError(f"cannot read LFW pairs file {path}: {err}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise FacebenchError(f"{path.name} is empty (in {path})")
    header = lines[0].split()
    if len(header) not in (1, 2):
        raise _fail(path, 1, f"expected a header '<folds> <pairs>' or '<pairs>', got {lines[0]!r}")
    numbers = [_positive_int(h, path, 1, "header count") for h in header]
    n_folds, per_class = (numbers if len(numbers) == 2 else [1, numbers[0]])
    expected = n_folds * 2 * per_class
    if len(lines) - 1 != expected:
        raise FacebenchError(
            f"{path.name}: header promises {expected} pairs ({n_folds} fold(s) x "
            f"{per_class} same + {per_class} different) but the file has "
            f"{len(lines) - 1} lines after it (in {path})"
        )
    rows = []
    for i, line in enumerate(lines[1:]):
        line_no = i + 2
        fold, within = divmod(i, 2 * per_class)
        same = within < per_class
        fields = line.split()
        if same:
            if len(fields) != 3:
                raise _fail(
                    path, line_no,
                    f"expected a same-person pair 'Name n1 n2' (3 fields), got {line!r}",
                )
            name, n1, n2 = fields
            rows.append((name, _positive_int(n1, path, line_no, "image number"), name,
                         _positive_int(n2, path, line_no, "image number"), True, fold))
        else:
            if len(fields) != 4:
                raise _fail(
                    path, line_no,
                    f"expected a different-person pair 'NameA n1 NameB n2' (4 fields), "
                    f"got {line!r}",
                )
            name_a, n1, name_b, n2 = fields
            rows.append((name_a, _positive_int(n1, path, line_no, "image number"), name_b,
                         _positive_int(n2, path, line_no, "image number"), False, fold))
    return rows


def lfw_pairs(data_home, protocol: str) -> PairList:
    """The pairs of ``protocol`` with paths relative to ``lfw_home`` (no download here)."""
    fname = check_protocol(protocol)
    home = lfw_home_dir(data_home)
    rows = parse_pairs_file(home / fname)
    return PairList(
        paths_a=[image_path(r[0], r[1]) for r in rows],
        paths_b=[image_path(r[2], r[3]) for r in rows],
        same=np.array([r[4] for r in rows], dtype=bool),
        fold=np.array([r[5] for r in rows], dtype=np.int64),
        root=home,
        name=f"lfw/{protocol}",
    )


def lfw_people(data_home) -> dict[str, list[str]]:
    """Person name -> sorted image paths (relative to ``lfw_home``) found on disk."""
    home = lfw_home_dir(data_home)
    image_dir = home / IMAGE_DIR
    if not image_dir.is_dir():
        raise FacebenchError(f"LFW image folder {IMAGE_DIR}/ is missing under {home}")
    people: dict[str, list[str]] = {}
    with os.scandir(image_dir) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if not entry.is_dir():
                continue
            files = sorted(f for f in os.listdir(entry.path) if f.lower().endswith(".jpg"))
            if files:
                people[entry.name] = [f"{IMAGE_DIR}/{entry.name}/{f}" for f in files]
    if not people:
        raise FacebenchError(f"no LFW images found in {image_dir}")
    return people


def pair_people(data_home, protocol: str) -> set[str]:
    """Everyone named in any pair of ``protocol``."""
    home = lfw_home_dir(data_home)
    rows = parse_pairs_file(home / check_protocol(protocol))
    return {r[0] for r in rows} | {r[2] for r in rows}


def training_split(data_home, protocol: str) -> list[str]:
    """Images (relative to ``lfw_home``) of people in no pair of ``protocol``.

    Defenses that learn something (detectors, purifiers) train here, so they never see an
    identity they are later evaluated on.
    """
    excluded = pair_people(data_home, protocol)
    people = lfw_people(data_home)
    return [p for name, paths in people.items() if name not in excluded for p in paths]

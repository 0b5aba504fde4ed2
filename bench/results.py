"""Tidy result rows and their CSV store.

One row per (run, metric). Appends are atomic (write a temporary copy, fsync, rename), so a run
killed at any moment leaves a valid CSV holding every earlier run.
"""
from __future__ import annotations

import csv
import io
import os
import subprocess
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from .errors import FacebenchError
from .fileio import atomic_write

COLUMNS = [
    "run_id", "started_at", "facebench_version", "git_sha", "dataset", "protocol", "n_pairs",
    "recognizer", "defense", "attack", "threat_model", "budget", "goal", "adaptive", "seed",
    "metric", "value", "wall_s",
]

METRICS = [
    "eer", "tar_at_far_1e-3", "tar_at_far_1e-2", "roc_auc", "acc_at_clean_thr", "asr",
    "accuracy_10fold", "accuracy_10fold_std", "mean_linf", "mean_rel_l2",
]


def git_sha() -> str:
    """Commit of the source tree facebench runs from, '+dirty' if it has local edits."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _check_header(path: Path) -> str:
    """Existing file content, after checking it is a facebench runs CSV."""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return ""
    header = next(csv.reader(io.StringIO(text)))
    if header != COLUMNS:
        raise FacebenchError(
            f"{path} is not a facebench runs CSV (its header differs); pass another --out")
    return text if text.endswith("\n") else text + "\n"


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping]) -> None:
    """Atomically append rows (dicts with exactly COLUMNS) to the CSV at ``path``."""
    path = Path(path)
    rows = list(rows)
    for row in rows:
        if set(row) != set(COLUMNS):
            raise ValueError(f"row has columns {sorted(row)}, expected {COLUMNS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    old = _check_header(path) if path.exists() else ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    if not old:
        writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda fh: fh.write(old + buf.getvalue()), binary=False)


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Load a runs CSV, with a clear error when it is missing or not ours."""
    path = Path(path)
    if not path.exists():
        raise FacebenchError(f"runs file {path} does not exist; run `facebench run` first")
    _check_header(path)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])

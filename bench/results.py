"""Tidy result rows and their CSV store.

One row per (run, metric). An append holds an exclusive lock (``<csv>.lock``) and adds its
lines with one ``O_APPEND`` write, so concurrent runs never lose each other's rows and a run
killed at any moment leaves only whole rows. A cut-off last row left by anything else is
dropped, with a warning, before the next append; ``read_runs`` refuses such a file outright.
"""
from __future__ import annotations

import csv
import errno
import functools
import io
import math
import numbers
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
from filelock import FileLock, Timeout

from .errors import FacebenchError

COLUMNS = [
    "run_id", "started_at", "facebench_version", "git_sha", "dataset", "protocol", "n_pairs",
    "recognizer", "defense", "attack", "threat_model", "budget", "goal", "adaptive", "seed",
    "metric", "value", "wall_s",
]

METRICS = [
    "eer", "tar_at_far_1e-3", "tar_at_far_1e-2", "roc_auc", "acc_at_clean_thr", "asr",
    "accuracy_10fold", "accuracy_10fold_std", "mean_linf", "mean_rel_l2",
]

#: seconds an append waits for another process's append before giving up
LOCK_TIMEOUT_S = 60.0

_HEADER = (",".join(COLUMNS) + "\n").encode("utf-8")
#: a runs CSV's header line must end within this many leading bytes
_HEAD_BYTES = 64 * 1024
_VALUE_AT = COLUMNS.index("value")
#: what older versions wrote for a NaN value; read back as NaN like an empty field
_NAN_WORDS = ("nan", "NaN")
_NA_VALUES = {c: [""] + (list(_NAN_WORDS) if c == "value" else []) for c in COLUMNS}


@functools.lru_cache(maxsize=None)
def git_sha() -> str:
    """Commit of the source tree facebench runs from, '+dirty' if it has local edits.

    Cached per process: runs ask once per row batch, and each ask costs two git calls.
    """
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


# --- shared checks ------------------------------------------------------------------------

def _why(err: OSError, named) -> str:
    """An OSError as a short phrase, naming its file unless that is ``named`` already."""
    reason = err.strerror or str(err)
    if err.filename is None or os.fspath(err.filename) == os.fspath(named):
        return reason
    return f"{reason}: {err.filename}"


def _not_ours(path) -> FacebenchError:
    return FacebenchError(
        f"{path} is not a facebench runs CSV (its header differs); pass another --out")


def _is_header(line: bytes) -> bool:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return next(csv.reader([text]), None) == COLUMNS


def _head_state(path, head: bytes, size: int) -> str:
    """How an existing file starts: 'empty', 'blank', 'cut-header' or 'ours'; else raise.

    Only the first bytes are read, so the check stays cheap however many runs the file holds.
    """
    if size == 0:
        return "empty"
    if size <= len(head) and not head.strip():
        return "blank"
    first, newline, _ = head.partition(b"\n")
    if newline:
        if _is_header(first):
            return "ours"
    elif size <= len(_HEADER) and _HEADER.startswith(head):
        return "cut-header"
    raise _not_ours(path)


# --- appending ----------------------------------------------------------------------------

def _cell(value):
    """NaN as an empty field, the CSV's missing-value spelling (str() would write 'nan')."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        if math.isnan(value):
            return ""
    return value


def _encode(rows) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([_cell(row[c]) for c in COLUMNS])
    return buf.getvalue().encode("utf-8")


def _warn_dropped(path, what: str) -> None:
    print(f"facebench: warning: {path} ended in a cut-off {what} (a process killed "
          f"mid-write?); dropped it before appending", file=sys.stderr)


def _drop_cut_row(path, fd: int, size: int) -> int:
    """Truncate a partial last line (no trailing newline) away; the new size."""
    if os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - _HEAD_BYTES)
        at = os.pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            keep = start + at + 1
            os.ftruncate(fd, keep)
            _warn_dropped(path, "row")
            return keep
        end = start
    raise _not_ours(path)  # unreachable: an 'ours' file has a complete header line


def _prepare(path, fd: int) -> int:
    """Size of the file's whole-row prefix after repairs; 0 means the header is due."""
    size = os.fstat(fd).st_size
    state = _head_state(path, os.pread(fd, _HEAD_BYTES, 0), size)
    if state == "ours":
        return _drop_cut_row(path, fd, size)
    if state != "empty":
        os.ftruncate(fd, 0)
        if state == "cut-header":
            _warn_dropped(path, "header")
    return 0


def _write_once(fd: int, payload: bytes, size: int) -> None:
    """One write syscall, so the new rows land whole; undo a short (disk-full) write."""
    written = os.write(fd, payload)
    if written != len(payload):
        os.ftruncate(fd, size)
        raise OSError(errno.ENOSPC, "short write (disk full?)")
    os.fsync(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a new file's directory entry durable too (best effort: not every OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lock_for(path: Path) -> FileLock:
    lock = path.with_name(path.name + ".lock")
    # Create it here so an unwritable folder is a real OSError now, not a lock timeout later.
    os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o666))
    return FileLock(lock, timeout=LOCK_TIMEOUT_S)


def _append_locked(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        with _lock_for(path):
            size = _prepare(path, fd)
            _write_once(fd, (b"" if size else _HEADER) + data, size)
            if not size:
                _fsync_folder(path.parent)
    finally:
        os.close(fd)


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping]) -> None:
    """Append rows (dicts with exactly COLUMNS) to the CSV at ``path``, safely across processes."""
    path = Path(path)
    rows = list(rows)
    for row in rows:
        if set(row) != set(COLUMNS):
            raise ValueError(f"row has columns {sorted(row)}, expected {COLUMNS}")
    data = _encode(rows)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _append_locked(path, data)
    except Timeout:  # an OSError subclass, so it goes first
        raise FacebenchError(
            f"another facebench process has held the lock on {path} for more than "
            f"{LOCK_TIMEOUT_S:g} s; wait for it or look for a stuck run") from None
    except OSError as err:
        raise FacebenchError(f"cannot append to {path}: {_why(err, path)}") from None


def check_writable(path: str | os.PathLike) -> None:
    """Fail in one line, before a run's heavy work, when its rows could not go to ``path``.

    Creates the parent folder if needed but never the CSV itself.
    """
    path = Path(path)
    if path.is_dir():
        raise FacebenchError(f"{path} is a folder; pass a CSV file path as --out")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FacebenchError(f"cannot create folder {folder} for {path}: a file has that "
                             "name; pass another --out") from None
    except OSError as err:
        raise FacebenchError(f"cannot create folder {folder} for {path}: "
                             f"{_why(err, folder)}; pass another --out") from None
    _probe_folder(folder, path.name)
    if path.exists():
        _check_existing(path)


def _probe_folder(folder: Path, name: str) -> None:
    """Really create a file: permission bits do not stop root, a read-only mount does."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FacebenchError(f"folder {folder} is not writable; pass another --out")
    probe = folder / f".{name}.probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.unlink(probe)
    except OSError as err:
        raise FacebenchError(f"cannot write in folder {folder} ({_why(err, probe)}); "
                             "pass another --out") from None


def _check_existing(path: Path) -> None:
    try:
        with open(path, "r+b") as fh:  # opening for update changes nothing
            head = fh.read(_HEAD_BYTES)
            size = os.fstat(fh.fileno()).st_size
    except OSError as err:
        raise FacebenchError(
            f"cannot write to {path} ({_why(err, path)}); pass another --out") from None
    _head_state(path, head, size)


# --- reading ------------------------------------------------------------------------------

def _runs_text(path: Path) -> str:
    """The whole file as text, after the checks that need no parsing."""
    if path.is_dir():
        raise FacebenchError(f"{path} is a folder, not a runs CSV; pass the CSV file in it")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FacebenchError(
            f"runs file {path} does not exist; run `facebench run` first") from None
    except OSError as err:
        raise FacebenchError(f"cannot read runs file {path}: {_why(err, path)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FacebenchError(f"{path} is not UTF-8 text; is it a runs CSV?") from None
    if not text.strip():
        raise FacebenchError(f"{path} is empty; no runs recorded yet")
    if not _is_header(data.partition(b"\n")[0]):
        raise _not_ours(path)
    if not text.endswith("\n"):
        raise FacebenchError(
            f"{path} line {text.count(chr(10)) + 1} is cut off (a run killed mid-write?); "
            "delete that line or restore the file")
    return text


def _is_number(field: str) -> bool:
    """Whether pandas will read ``field`` as a float (float() alone also takes '1_0', '-nan')."""
    if field == "" or field in _NAN_WORDS:
        return True
    if "_" in field or "nan" in field.lower():
        return False
    try:
        float(field)
    except ValueError:
        return False
    return True


def _check_rows(path: Path, text: str) -> None:
    """Every data row whole and its value a number, or one error naming the line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        next(reader)  # the header, already checked
        for row in reader:
            if not row:
                continue  # a blank line; pandas skips it too
            if len(row) != len(COLUMNS):
                raise FacebenchError(
                    f"{path} line {reader.line_num} has {len(row)} fields, not "
                    f"{len(COLUMNS)}; fix or delete that line")
            if not _is_number(row[_VALUE_AT]):
                raise FacebenchError(
                    f"{path} line {reader.line_num}: value {row[_VALUE_AT]!r} is not a "
                    "number; fix or delete that line")
    except csv.Error as err:
        raise FacebenchError(f"{path} line {reader.line_num} is not valid CSV ({err}); "
                             "fix or delete that line") from None


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Load a runs CSV strictly: a damaged file is one clear error, never a wrong value."""
    path = Path(path)
    text = _runs_text(path)
    _check_rows(path, text)
    return pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=_NA_VALUES)

"""The runs CSV: exact columns, locked appends, strict reads, refusal to clobber, pivots."""
import csv
import math
import multiprocessing
import os
import random
import signal
import stat
import subprocess
import time

import pytest
from filelock import FileLock

from facebench import fileio, results
from facebench.errors import FacebenchError
from facebench.report import pivot_table
from facebench.results import COLUMNS, append_rows, read_runs

#: fork: the children inherit the imported package (spawn would re-import pandas in each)
FORK = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
needs_fork = pytest.mark.skipif(FORK is None, reason="needs os.fork")
HEADER = ",".join(COLUMNS)


def _row(**kw):
    base = dict(run_id="r1", started_at="2026-01-01T00:00:00+00:00", facebench_version="0",
                git_sha="x", dataset="lfw", protocol="dev-test", n_pairs=10,
                recognizer="dlib-resnet", defense="none", attack="none", threat_model="none",
                budget=0.0, goal="none", adaptive="none", seed=0, metric="eer", value=0.1,
                wall_s=1.0)
    base.update(kw)
    return base


def _line(**kw):
    return ",".join(str(v) for v in _row(**kw).values())


def _one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_append_creates_header_then_appends(tmp_path):
    out = tmp_path / "sub" / "runs.csv"
    append_rows(out, [_row()])
    append_rows(out, [_row(run_id="r2", value=0.2)])
    with open(out) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == COLUMNS
    assert [r[0] for r in rows[1:]] == ["r1", "r2"]
    assert read_runs(out)["value"].tolist() == [0.1, 0.2]


def test_row_with_wrong_columns_is_rejected_and_file_untouched(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row()])
    before = out.read_bytes()
    bad = _row()
    del bad["seed"]
    with pytest.raises(ValueError):
        append_rows(out, [bad])
    assert out.read_bytes() == before


def test_foreign_csv_is_not_overwritten(tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(FacebenchError, match="not a facebench runs CSV"):
        append_rows(out, [_row()])
    assert out.read_text() == "a,b\n1,2\n"


def test_failed_write_is_one_error_leaves_previous_content_and_no_temp_files(
        tmp_path, monkeypatch):
    out = tmp_path / "w" / "runs.csv"
    append_rows(out, [_row()])
    before = out.read_bytes()

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(FacebenchError) as err:
        append_rows(out, [_row(run_id="r2")])
    _one_line_error(err, "cannot append to", str(out), "No space left")
    assert out.read_bytes() == before
    assert sorted(os.listdir(out.parent)) == ["runs.csv", "runs.csv.lock"]


def test_append_extends_the_same_file_in_place(tmp_path):
    """An append adds lines to the existing inode instead of rewriting the whole file."""
    out = tmp_path / "runs.csv"
    append_rows(out, [_row()])
    inode = os.stat(out).st_ino
    append_rows(out, [_row(run_id="r2")])
    assert os.stat(out).st_ino == inode


def test_append_keeps_the_csv_mode_and_a_new_csv_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "runs.csv"
        append_rows(out, [_row()])
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
        os.chmod(out, 0o664)
        append_rows(out, [_row(run_id="r2")])
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o664
    finally:
        os.umask(old)


def test_atomic_write_keeps_the_target_mode_and_a_new_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.bin"
        fileio.atomic_write(new, lambda fh: fh.write(b"x"))
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o644
        os.chmod(new, 0o660)
        fileio.atomic_write(new, lambda fh: fh.write(b"y"))
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o660
        assert new.read_bytes() == b"y"
        assert fileio.current_umask() == 0o022
    finally:
        os.umask(old)


def test_append_drops_a_cut_off_last_row_with_a_warning(tmp_path, capsys):
    out = tmp_path / "runs.csv"
    cut = _line(run_id="r2", value=0.2615)[:-8]
    out.write_text(f"{HEADER}\n{_line()}\n{cut}")
    append_rows(out, [_row(run_id="r3")])
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "cut-off row" in warning and str(out) in warning
    assert read_runs(out)["run_id"].tolist() == ["r1", "r3"]


@pytest.mark.parametrize("before, warns", [("", False), (" \n", False), (HEADER[:40], True)])
def test_append_to_an_empty_blank_or_header_cut_file_starts_it_afresh(
        tmp_path, capsys, before, warns):
    out = tmp_path / "runs.csv"
    out.write_text(before)
    append_rows(out, [_row()])
    assert out.read_text() == f"{HEADER}\n{_line()}\n"
    assert ("cut-off header" in capsys.readouterr().err) == warns


def test_nan_value_round_trips_as_a_float(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row(value=math.nan), _row(run_id="r2", value=0.5)])
    df = read_runs(out)
    assert df["value"].dtype == float
    assert math.isnan(df["value"][0]) and df["value"][1] == 0.5


def test_read_accepts_nan_written_by_older_versions(tmp_path):
    out = tmp_path / "runs.csv"
    out.write_text(f"{HEADER}\n{_line(value='nan')}\n{_line(run_id='r2', value=0.3)}\n")
    assert read_runs(out)["value"].dtype == float


@pytest.mark.parametrize("content, words", [
    (f"{HEADER}\n{_line()}\n{_line(run_id='r2', value=0.2615)[:-6]}",
     ["line 3 is cut off", "delete that line"]),
    (f"{HEADER}\n{_line()[:-4]}\n{_line(run_id='r2')}\n", ["line 2 has 17 fields"]),
    (f"{HEADER}\n{_line()},extra\n", ["line 2 has 19 fields"]),
    (f"{HEADER}\n{_line(value='abc')}\n", ["line 2", "'abc' is not a number"]),
    ("", ["is empty", "no runs recorded yet"]),
    ("  \n\n", ["is empty"]),
    (b"\xff\xfe" + "run_id".encode("utf-16-le"), ["is not UTF-8 text"]),
    ("a,b\n1,2\n", ["not a facebench runs CSV"]),
])
def test_read_runs_refuses_a_damaged_file_in_one_line(tmp_path, content, words):
    out = tmp_path / "runs.csv"
    if isinstance(content, bytes):
        out.write_bytes(content)
    else:
        out.write_text(content)
    with pytest.raises(FacebenchError) as err:
        read_runs(out)
    _one_line_error(err, str(out), *words)


def test_read_runs_on_a_folder_or_missing_file_is_one_error(tmp_path):
    with pytest.raises(FacebenchError) as err:
        read_runs(tmp_path)
    _one_line_error(err, "is a folder")
    with pytest.raises(FacebenchError) as err:
        read_runs(tmp_path / "nope.csv")
    _one_line_error(err, "does not exist")


def test_read_runs_keeps_the_pandas_dtypes(tmp_path):
    import pandas as pd

    out = tmp_path / "runs.csv"
    append_rows(out, [_row(), _row(run_id="r2", budget="", value=0.3)])
    plain = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert read_runs(out).equals(plain)
    assert list(read_runs(out).dtypes) == list(plain.dtypes)


def test_append_to_a_folder_or_unwritable_place_is_one_error(tmp_path):
    with pytest.raises(FacebenchError) as err:
        append_rows(tmp_path, [_row()])
    _one_line_error(err, "cannot append to", str(tmp_path))
    if os.path.isdir("/proc/self"):
        with pytest.raises(FacebenchError) as err:
            append_rows("/proc/facebench-test/runs.csv", [_row()])
        _one_line_error(err, "cannot append to")


def test_a_held_lock_times_out_with_one_clear_error(tmp_path, monkeypatch):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row()])
    monkeypatch.setattr(results, "LOCK_TIMEOUT_S", 0.2, raising=False)
    with FileLock(f"{out}.lock"):
        with pytest.raises(FacebenchError) as err:
            append_rows(out, [_row(run_id="r2")])
    _one_line_error(err, "another facebench process", str(out), "0.2 s")
    assert len(read_runs(out)) == 1


def test_check_writable_accepts_a_new_path_without_creating_the_csv(tmp_path):
    out = tmp_path / "new" / "deeper" / "runs.csv"
    results.check_writable(out)
    assert out.parent.is_dir() and os.listdir(out.parent) == []
    append_rows(out, [_row()])
    results.check_writable(out)


@pytest.mark.parametrize("where, words", [
    ("folder", ["is a folder"]),
    ("foreign", ["not a facebench runs CSV"]),
    ("under-a-file", ["cannot create folder", "a file has that name"]),
    ("/proc/facebench-test/runs.csv", ["cannot create folder"]),
    ("/proc/facebench-runs.csv", ["/proc"]),
])
def test_check_writable_refuses_in_one_line(tmp_path, where, words):
    if where.startswith("/proc") and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc")
    out = {"folder": tmp_path, "foreign": tmp_path / "other.csv",
           "under-a-file": tmp_path / "plain" / "runs.csv"}.get(where, where)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    (tmp_path / "plain").write_text("not a folder")
    with pytest.raises(FacebenchError) as err:
        results.check_writable(out)
    _one_line_error(err, *words)
    assert (tmp_path / "other.csv").read_text() == "a,b\n1,2\n"


def _bits_stop_writes(folder) -> bool:
    """False as root with CAP_DAC_OVERRIDE (the usual test container): bits are ignored."""
    os.chmod(folder, 0o555)
    try:
        (folder / "probe").write_text("x")
    except PermissionError:
        return True
    finally:
        os.chmod(folder, 0o755)
    (folder / "probe").unlink()
    return False


_UNPRIVILEGED_CHECK = """
import os, sys
from pathlib import Path
import pytest
from facebench import results
from facebench.errors import FacebenchError
folder, case = Path(sys.argv[1]), sys.argv[2]
if case == "file":
    with pytest.raises(FacebenchError, match="cannot write to"):
        results.check_writable(folder / "runs.csv")
else:
    with pytest.raises(FacebenchError, match="not writable"):
        results.check_writable(folder / "other.csv")
print("ok")
"""


def _run_without_root_override(folder):
    """Root ignores permission bits; without CAP_DAC_OVERRIDE (setpriv) it obeys them."""
    import shutil
    import sys

    setpriv = shutil.which("setpriv")
    assert setpriv, "root and no setpriv: cannot check read-only folders here"
    (folder / "runs.csv").write_text(HEADER + "\n")
    os.chmod(folder / "runs.csv", 0o444)

    def unprivileged(case):
        proc = subprocess.run([setpriv, "--inh-caps=-all", "--bounding-set=-all",
                               sys.executable, "-c", _UNPRIVILEGED_CHECK, str(folder), case],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

    unprivileged("file")
    os.chmod(folder, 0o555)
    try:
        unprivileged("folder")
    finally:
        os.chmod(folder, 0o755)


def test_check_writable_refuses_read_only_folder_and_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if not _bits_stop_writes(folder):
        _run_without_root_override(folder)  # root: the same checks with capabilities dropped
        return
    (folder / "runs.csv").write_text(HEADER + "\n")
    os.chmod(folder / "runs.csv", 0o444)
    try:
        with pytest.raises(FacebenchError, match="cannot write to"):
            results.check_writable(folder / "runs.csv")
        os.chmod(folder, 0o555)
        with pytest.raises(FacebenchError, match="not writable"):
            results.check_writable(folder / "other.csv")
    finally:
        os.chmod(folder, 0o755)


def test_git_sha_is_cached_per_process(monkeypatch):
    calls = []

    def fake_git(args, **kw):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout="abc123\n", stderr="")

    clear = getattr(results.git_sha, "cache_clear", lambda: None)
    clear()
    monkeypatch.setattr(subprocess, "run", fake_git)
    try:
        assert results.git_sha() == results.git_sha() == "abc123+dirty"
        assert len(calls) == 2
    finally:
        clear()


def _append_batches(out, tag, n, all_started):
    all_started.wait(10)  # every writer starts together, for the most contention
    for i in range(n):
        append_rows(out, [_row(run_id=f"{tag}-{i}")])


def _run_all(procs, timeout_s):
    """Start, then join every process within ``timeout_s`` in all; kill any straggler."""
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    return [p.exitcode for p in procs]


@needs_fork
def test_concurrent_appends_keep_every_row(tmp_path):
    out = tmp_path / "runs.csv"
    barrier = FORK.Barrier(4)
    procs = [FORK.Process(target=_append_batches, args=(out, f"p{k}", 25, barrier))
             for k in range(4)]
    assert _run_all(procs, 30) == [0] * 4
    df = read_runs(out)
    assert len(df) == 100 and df["run_id"].is_unique


def _append_until_killed(out, tag, started):
    for i in range(100_000):  # bounded; the test kills it long before
        append_rows(out, [_row(run_id=f"{tag}-{i}-{k}", value=i + k / 10) for k in range(3)])
        started.set()


@needs_fork
def test_kill_9_mid_append_leaves_only_whole_rows(tmp_path):
    out = tmp_path / "runs.csv"
    rng = random.Random(0)
    count = 0
    for round_ in range(5):
        started = FORK.Event()
        p = FORK.Process(target=_append_until_killed, args=(out, f"k{round_}", started))
        p.start()
        try:
            assert started.wait(10), "writer never appended"
            time.sleep(rng.uniform(0, 0.05))
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.join(5)
        df = read_runs(out)
        assert len(df) >= count + 3 and df["run_id"].is_unique
        count = len(df)


def test_pivot_latest_run_per_cell_in_paper_order(tmp_path):
    out = tmp_path / "runs.csv"
    t1, t2 = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"
    append_rows(out, [
        _row(run_id="a", started_at=t1, attack="none", value=0.01),
        _row(run_id="a", started_at=t1, attack="pgd", threat_model="rel-l2", budget=0.04,
             goal="pair", value=0.5),
        _row(run_id="b", started_at=t2, attack="none", value=0.02),
        _row(run_id="b", started_at=t2, attack="pgd", threat_model="rel-l2", budget=0.04,
             goal="pair", value=0.9),
        _row(run_id="c", started_at=t2, attack="fgsm", threat_model="rel-l2", budget=0.04,
             goal="pair", value=0.3),
        _row(run_id="d", started_at=t2, attack="pgd", threat_model="rel-l2", budget=0.04,
             goal="pair", adaptive="plain", value=0.99),
        _row(run_id="c", started_at=t2, attack="fgsm", metric="asr", value=0.7),
    ])
    md = pivot_table(str(out), metric="eer", out=str(tmp_path / "t.md"),
                     filters={"adaptive": "none"})
    header = [l for l in md.splitlines() if l.startswith("| Defense")][0]
    assert header == "| Defense | Clean | fgsm | pgd |"
    body = [l for l in md.splitlines() if l.startswith("| none")][0]
    assert body == "| none | 2.00% | 30.00% | 90.00% |"
    assert (tmp_path / "t.md").read_text() == md
    adaptive = pivot_table(str(out), metric="eer", filters={"adaptive": "any"})
    assert [l for l in adaptive.splitlines() if l.startswith("| none")] == [
        "| none | 2.00% | 99.00% |"]


def test_pivot_unknown_metric_is_a_clear_error(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row()])
    with pytest.raises(FacebenchError, match="no rows with metric 'nope'"):
        pivot_table(str(out), metric="nope")

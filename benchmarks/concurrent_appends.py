"""Soak test of the runs CSV: many concurrent appenders, and appenders killed with SIGKILL.

What it checks:
(a) ``--procs`` processes each append ``--appends`` single-row batches to one CSV at once;
    afterwards exactly procs × appends data rows must be there, every row must parse
    (``read_runs`` is strict) and every run_id must be distinct. Before the lock was added,
    2 processes × 200 appends lost 180 of 400 rows.
(b) ``--rounds`` times, a writer appends multi-row batches in a loop and is SIGKILLed after a
    seeded random delay; after each kill ``read_runs`` must accept the file (only whole rows)
    and the row count must never shrink.

Everything is bounded (loop counts, waits, joins), so a broken lock fails instead of hanging.
Usage: ``python benchmarks/concurrent_appends.py [--procs 20 --appends 50 --rounds 30]``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from facebench.errors import FacebenchError
from facebench.results import append_rows, read_runs

#: seconds any one wait may take before the soak gives up and reports a failure
WAIT_S = 60.0


def _row(run_id: str, value: float) -> dict:
    return dict(run_id=run_id, started_at="2026-01-01T00:00:00+00:00", facebench_version="0",
                git_sha="soak", dataset="lfw", protocol="dev-test", n_pairs=10,
                recognizer="dlib-resnet", defense="none", attack="pgd", threat_model="linf",
                budget=0.03, goal="pair", adaptive="none", seed=0, metric="eer", value=value,
                wall_s=1.0)


def _context():
    """fork where there is one: children start at once, without re-importing pandas."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _appender(out: str, tag: str, n: int, barrier) -> None:
    barrier.wait(WAIT_S)
    for i in range(n):
        append_rows(out, [_row(f"{tag}-{i}", i / n)])


def _join_all(procs, timeout_s: float) -> list:
    """Exit codes after joining within ``timeout_s`` in all; stragglers are killed (None)."""
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
            codes.append(None)
        else:
            codes.append(p.exitcode)
    return codes


def concurrent(folder: Path, procs: int, appends: int) -> bool:
    """Part (a); prints one line and says whether it passed."""
    ctx, out = _context(), folder / "concurrent.csv"
    barrier = ctx.Barrier(procs)
    workers = [ctx.Process(target=_appender, args=(str(out), f"p{k}", appends, barrier))
               for k in range(procs)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    codes = _join_all(workers, WAIT_S * 2)
    wall = time.perf_counter() - t0
    want = procs * appends
    try:
        df = read_runs(out)
        rows, distinct, parse = len(df), df["run_id"].nunique(), "all rows parse"
    except FacebenchError as err:
        rows, distinct, parse = -1, -1, f"read_runs failed: {err}"
    bad = [c for c in codes if c != 0]
    ok = not bad and rows == want and distinct == want
    print(f"concurrent: {procs} processes x {appends} appends -> {rows}/{want} rows, "
          f"{distinct} distinct run_ids, {parse}, {len(bad)} failed workers; "
          f"{wall:.2f} s wall ({want / wall:.0f} appends/s)  {'OK' if ok else 'FAIL'}")
    return ok


def _writer(out: str, tag: str, batch: int, started) -> None:
    for i in range(1_000_000):  # bounded; the soak kills it within a second
        append_rows(out, [_row(f"{tag}-{i}-{k}", i + k / batch) for k in range(batch)])
        started.set()


def _ends_whole(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _one_kill(ctx, out: Path, tag: str, batch: int, delay: float) -> None:
    started = ctx.Event()
    p = ctx.Process(target=_writer, args=(str(out), tag, batch, started))
    p.start()
    try:
        if not started.wait(WAIT_S):
            raise RuntimeError(f"writer {tag} never appended")
        time.sleep(delay)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(WAIT_S)


def kill9(folder: Path, rounds: int, batch: int, seed: int) -> bool:
    """Part (b); prints one line and says whether it passed."""
    ctx, out, rng = _context(), folder / "killed.csv", random.Random(seed)
    counts, cut, problem = [0], 0, ""
    t0 = time.perf_counter()
    for r in range(rounds):
        try:
            _one_kill(ctx, out, f"k{r}", batch, rng.uniform(0.0, 0.2))
            cut += not _ends_whole(out)
            df = read_runs(out)
        except (FacebenchError, RuntimeError) as err:
            problem = f"round {r}: {err}"
            break
        if len(df) < counts[-1] or not df["run_id"].is_unique:
            problem = f"round {r}: {len(df)} rows after {counts[-1]}, or duplicate run_ids"
            break
        counts.append(len(df))
    wall = time.perf_counter() - t0
    grown = [b - a for a, b in zip(counts, counts[1:])] or [0]
    ok = not problem and len(counts) == rounds + 1
    detail = problem or (f"rows 0 -> {counts[-1]} (+{min(grown)}..+{max(grown)} per round, "
                         f"never shrank), file ended mid-row after {cut} kills")
    print(f"kill -9: {rounds} rounds of {batch}-row batches, seed {seed}: {detail}; "
          f"{wall:.2f} s wall  {'OK' if ok else 'FAIL'}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=20)
    ap.add_argument("--appends", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=5, help="rows per append in the kill test")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="facebench-soak-") as tmp:
        ok_a = concurrent(Path(tmp), args.procs, args.appends)
        ok_b = kill9(Path(tmp), args.rounds, args.batch, args.seed)
    return 0 if ok_a and ok_b else 1


if __name__ == "__main__":
    sys.exit(main())

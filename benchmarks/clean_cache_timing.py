"""The same clean evaluation twice: how much of it the clean-embedding cache saves.

Runs ``facebench run --attack none ARGS...`` twice as separate processes with a fresh,
empty clean-embedding cache (the aligned-crop and eigenbasis caches of the default cache
folder are linked in, so the first run does not re-align the images), checks that both wrote
the same metric values, and prints each run's clean-stage time (the ``wall_s`` of its rows)
and whole-process time.

    python benchmarks/clean_cache_timing.py --dataset lfw-sample --pairs 100
    python benchmarks/clean_cache_timing.py --dataset lfw --protocol 10-fold --data-home DIR
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SHARED = ("aligned", "eigen", "quilting")  # content-keyed caches the runs may share


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from facebench.paths import cache_root

    root = cache_root()
    with tempfile.TemporaryDirectory(prefix="facebench-clean-timing-") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        for kind in SHARED:
            if (root / kind).is_dir():
                (cache / kind).symlink_to(root / kind, target_is_directory=True)
        out = Path(tmp) / "runs.csv"
        env = dict(os.environ, FACEBENCH_CACHE=str(cache))
        cmd = [sys.executable, "-m", "facebench.cli", "run", "--attack", "none", "--quiet",
               "--out", str(out), *args]
        walls = []
        for _ in range(2):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            walls.append(time.perf_counter() - t0)
        rows = pd.read_csv(out)
    runs = list(dict.fromkeys(rows["run_id"]))
    if len(runs) != 2:
        print(f"expected 2 runs in the CSV, found {len(runs)}", file=sys.stderr)
        return 1
    first, second = (rows[rows["run_id"] == r].set_index("metric")["value"] for r in runs)
    clean = [float(rows[rows["run_id"] == r]["wall_s"].iloc[0]) for r in runs]
    same = first.equals(second)
    print(f"facebench run --attack none {' '.join(args)}")
    print(f"{'':<8}{'clean stage s':>14}{'process s':>11}")
    for name, c, w in zip(("first", "second"), clean, walls):
        print(f"{name:<8}{c:>14.3f}{w:>11.2f}")
    print(f"clean stage {clean[0] / max(clean[1], 1e-9):.1f}x faster the second time, "
          f"process {walls[0] / walls[1]:.2f}x; metrics "
          f"{'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

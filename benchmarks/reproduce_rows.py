"""Run a fixed set of configurations and write their metric values, to show that a refactor
reproduces them (same seed, same data): `--out before.csv`, change the code, `--out after.csv`,
then `--compare before.csv after.csv`.

    python benchmarks/reproduce_rows.py --data-home FOLDER_WITH_lfw_home --out before.csv
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

CONFIGS = {
    "clean-10fold": dict(protocol="10-fold", attack="none"),
    "pgd-none": dict(protocol="dev-test", pairs=50, attack="pgd", attack_params={"steps": 10}),
    "deepfool-jpeg": dict(protocol="dev-test", pairs=50, attack="deepfool", defense="jpeg"),
    "fgsm-side": dict(protocol="dev-test", pairs=20, attack="fgsm", defense="side"),
    "pgd-side": dict(protocol="dev-test", pairs=20, attack="pgd", defense="side",
                     attack_params={"steps": 5}),
    "adaptive-pgd-jpeg": dict(protocol="dev-test", pairs=20, attack="pgd", defense="jpeg",
                              adaptive=True, attack_params={"steps": 5}),
    "a-star-fgsm-side": dict(protocol="dev-test", pairs=20, attack="a-star", defense="side",
                             attack_params={"base": "fgsm"}),
}


def run_all(data_home, names) -> pd.DataFrame:
    import facebench

    frames = []
    for name in names:
        t0 = time.perf_counter()
        df = facebench.run(dataset="lfw", data_home=data_home, out=None, progress=False,
                           adv_cache=False, seed=0, **CONFIGS[name])
        frames.append(df.assign(config=name)[["config", "defense", "attack", "adaptive",
                                              "metric", "value"]])
        print(f"{name}: {len(df)} rows, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return pd.concat(frames, ignore_index=True)


def compare(a_path, b_path) -> int:
    a, b = pd.read_csv(a_path), pd.read_csv(b_path)
    keys = ["config", "defense", "attack", "adaptive", "metric"]
    both = a.merge(b, on=keys, how="outer", suffixes=("_before", "_after"), indicator=True)
    diff = (both["value_before"] - both["value_after"]).abs()
    same_nan = both["value_before"].isna() & both["value_after"].isna()
    bad = both[(both["_merge"] != "both") | ((diff > 1e-6) & ~same_nan)]
    for config, rows in both.groupby("config", sort=False):
        worst = diff[rows.index].max()
        print(f"{config}: {len(rows)} metrics, max |before - after| = {worst:.2e}")
    print("identical to 1e-6" if bad.empty else f"{len(bad)} metrics differ:\n{bad}")
    return 0 if bad.empty else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-home")
    ap.add_argument("--out")
    ap.add_argument("--only", nargs="*", default=list(CONFIGS))
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    run_all(args.data_home, args.only).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

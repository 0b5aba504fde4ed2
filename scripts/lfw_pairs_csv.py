"""Write an LFW protocol's pairs as a ``path_a,path_b,same`` CSV over the original photos.

The ``pairs`` dataset then reads LFW's 250x250 frames like anyone's own photos, so
``--align detect`` can be checked against the LFW protocol on the same pairs:

    python scripts/lfw_pairs_csv.py --protocol dev-test --out devtest.csv
    facebench run --dataset pairs --pairs-file devtest.csv --image-root <lfw_home> \\
        --align detect --recognizer sface --attack none
"""
from __future__ import annotations

import argparse
import csv

from facebench.data import load_pairs, resolve_data_home


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="dev-test")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-home")
    args = ap.parse_args(argv)
    pairs = load_pairs("lfw", args.protocol, data_home=resolve_data_home(args.data_home),
                       download=False)
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["path_a", "path_b", "same"])
        for a, b, same in zip(pairs.paths_a, pairs.paths_b, pairs.same):
            out.writerow([a, b, int(same)])
    print(f"{len(pairs)} pairs of LFW {args.protocol} -> {args.out} (paths relative to "
          f"{pairs.root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

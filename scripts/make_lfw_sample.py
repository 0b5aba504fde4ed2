"""Build the embedded LFW sample (`datasets/lfw_sample/`) from a local LFW copy.

The sample is the seeded, balanced 100-pair subset of LFW dev-test that `--pairs 100 --seed 0`
selects, with the JPEGs copied byte for byte: any recognizer's own aligner runs on them, and
a run on the sample gives exactly the numbers of the same 100 pairs of the full LFW.
Dev-test's people are held out of every shipped learned defense's training split.

    python scripts/make_lfw_sample.py --data-home FOLDER_WITH_lfw_home
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
from pathlib import Path

from facebench.data import load_pairs

OUT = Path(__file__).resolve().parents[1] / "datasets" / "lfw_sample"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-home", required=True)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pairs = load_pairs("lfw", "dev-test", args.data_home, download=False)
    sub = pairs.subset(args.pairs, args.seed)
    files = {}
    for rel in sub.unique_paths():
        src = sub.resolve(rel)
        dst = OUT / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        files[rel] = hashlib.sha256(dst.read_bytes()).hexdigest()
    with open(OUT / "pairs.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path_a", "path_b", "same"])
        for a, b, s in zip(sub.paths_a, sub.paths_b, sub.same):
            w.writerow([a, b, int(s)])
    manifest = {"source": "LFW pairsDevTest.txt", "protocol": "dev-test",
                "selection": f"PairList.subset({args.pairs}, seed={args.seed})",
                "n_pairs": len(sub), "n_same": int(sub.same.sum()), "files": files,
                "pairs_csv_sha256": hashlib.sha256((OUT / "pairs.csv").read_bytes()).hexdigest()}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    size = sum((OUT / f).stat().st_size for f in files)
    print(f"{len(sub)} pairs, {len(files)} images, {size / 1e6:.2f} MB in {OUT.name}/")


if __name__ == "__main__":
    main()

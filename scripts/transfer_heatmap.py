"""Heatmap of a transfer matrix (rows: crafted on, columns: scored on) from the runs CSV.

The cells are exactly those of ``facebench table --layout transfer-matrix`` (same rows,
same newest-run rule), so the figure and the table cannot disagree:

    python scripts/transfer_heatmap.py --runs results/runs.csv --attack pgd --metric asr \\
        --dataset lfw --protocol dev-test --n-pairs 200 --threat-model rel-l2 --budget 0.04 \\
        --goal pair --out results/transfer_matrix_pgd_asr.png
"""
from __future__ import annotations

import argparse

import numpy as np

from facebench.registry import LAYOUTS
from facebench.results import read_runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--metric", default="asr")
    for flag in ("attack", "defense", "dataset", "protocol", "threat-model", "goal"):
        ap.add_argument(f"--{flag}")
    ap.add_argument("--budget", type=float)
    ap.add_argument("--n-pairs", type=int)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    LAYOUTS.get("transfer-matrix")  # loads the layout plugins
    from facebench.layouts.recognizers import transfer_cells

    filters = dict(attack=args.attack, defense=args.defense or "none", dataset=args.dataset,
                   protocol=args.protocol, threat_model=args.threat_model, budget=args.budget,
                   goal=args.goal, n_pairs=args.n_pairs)
    sources, targets, cell, config, note = transfer_cells(read_runs(args.runs), args.metric,
                                                          filters)
    values = cell.to_numpy(dtype=float)
    scale = 100.0 if args.metric in ("asr", "eer") or args.metric.startswith("tar_") else 1.0
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(targets), 1.2 + 1.0 * len(sources)))
    image = ax.imshow(values * scale, cmap="magma", vmin=0, vmax=scale, aspect="auto")
    for i in range(len(sources)):
        for j in range(len(targets)):
            v = values[i, j]
            text = "–" if np.isnan(v) else (f"{v * scale:.0f}%" if scale == 100 else f"{v:.3f}")
            dark = np.isnan(v) or v * scale > 0.6 * scale
            ax.text(j, i, text, ha="center", va="center", color="black" if dark else "white")
    ax.set_xticks(range(len(targets)), targets)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("scored on (target)")
    ax.set_ylabel("crafted on (source)")
    ax.set_title(f"{config['attack']} {config['threat_model']} {config['budget']}, "
                 f"{args.metric}\n{config['dataset']} {config['protocol']}, "
                 f"{config['n_pairs']} pairs", fontsize=9)
    fig.colorbar(image, ax=ax, label=args.metric + (" (%)" if scale == 100 else ""))
    fig.tight_layout()
    fig.savefig(args.out, dpi=110, metadata={"Software": None})
    print(f"{args.out}: {len(sources)} x {len(targets)} ({note})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Queries per second of the evolutionary attack against the recognizer's bare forward limit.

One process, the same dodging probes of LFW dev-test (genuine pairs, the first ``--probes``),
the same query budget per probe, for each ``candidates`` L (L = 1 is the paper's (1+1)
search; L > 1 queries L candidates per probe in one forward). Printed per L: wall time,
queries/s, the bare forward's images/s at the same batch (probes x L) and their ratio
(what the search's own arithmetic costs, also shown as the share of the wall time spent inside
the recognizer's forward), and the mean MSE to the clean probe after the
budget (what the budget bought: a larger L spends it on fewer sequential steps).

    python benchmarks/evolutionary_queries.py --threads 2 --probes 4 --queries 1000
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


class TimedModel(torch.nn.Module):
    """The recognizer, adding up the seconds spent in its forward calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seconds = inner, 0.0

    def forward(self, x):
        t0 = time.perf_counter()
        out = self.inner(x)
        self.seconds += time.perf_counter() - t0
        return out


def forward_rate(rec, x: torch.Tensor, batch: int, repeats: int = 5) -> float:
    """Images per second of the bare recognizer's forward at ``batch`` (median of repeats)."""
    xb = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch]
    with torch.no_grad():
        rec(xb)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rec(xb)
            times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recognizer", default="dlib-resnet")
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--queries", type=int, default=1000, help="per probe (a multiple of each L)")
    ap.add_argument("--candidates", default="1,2,4,8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-home")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from facebench import metrics as M
    from facebench.attacks.evolutionary import Evolutionary
    from facebench.data import pair_images
    from facebench.dataset import load_dataset
    from facebench.embed import to_float
    from facebench.runner import load_recognizer
    from facebench.threat import ThreatModel

    rec = load_recognizer(args.recognizer)
    ds = load_dataset("lfw")
    pairs = ds.pairs("dev-test", data_home=args.data_home, download=False)
    genuine = [i for i, same in enumerate(pairs.same) if same][:args.probes]
    pairs = pairs.select(genuine)
    images, ia, ib = pair_images(pairs, ds.aligner(rec), progress=False)
    x = to_float(images, "cpu")
    with torch.no_grad():
        emb = torch.nn.functional.normalize(rec(x), dim=1)
    probes, gallery = x[ia], emb[ib]
    # a threshold from the dev-test pairs would need every image; the genuine scores here
    # set one just below the lowest, so every clean probe is accepted and can be dodged
    thr = float(M.cosine_similarity(emb[ia], emb[ib]).min()) - 1e-3
    dodge = torch.ones(len(probes), dtype=torch.bool)
    print(f"evolutionary on {args.recognizer}: {len(probes)} dodging dev-test probes x "
          f"{args.queries} queries, {torch.get_num_threads()} thread(s)")
    print(f"{'L':>3s} {'wall s':>8s} {'queries/s':>10s} {'bare fwd img/s':>15s} "
          f"{'fraction':>9s} {'in model':>9s} {'MSE at budget':>14s}")
    for L in (int(v) for v in args.candidates.split(",")):
        att = Evolutionary(ThreatModel("rel-l2"), budgets=(args.queries,), candidates=L,
                           seed=0, progress=False)
        att.reset_records()
        timed = TimedModel(rec)
        t0 = time.perf_counter()
        att.perturb(timed, probes, gallery, dodge, thr)
        wall = time.perf_counter() - t0
        rate = len(probes) * args.queries / wall
        limit = forward_rate(rec, probes, len(probes) * L)
        mse = float(np.nanmean(att.recorded(f"mse_at_{args.queries}")))
        print(f"{L:3d} {wall:8.1f} {rate:10.1f} {limit:15.1f} {rate / limit:9.2f} "
              f"{timed.seconds / wall:9.0%} {mse:14.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

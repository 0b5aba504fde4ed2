"""Does ``torch.compile`` make a recognizer's attack step faster on this CPU?

Times one forward + input-backward (the cost of a PGD step) of the recognizer as facebench
runs it, of its layer-by-layer reference, and of that reference compiled by
``torch.compile`` (inductor), on one batch of random pixels in facebench's layout, and checks
that the compiled one gives the same embeddings and input gradients. facebench ships no
compiled path unless this shows a win (README, Benchmarks).

    python benchmarks/compile_probe.py --threads 2
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn


def step(model, x, g):
    """One forward + input-backward of the cosine to ``g``: what an attack step costs."""
    def run():
        xg = x.detach().requires_grad_(True)
        cos = nn.functional.cosine_similarity(model(xg), g, dim=1)
        return torch.autograd.grad(cos.sum(), xg)[0]
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recognizer", default="dlib-resnet")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import facebench
    from facebench.embed import to_float

    gen = torch.Generator().manual_seed(0)
    rec = facebench.load_recognizer(args.recognizer)
    h, w = rec.input_size
    pixels = torch.randint(0, 256, (args.batch_size, h, w, 3), generator=gen, dtype=torch.uint8)
    x = to_float(pixels.numpy())
    with torch.no_grad():
        dim = rec(x[:1]).shape[1]
    g = nn.functional.normalize(torch.randn(args.batch_size, dim, generator=gen), dim=1)
    reference = copy.deepcopy(rec)
    if hasattr(reference, "fast"):
        reference.fast = False  # the plain layer chain: what inductor can fuse
    t0 = time.perf_counter()
    compiled = torch.compile(reference)
    got = step(compiled, x, g)()
    print(f"torch.compile + first step: {time.perf_counter() - t0:.1f} s")
    want = step(rec, x, g)()
    with torch.no_grad():
        emb = (compiled(x) - rec(x)).abs().max().item()
    print(f"compiled vs facebench: max |embedding diff| {emb:.2e}, "
          f"max |input-gradient diff| {(got - want).abs().max().item():.2e}")
    entries = {"facebench": step(rec, x, g), "reference": step(reference, x, g),
               "compiled reference": step(compiled, x, g)}
    times = {}
    for _ in range(args.repeats):
        for name, run in entries.items():  # interleaved: load drift hits all alike
            t = time.perf_counter()
            run()
            times.setdefault(name, []).append(time.perf_counter() - t)
    base = statistics.median(times["facebench"])
    print(f"{args.recognizer}, batch {args.batch_size}, {torch.get_num_threads()} thread(s); "
          f"forward + input-backward, median of {args.repeats}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"  {name:20s} {1000 * t:8.1f} ms  {t / base:5.2f}x facebench")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

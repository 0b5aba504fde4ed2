"""What a learned purifier costs per image, in forwards of the recognizer it protects.

One process, interleaved rounds, the same batch of real LFW dev-test crops: the bare
recognizer's forward; SIDE (or PIN) purify + recognizer as the runner embeds clean images;
the pieces of the purifier (analyzer in NCHW and in channels_last, the eigenface
projection). The issue's budget is 12 recognizer forwards per image (k = 10 clones + one);
SIDE's inference draws one antibody, so it is one analyzer pass, one projection and one
recognizer forward.

    python benchmarks/defense_inference.py --threads 1 --defense side --images 32
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defense", default="side")
    ap.add_argument("--recognizer", default="dlib-resnet")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-home")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from facebench.data import pair_images
    from facebench.dataset import load_dataset
    from facebench.defenses.eigen.faces import rgb_to_face
    from facebench.embed import to_float
    from facebench.plan import build_defense
    from facebench.runner import load_recognizer

    rec = load_recognizer(args.recognizer)
    ds = load_dataset("lfw")
    pairs = ds.pairs("dev-test", data_home=args.data_home, download=False).subset(
        max(2, args.images // 2), 0)
    images, _, _ = pair_images(pairs, ds.aligner(rec), progress=False)
    with torch.inference_mode():  # as the runner's clean pass makes them: inference tensors,
        x = to_float(images[:args.images], "cpu")  # which the purifier never serves from
        # the selection it holds for EOT (repeats of one batch would skip the analyzer)
    defense = build_defense(args.defense, {}, args.data_home, "dev-test", progress=False)
    purifier = defense.wrap(rec).eval()
    gray = rgb_to_face(x, defense.face_size)
    model_cl = defense.model
    model_nchw = copy.deepcopy(model_cl).to(memory_format=torch.contiguous_format)
    batches = lambda t: t.split(args.batch_size)  # noqa: E731

    def run(fn):
        def go():
            with torch.inference_mode():
                for part in batches(x):
                    fn(part)
        return go

    entries = {
        "recognizer forward": run(rec),
        f"{args.defense} + recognizer (the runner's clean pass)": run(purifier),
        "analyzer, NCHW": lambda: [model_nchw(g) for g in batches(gray)],
        "analyzer, channels_last": lambda: [
            model_cl(g.contiguous(memory_format=torch.channels_last)) for g in batches(gray)],
        "eigenface projection": lambda: [
            defense.basis.project(g, torch.ones(len(g), defense.basis.k)) for g in batches(gray)],
    }
    with torch.inference_mode():
        times = {name: timed(fn, args.repeats) / len(x) for name, fn in entries.items()}
    base = times["recognizer forward"]
    print(f"{args.defense} on {args.recognizer}, {len(x)} dev-test crops, batch "
          f"{args.batch_size}, {torch.get_num_threads()} thread(s)")
    print(f"{'':55s} {'ms/img':>8s} {'x forward':>10s}")
    for name, t in times.items():
        print(f"{name:55s} {1000 * t:8.2f} {t / base:10.2f}")
    n = 1900  # distinct images of the 1000 dev-test pairs
    full = times[f"{args.defense} + recognizer (the runner's clean pass)"] * n
    print(f"-> clean dev-test (~{n} images) through {args.defense}: ~{full / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

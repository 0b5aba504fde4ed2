"""Choose the fixed LFW crop for a recognizer by verification accuracy on dev-train only.

Decodes the dev-train images once, then for each candidate square box (centre x, centre y,
side, in 250x250 LFW-frame pixels) crops, embeds and scores all dev-train pairs, printing EER
and best-threshold accuracy. dev-test and the 10 folds of pairs.txt are never looked at, so the
choice does not leak into the reported numbers.

Usage: python scripts/choose_alignment.py --data-home ../shared/data
       [--centres-y 131,135,139] [--sizes 106,114,122] [--centre-x 126]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import facebench
from facebench import metrics as M
from facebench.data import load_pairs, load_image
from facebench.data.align import CENTER_BOX, FixedCrop
from facebench.embed import embed_images


def _floats(text: str):
    return [float(v) for v in text.split(",") if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-home", default=None)
    ap.add_argument("--recognizer", default="dlib-resnet")
    ap.add_argument("--centre-x", type=float, default=126.0)
    ap.add_argument("--centres-y", type=_floats, default=_floats("131,135,139"))
    ap.add_argument("--sizes", type=_floats, default=_floats("106,114,122"))
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    pairs = load_pairs("lfw", "dev-train", args.data_home)
    paths = pairs.unique_paths()
    index = {p: i for i, p in enumerate(paths)}
    ia = np.array([index[p] for p in pairs.paths_a])
    ib = np.array([index[p] for p in pairs.paths_b])
    photos = [load_image(pairs.resolve(p)) for p in paths]
    model = facebench.load_recognizer(args.recognizer)
    size = model.input_size

    boxes = [("center-150", CENTER_BOX)]
    for cy in args.centres_y:
        for s in args.sizes:
            boxes.append((f"c=({args.centre_x:g},{cy:g}) s={s:g}",
                          (args.centre_x - s / 2, cy - s / 2, s, s)))
    print(f"dev-train: {len(pairs.same)} pairs, {len(paths)} images, recognizer {args.recognizer}")
    print(f"{'box':<24} {'left,top,w,h':<26} {'acc':>7} {'eer':>7} {'s':>5}")
    for label, box in boxes:
        t0 = time.perf_counter()
        crop = FixedCrop(box, size)
        chips = np.stack([crop(p) for p in photos])
        emb = embed_images(model, chips, args.batch_size, progress=False)
        scores = M.cosine_similarity(emb[ia], emb[ib]).numpy()
        thr = M.best_threshold(scores, pairs.same)
        acc = M.accuracy_at(scores, pairs.same, thr)
        eer, _ = M.eer(scores, pairs.same)
        coords = ",".join(f"{v:g}" for v in box)
        print(f"{label:<24} {coords:<26} {acc:7.4f} {eer:7.4f} {time.perf_counter() - t0:5.0f}",
              flush=True)


if __name__ == "__main__":
    main()

"""Fit a detector-following box to a fixed LFW box: how ``facenet-detect`` was chosen.

A fixed box of the 250x250 LFW frame (``facenet-160``'s, chosen on dev-train) works because
Viola-Jones centred every LFW face; photos that are not LFW frames need the box to follow
the face. This measures, on dev-train frames only, where the fixed box sits relative to the
YuNet box of the centre face: centre offset (a, b) and size (kx, ky), all in units of the
YuNet box width, as medians. A detected box (x, y, w, h) then maps to a crop box with centre
(x + w/2 + a*w, y + h/2 + b*w) and size (kx*w, ky*w): on a typical LFW frame that is the
fixed box again.

    python scripts/fit_detect_box.py [--images 400] [--box 70,62,110,126]
"""
from __future__ import annotations

import argparse
import random

import numpy as np

from facebench.data import load_image, resolve_data_home
from facebench.datasets.lfw import image_path, lfw_home_dir, parse_pairs_file
from facebench.models._detect_align import choose
from facebench.models._yunet import YuNet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--box", default="70,62,110,126", help="left,top,width,height (250 frame)")
    ap.add_argument("--data-home")
    args = ap.parse_args(argv)
    left, top, width, height = (float(v) for v in args.box.split(","))
    home = lfw_home_dir(resolve_data_home(args.data_home))
    names = sorted({image_path(name, n) for name_a, n_a, name_b, n_b, _, _ in
                    parse_pairs_file(home / "pairsDevTrain.txt")
                    for name, n in ((name_a, n_a), (name_b, n_b))})
    random.Random(0).shuffle(names)
    detector = YuNet()
    rows = []
    for rel in names[:args.images]:
        img = load_image(home / rel)
        face = choose(detector.detect(img), img.shape, "center")
        if face is None:
            continue
        x, y, w, h = (float(v) for v in face[:4])
        rows.append(((left + width / 2 - (x + w / 2)) / w, (top + height / 2 - (y + h / 2)) / w,
                     width / w, height / w))
    a, b, kx, ky = np.median(np.array(rows), axis=0)
    print(f"{len(rows)} of {args.images} dev-train frames with a face; "
          f"a={a:.3f} b={b:.3f} kx={kx:.3f} ky={ky:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

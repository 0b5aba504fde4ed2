"""Estimate where dlib's 150x150 chips sit in the 250x250 LFW frame.

The reference chips in ``shared/fixtures/dlib_reference`` were cut by dlib (HOG detection +
5-point alignment) from the very LFW photos we crop. For each chip this searches the axis-aligned
square box of the LFW photo that, resized to 150x150, best matches the chip (coarse-to-fine grid
on grayscale MSE), and prints the per-chip boxes' median: a principled starting point for the fixed
crop, which ``scripts/choose_alignment.py`` then checks by verification accuracy on dev-train.

Usage: python scripts/fit_chip_box.py [--shared ../shared]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SMALL = 50  # compare at 50x50: fast, and enough to fix a box to about a pixel


def _gray(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _crop(img: Image.Image, left: float, top: float, size: float) -> np.ndarray:
    box = (left, top, left + size, top + size)
    return np.asarray(img.resize((SMALL, SMALL), Image.BILINEAR, box=box), np.float32)


def fit_one(photo: np.ndarray, chip: np.ndarray) -> tuple[float, float, float, float]:
    img = Image.fromarray(_gray(photo))
    target = np.asarray(Image.fromarray(_gray(chip)).resize((SMALL, SMALL), Image.BILINEAR))
    best = (np.inf, 0.0, 0.0, 0.0)
    grid = [(l, t, s) for s in range(80, 181, 6) for l in range(30, 130, 6)
            for t in range(30, 130, 6) if l + s <= 250 and t + s <= 250]
    for step in (6, 2, 0.5):
        for left, top, size in grid:
            err = float(np.mean((_crop(img, left, top, size) - target) ** 2))
            if err < best[0]:
                best = (err, left, top, size)
        _, l0, t0, s0 = best
        fine = step / 3
        grid = [(l0 + dl * fine, t0 + dt * fine, s0 + ds * fine)
                for dl in range(-3, 4) for dt in range(-3, 4) for ds in range(-3, 4)]
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = ap.parse_args()
    shared = Path(args.shared)
    ref = np.load(shared / "fixtures/dlib_reference/dlib_reference.npz")
    lfw = shared / "data/lfw_home/lfw"
    boxes = []
    for key, chip in zip(ref["keys"], ref["chips"]):
        name = str(key).rsplit("_", 1)[0]
        photo = np.asarray(Image.open(lfw / name / f"{key}.jpg").convert("RGB"))
        err, left, top, size = fit_one(photo, chip)
        boxes.append((left, top, size, err))
    arr = np.array(boxes)
    med = np.median(arr, axis=0)
    print(f"chips fitted: {len(arr)}; median rmse {np.sqrt(med[3]):.1f} grey levels")
    print(f"box left/top/size: median {med[0]:.1f} {med[1]:.1f} {med[2]:.1f}; "
          f"IQR size {np.percentile(arr[:, 2], 25):.1f}-{np.percentile(arr[:, 2], 75):.1f}")
    print(f"centre x {np.median(arr[:, 0] + arr[:, 2] / 2):.1f}, "
          f"y {np.median(arr[:, 1] + arr[:, 2] / 2):.1f}")


if __name__ == "__main__":
    main()

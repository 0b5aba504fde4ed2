"""Save PGD's adversarial outputs on fixed pairs, or compare two saved runs: the check that a
speed change to the attack loop or the model keeps the attack's results.

    python benchmarks/pgd_outputs.py --data-home FOLDER_WITH_lfw_home --out before.npz
    (change the code)
    python benchmarks/pgd_outputs.py --data-home FOLDER_WITH_lfw_home --out after.npz
    python benchmarks/pgd_outputs.py --compare before.npz after.npz

Each configuration (L∞ 8/255 without random start, rel-l2 0.04 with its seeded random start)
(and two weak budgets whose ASR sits mid-range) runs the registered ``pgd`` attack on the
same LFW dev-test pairs, goal ``pair``; what is stored is the adversarial probes (float32),
the attacked scores and the clean threshold. ``--compare`` prints, per configuration, the ASR
of both runs, the largest pixel difference and the share of pixels within 0.5/255, and fails
unless the ASR is equal and at least ``--min-share`` of the pixels are within 0.5/255 (a sign
step turns the rounding of a near-zero gradient component into a full step, so an exact
"every pixel" bound would reject any change of floating-point summation order).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {  # name -> pgd parameters
    "linf8-nostart": dict(norm="linf", eps=8.0, steps=10, step_size=2.0, random_start=False),
    "rel-l2-start": dict(norm="rel-l2", eps=0.04, steps=10, random_start=True),
    # weak budgets, so the ASR sits mid-range where a changed decision would show
    "linf1-weak": dict(norm="linf", eps=1.0, steps=3, step_size=0.5, random_start=False),
    "rel-l2-weak": dict(norm="rel-l2", eps=0.004, steps=3, random_start=True),
}


def run_all(data_home: str, pairs: int, batch_size: int, seed: int) -> dict:
    import facebench
    from facebench import metrics as M
    from facebench.attack import attacked_mask
    from facebench.data import aligner_for, load_pairs, pair_images
    from facebench.embed import embed_images, to_float

    model = facebench.load_recognizer("dlib-resnet")
    subset = load_pairs("lfw", "dev-test", data_home, download=False).subset(pairs, seed)
    images, idx_a, idx_b = pair_images(subset, aligner_for("lfw", model), progress=False)
    same = np.asarray(subset.same, dtype=bool)
    emb = embed_images(model, images, batch_size, progress=False)
    clean = M.cosine_similarity(emb[idx_a], emb[idx_b]).numpy()
    thr = M.best_threshold(clean, same)
    attacked, dodge = attacked_mask("pair", torch.from_numpy(same))
    out = {}
    for name, params in CONFIGS.items():
        params = dict(params)
        atk = facebench.load_attack("pgd", **params)
        torch.manual_seed(seed)
        advs, scores = [], []
        for s in range(0, len(same), batch_size):
            sel = slice(s, s + batch_size)
            probe = to_float(images[idx_a[sel]])
            adv = atk.perturb(model, probe, emb[idx_b[sel]], dodge[sel], thr)
            with torch.no_grad():
                scores.append(M.cosine_similarity(model(adv), emb[idx_b[sel]]).numpy())
            advs.append(adv.detach().numpy().astype(np.float32))
        adv_scores = np.concatenate(scores)
        out[f"{name}/adv"] = np.concatenate(advs)
        out[f"{name}/scores"] = adv_scores
        out[f"{name}/asr"] = np.float64(M.attack_success_rate(clean, adv_scores, same, thr,
                                                              attacked.numpy()))
    out["thr"] = np.float64(thr)
    out["clean"] = clean
    return out


def compare(a_path: str, b_path: str, min_share: float) -> int:
    a, b = np.load(a_path), np.load(b_path)
    ok = True
    print(f"clean thr {float(a['thr']):.6f} vs {float(b['thr']):.6f}; max |clean score diff| "
          f"{np.abs(a['clean'] - b['clean']).max():.2e}")
    for name in CONFIGS:
        xa, xb = a[f"{name}/adv"], b[f"{name}/adv"]
        diff = np.abs(xa.astype(np.float64) - xb) * 255
        share = float((diff <= 0.5).mean())
        asr_a, asr_b = float(a[f"{name}/asr"]), float(b[f"{name}/asr"])
        sdiff = np.abs(a[f"{name}/scores"] - b[f"{name}/scores"]).max()
        good = asr_a == asr_b and share >= min_share
        ok &= good
        print(f"{name:<15} ASR {asr_a:.4f} vs {asr_b:.4f}  max |Δpx| {diff.max():.3f}/255  "
              f"within 0.5/255 {share:.4%}  max |Δscore| {sdiff:.2e}  {'ok' if good else 'DIFF'}")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-home", default=os.environ.get("FACEBENCH_DATA")
                    or str(REPO.parent / "shared" / "data"))
    ap.add_argument("--out")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--min-share", type=float, default=0.999,
                    help="share of pixels that must be within 0.5/255")
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare, args.min_share)
    np.savez(args.out, **run_all(args.data_home, args.pairs, args.batch_size, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())

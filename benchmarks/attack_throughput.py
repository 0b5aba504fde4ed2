"""PGD throughput: facebench vs torchattacks vs ART on the same face recognizer and faces.

What it measures: wall time (median of ``--repeats`` after one warm-up run) of an L∞ PGD
attack with identical settings (eps, steps, step size, batch size, *no* random start in any
library) on the same ``dlib-resnet`` recognizer and the same batch of real LFW dev-test face
crops; from it adversarial examples per second, the facebench/peer throughput ratio, and each
library's per-step time divided by one bare forward+backward of the model on the same batch
(the overhead ratio: 1.0 means the attack loop costs nothing beyond its gradient).

Why: facebench's attacks must not be the bottleneck of a benchmark run. The peers attack
classifiers, so verification is wrapped as a two-logit classifier per pair with the batch's
gallery embeddings g held by the wrapper:
    logits(x) = [s·(thr − cos(F(x), g)), s·(cos(F(x), g) − thr)]
with label 1 for same-identity pairs (untargeted PGD pushes them to 0: dodging) and 0 for
different pairs (impersonation). Cross-entropy on these logits has the same gradient sign as
facebench's ±cos gain, so all three do the same work; the ASR and "=fb px" columns show it.
ART's time includes what its API always does: a backward that also fills the weights' .grad
and a success-rate evaluation (two extra forwards) after each generate() call.
Wall times need an otherwise idle machine: on a CPU shared with other jobs, multi-threaded
torch collapses erratically; compare with ``--threads 1`` there ("min s" helps too).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import facebench
from facebench import metrics as M
from facebench.embed import to_float

REPO = Path(__file__).resolve().parents[1]
PEER_PIP = {"torchattacks": "pip install --no-deps torchattacks",
            "art": "pip install adversarial-robustness-toolbox"}


class PairLogits(nn.Module):
    """Verification as a 2-class classifier; ``gallery`` must be set to the current batch."""

    def __init__(self, recognizer: nn.Module, thr: float, scale: float):
        super().__init__()
        self.recognizer, self.thr, self.scale = recognizer, float(thr), float(scale)
        self.gallery: torch.Tensor | None = None

    def forward(self, x):
        if self.gallery is None or self.gallery.shape[0] != x.shape[0]:
            raise RuntimeError("PairLogits.gallery must hold one embedding per probe of the batch")
        cos = nn.functional.cosine_similarity(self.recognizer(x), self.gallery, dim=1, eps=1e-12)
        return torch.stack([self.scale * (self.thr - cos), self.scale * (cos - self.thr)], dim=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recognizer", default="dlib-resnet")
    p.add_argument("--pairs", type=int, default=32, help="LFW dev-test pairs (half same)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eps", type=float, default=8.0, help="L∞ budget in /255 units")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-size", type=float, default=2.0, help="in /255 units")
    p.add_argument("--scale", type=float, default=10.0, help="logit scale s of the wrapper")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: leave torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-home", default=os.environ.get("FACEBENCH_DATA")
                   or str(REPO.parent / "shared" / "data"), help="folder holding lfw_home/")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair subset")
    p.add_argument("--libs", default="facebench,torchattacks,art",
                   help="comma-separated subset of facebench,torchattacks,art")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 pairs, 2 steps, 1 repeat")
    args = p.parse_args(argv)
    unknown = set(args.libs.split(",")) - {"facebench", "torchattacks", "art"}
    if unknown:
        p.error(f"unknown --libs entries: {', '.join(sorted(unknown))}")
    if args.quick:
        args.pairs, args.steps, args.repeats = 4, 2, 1
    return args


def _aligner(recognizer):
    from facebench.data import aligner_for
    return aligner_for("lfw", recognizer)


def load_batches(args, model, device):
    """Probe crops, gallery embeddings and labels of the chosen pairs, split into batches."""
    from facebench.data import load_pairs, pair_images
    pairs = load_pairs("lfw", "dev-test", args.data_home, download=False).subset(args.pairs, args.seed)
    images, idx_a, idx_b = pair_images(pairs, _aligner(model), progress=False)
    same = torch.from_numpy(np.asarray(pairs.same, dtype=bool))
    probe = to_float(images[idx_a], device)
    with torch.no_grad():
        gallery = torch.cat([model(to_float(images[idx_b[i:i + args.batch_size]], device))
                             for i in range(0, len(idx_b), args.batch_size)])
        clean = torch.cat([model(probe[i:i + args.batch_size])
                           for i in range(0, len(probe), args.batch_size)])
    clean_scores = M.cosine_similarity(clean.cpu(), gallery.cpu()).numpy()
    thr = M.best_threshold(clean_scores, same.numpy())
    batches = [(probe[i:i + args.batch_size], gallery[i:i + args.batch_size],
                same[i:i + args.batch_size].to(device))
               for i in range(0, len(probe), args.batch_size)]
    return batches, clean_scores, same.numpy(), thr


def make_runners(args, model, thr, device):
    """name -> (callable(batch) -> adversarial batch) or the reason it is unavailable."""
    eps, alpha = args.eps / 255.0, args.step_size / 255.0
    runners = {}
    libs = args.libs.split(",")
    if "facebench" in libs:
        atk = facebench.load_attack("pgd", norm="linf", eps=args.eps, steps=args.steps,
                                    step_size=args.step_size, random_start=False)
        runners["facebench"] = lambda x, g, d: atk.perturb(model, x, g, d, thr)
    wrapper = PairLogits(model, thr, args.scale).to(device).eval()
    if "torchattacks" in libs:
        try:
            import torchattacks
            ta = torchattacks.PGD(wrapper, eps=eps, alpha=alpha, steps=args.steps,
                                  random_start=False)

            def run_ta(x, g, d):
                wrapper.gallery = g
                return ta(x, d.long())
            runners["torchattacks"] = run_ta
        except ImportError as err:
            runners["torchattacks"] = f"not installed ({err}); {PEER_PIP['torchattacks']}"
    if "art" in libs:
        try:
            from art.attacks.evasion import ProjectedGradientDescent
            from art.estimators.classification import PyTorchClassifier
            h, w = getattr(model, "input_size", (150, 150))
            clf = PyTorchClassifier(model=wrapper, loss=nn.CrossEntropyLoss(),
                                    input_shape=(3, h, w), nb_classes=2, clip_values=(0.0, 1.0),
                                    device_type="gpu" if device.type == "cuda" else "cpu")
            art_pgd = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=alpha,
                                               max_iter=args.steps, targeted=False,
                                               num_random_init=0, batch_size=args.batch_size,
                                               verbose=False)

            def run_art(x, g, d):
                wrapper.gallery = g
                adv = art_pgd.generate(x.detach().cpu().numpy(), y=d.long().cpu().numpy())
                return torch.from_numpy(adv).to(device)
            runners["art"] = run_art
        except ImportError as err:
            runners["art"] = f"not installed ({err}); {PEER_PIP['art']}"
    return runners


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def bare_pass(model, batches):
    """One forward + input-gradient backward on every batch: the floor of one PGD step."""
    def once():
        for x, g, _ in batches:
            xg = x.detach().requires_grad_(True)
            cos = nn.functional.cosine_similarity(model(xg), g, dim=1, eps=1e-12)
            torch.autograd.grad(cos.sum(), xg)
    return once


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = facebench.load_recognizer(args.recognizer, device=str(device))
    batches, clean_scores, same, thr = load_batches(args, model, device)
    n = len(clean_scores)
    print(f"torch {torch.__version__}  device {device}  threads {torch.get_num_threads()}  "
          f"load avg {os.getloadavg()[0]:.2f}")
    print(f"{args.recognizer} on {n} LFW dev-test pairs ({int(same.sum())} same), batch "
          f"{args.batch_size} ({len(batches)} batches), linf eps {args.eps:g}/255, {args.steps} "
          f"steps of {args.step_size:g}/255, random start off everywhere, clean thr {thr:.4f}, "
          f"median of {args.repeats} interleaved rounds after 1 warm-up")
    results, jobs = {}, {"bare": bare_pass(model, batches)}
    for name, run in make_runners(args, model, thr, device).items():
        if isinstance(run, str):
            results[name] = run
        else:  # bind run now: one closure per library over all batches
            jobs[name] = (lambda r: lambda: torch.cat([r(x, g, d) for x, g, d in batches]))(run)
    advs = {name: timed(job, device)[1] for name, job in jobs.items()}  # warm-up, scored
    times = {name: [] for name in jobs}
    for _ in range(args.repeats):  # round-robin, so load drift hits every library alike
        for name, job in jobs.items():
            times[name].append(timed(job, device)[0])
    bare = statistics.median(times.pop("bare")) / len(batches)
    print(f"bare forward+backward: {bare * 1e3:.1f} ms per batch")
    probe = torch.cat([b[0] for b in batches])
    gallery = torch.cat([b[1] for b in batches]).cpu()
    for name, runs in times.items():
        wall = statistics.median(runs)
        adv = advs[name]
        with torch.no_grad():
            adv_emb = torch.cat([model(adv[i:i + args.batch_size])
                                 for i in range(0, n, args.batch_size)])
        adv_scores = M.cosine_similarity(adv_emb.cpu(), gallery).numpy()
        asr = M.attack_success_rate(clean_scores, adv_scores, same, thr, np.ones(n, bool))
        linf = (adv - probe).abs().amax().item() * 255
        step = wall / (args.steps * len(batches))
        agree = ((adv - advs["facebench"]).abs() < 0.5 / 255).float().mean().item() \
            if "facebench" in advs else float("nan")
        results[name] = dict(wall=wall, best=min(runs), rate=n / wall, asr=asr, linf=linf,
                             agree=agree, overhead=step / bare)
    fb = results.get("facebench")
    print(f"\n{'library':<13}{'wall s':>9}{'min s':>9}{'adv/s':>9}{'ASR':>8}{'max L∞':>11}"
          f"{'=fb px':>8}{'step/fwd+bwd':>14}{'fb/peer':>9}")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name:<13}{r}")
            continue
        ratio = f"{fb['rate'] / r['rate']:.2f}x" if isinstance(fb, dict) else "-"
        print(f"{name:<13}{r['wall']:>9.3f}{r['best']:>9.3f}{r['rate']:>9.2f}{r['asr']:>8.1%}"
              f"{r['linf']:>7.2f}/255{r['agree']:>8.1%}{r['overhead']:>14.2f}{ratio:>9}")
    print("(=fb px: share of adversarial pixels within 0.5/255 of facebench's output)")
    if isinstance(fb, dict):
        print(f"facebench overhead ratio (per-step time / bare forward+backward): "
              f"{fb['overhead']:.2f}")


if __name__ == "__main__":
    main()

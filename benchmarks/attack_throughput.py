"""PGD throughput: facebench vs torchattacks, ART and foolbox, measured against the machine.

What it measures, in one process with interleaved rounds (so load drift hits every entry
alike), on the same recognizer and the same batch of real LFW dev-test face crops:

1. **The limit.** A machine probe (a 128-channel 3×3 convolution, the better of NCHW and
   channels_last, and a 1024² fp32 GEMM), timed in the same rounds as what it is compared
   with; per recognizer of ``--models`` the FLOPs of one image (forward, forward +
   input-backward; ``torch.utils.flop_counter.FlopCounterMode``) and the GFLOP/s those passes
   reach as users would run the network (``stock``: fp32, NCHW, layer by layer) and as
   facebench runs it (``facebench``: the object ``load_recognizer`` returns, fed facebench's
   pixel layout), also as a fraction of the conv probe.
2. **The attack.** Wall time (median of ``--repeats`` after a warm-up) of an L∞ PGD with
   identical settings (eps, steps, step size, batch size, *no* random start anywhere), from
   it adversarial examples per second, each entry's per-step time divided by one bare
   forward + input-backward of the model it drives (1.0: the loop costs nothing beyond its
   gradient), and facebench's throughput ratio to it (``facebench+fold``: the same with the
   recognizer's opt-in folded weights, where it has them). The peers drive the *stock* module,
   as their users would write it (``torchattacks``, ``art``, ``foolbox``); ``torchattacks
   +fb-model`` drives facebench's own optimised recognizer object, so only the loops differ.

The peers attack classifiers, so verification is wrapped as a two-logit classifier per pair
with the batch's gallery embeddings g held by the wrapper:
    logits(x) = [s·(thr − cos(F(x), g)), s·(cos(F(x), g) − thr)]
with label 1 for same-identity pairs (untargeted PGD pushes them to 0: dodging) and 0 for
different pairs (impersonation). Cross-entropy on these logits has the same gradient sign as
facebench's ±cos gain, so all do the same work; the ASR and "=fb px" columns show it. On the
stock module "=fb px" is lower for rounding, not for other work: its NCHW kernels round
differently from channels_last ones and ten L∞ sign steps amplify any difference where a
gradient component is near zero (float64 vs float32 of one network differs as much).
ART's time includes what its API always does: a backward that also fills the weights' .grad
and a success-rate evaluation after each generate() call; foolbox's a success check.
Wall times need a quiet machine: on a CPU shared with other jobs, multi-threaded torch
collapses erratically; compare with ``--threads 1`` there ("min s" helps too).

    python benchmarks/attack_throughput.py --threads 1 --models dlib-resnet,facenet,sface
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import facebench
from facebench import metrics as M
from facebench.embed import to_float

REPO = Path(__file__).resolve().parents[1]
LIBS = ("facebench", "facebench+fold", "torchattacks", "torchattacks+fb-model", "art",
        "foolbox")
PEER_PIP = {"torchattacks": "pip install --no-deps torchattacks",
            "art": "pip install adversarial-robustness-toolbox",
            "foolbox": "pip install foolbox"}
#: issue 13's targets: (what, comparison, bound)
TARGETS = (("facebench / torchattacks (stock)", ">=", 1.25),
           ("facebench / art (stock)", ">=", 2.0),
           ("facebench / foolbox (stock)", ">=", 1.25),
           ("facebench / torchattacks+fb-model", ">=", 1.0),
           ("facebench step / its bare fwd+bwd", "<=", 1.05),
           ("facebench bare fwd+bwd / conv probe", ">=", 0.75))


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
    p.add_argument("--recognizer", default="dlib-resnet", help="the attacked recognizer")
    p.add_argument("--models", default=None,
                   help="comma-separated recognizers for the FLOPs / GFLOP/s table "
                        "(default: --recognizer; 'none' skips the table)")
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
    p.add_argument("--libs", default=",".join(LIBS),
                   help=f"comma-separated subset of {','.join(LIBS)}")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 pairs, 2 steps, 1 repeat")
    args = p.parse_args(argv)
    unknown = set(args.libs.split(",")) - set(LIBS)
    if unknown:
        p.error(f"unknown --libs entries: {', '.join(sorted(unknown))}")
    if args.quick:
        args.pairs, args.steps, args.repeats = 4, 2, 1
    return args


# ------------------------------------------------------------------ timing helpers

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def interleaved(jobs: dict, device, repeats: int, warm_up: bool = True) -> dict:
    """name -> wall times of ``repeats`` rounds (after one warm-up of each job); every round
    runs each job once, in an order shuffled per round (seeded), so neither slow load drift
    nor a job's position in the round favours any of them."""
    if warm_up:
        for job in jobs.values():
            job()
    times = {name: [] for name in jobs}
    names = list(jobs)
    for r in range(repeats):
        random.Random(r).shuffle(names)
        for name in names:
            times[name].append(timed(jobs[name], device)[0])
    return times


def round_ratio(times: dict, a: str, b: str) -> float:
    """Median over rounds of time(b) / time(a) in the same round: how many times faster
    ``a`` is than ``b``, robust to load that changes between rounds."""
    return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))


def stock_module(model: nn.Module) -> nn.Module:
    """The network as a user would run it: facebench's speed paths off (``fast``), fp32."""
    stock = copy.deepcopy(model)
    for m in stock.modules():
        if hasattr(m, "fast"):
            m.fast = False
    return stock.float().eval()


def nchw(x: torch.Tensor) -> torch.Tensor:
    """Contiguous NCHW, what a user's loader (e.g. ToTensor + stack) produces."""
    return x.contiguous()


# ------------------------------------------------------------------ the limit

class MachineProbe:
    """A 128-channel 3×3 conv (batch 16, 32×32, padding 1; NCHW and channels_last) and a
    1024² fp32 GEMM: what this machine's kernels reach. Its jobs join the timing rounds of
    the other measurements, so "fraction of peak" compares passes timed under the same load
    (on a shared or virtualised CPU the reachable GFLOP/s drifts by tens of percent)."""

    CONV_FLOP = 2 * 16 * 128 * 128 * 9 * 32 * 32
    GEMM_FLOP = 2 * 1024 ** 3

    def __init__(self, device):
        x = torch.randn(16, 128, 32, 32, device=device)
        w = torch.randn(128, 128, 3, 3, device=device)
        a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
        cl = torch.channels_last
        xc, wc = x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)

        def run(fn):
            def job():
                with torch.inference_mode():
                    fn()
            return job
        self.jobs = {"probe:conv-nchw": run(lambda: F.conv2d(x, w, padding=1)),
                     "probe:conv-cl": run(lambda: F.conv2d(xc, wc, padding=1)),
                     "probe:gemm": run(lambda: a @ b)}

    def rates(self, times: dict) -> dict:
        """GFLOP/s from the fastest of each job's rounds (popped from ``times``)."""
        t = {k: min(times.pop(k)) for k in self.jobs}
        conv = {"nchw": self.CONV_FLOP / t["probe:conv-nchw"] / 1e9,
                "channels_last": self.CONV_FLOP / t["probe:conv-cl"] / 1e9}
        return {"conv": max(conv.values()), "conv_layouts": conv,
                "gemm": self.GEMM_FLOP / t["probe:gemm"] / 1e9}

    @staticmethod
    def describe(rates: dict) -> str:
        layouts = ", ".join(f"{k} {v:.1f}" for k, v in rates["conv_layouts"].items())
        return (f"128-ch 3x3 conv {rates['conv']:.1f} GFLOP/s ({layouts}), 1024² GEMM "
                f"{rates['gemm']:.1f} GFLOP/s")


def flops_per_image(model: nn.Module, device) -> tuple[float, float]:
    """(forward, forward + input-backward) FLOPs of one image (the weights need no grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = getattr(model, "input_size", (112, 112))
    x = torch.rand(1, 3, h, w, device=device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        emb = model(x)
    fwd = fc.get_total_flops()
    g = torch.randn(1, emb.shape[1], device=device)
    with FlopCounterMode(display=False) as fc:
        xg = x.clone().requires_grad_(True)
        F.cosine_similarity(model(xg), g, dim=1).sum().backward()
    return float(fwd), float(fc.get_total_flops())


def model_jobs(model: nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict:
    def fwd():
        with torch.inference_mode():
            model(x)

    def fwd_bwd():
        xg = x.detach().requires_grad_(True)
        cos = F.cosine_similarity(model(xg), g, dim=1, eps=1e-12)
        torch.autograd.grad(cos.sum(), xg)
    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


def model_table(names, batch_size: int, device, repeats: int, probe: MachineProbe) -> None:
    print(f"\nper-image FLOPs and the GFLOP/s of batch-{batch_size} passes (fastest of "
          f"{repeats} rounds; stock: fp32 NCHW layer by layer; facebench: load_recognizer's "
          f"object on to_float's layout); % = of the conv probe timed in the same rounds")
    print(f"{'recognizer':<13}{'GFLOP fwd':>10}{'fwd+bwd':>9}  {'variant':<10}"
          f"{'fwd GF/s':>9}{'%':>5}{'f+b GF/s':>10}{'%':>5}{'f+b vs stock':>14}")
    for name in names:
        model = facebench.load_recognizer(name, device=str(device))
        f1, fb1 = flops_per_image(model, device)
        h, w = getattr(model, "input_size", (112, 112))
        u8 = np.random.default_rng(0).integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8)
        x = to_float(u8, device)
        with torch.no_grad():
            g = torch.randn(batch_size, model(x[:1]).shape[1], device=device)
        variants = {"stock": (stock_module(model), nchw(x)), "facebench": (model, x)}
        if hasattr(model, "fold"):  # the opt-in path that folds affines into the convs
            folded = copy.deepcopy(model)
            folded.fold = True
            variants["fb+fold"] = (folded, x)
        jobs = {(v, k): job for v, (m, xv) in variants.items()
                for k, job in model_jobs(m, xv, g).items()}
        times = interleaved({**jobs, **probe.jobs}, device, repeats)
        peak = probe.rates(times)["conv"]
        times = {k: min(t) for k, t in times.items()}
        for i, v in enumerate(variants):
            gf = batch_size * f1 / times[(v, "fwd")] / 1e9
            gfb = batch_size * fb1 / times[(v, "fwd+bwd")] / 1e9
            rel = times[("stock", "fwd+bwd")] / times[(v, "fwd+bwd")]
            head = f"{name:<13}{f1 / 1e9:>10.3f}{fb1 / 1e9:>9.3f}" if i == 0 else " " * 32
            print(f"{head}  {v:<10}{gf:>9.1f}{gf / peak:>5.0%}{gfb:>10.1f}"
                  f"{gfb / peak:>5.0%}{rel:>13.2f}x")


# ------------------------------------------------------------------ the attack

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


def make_runners(args, model, stock, thr, device):
    """name -> (callable(x, g, d) -> adversarial batch, the module it drives) or the reason
    it is unavailable. Peers on ``stock`` get contiguous NCHW probes, as a user's would be."""
    eps, alpha = args.eps / 255.0, args.step_size / 255.0
    runners = {}
    libs = args.libs.split(",")
    if "facebench" in libs:
        atk = facebench.load_attack("pgd", norm="linf", eps=args.eps, steps=args.steps,
                                    step_size=args.step_size, random_start=False)
        runners["facebench"] = (lambda x, g, d: atk.perturb(model, x, g, d, thr), model)
    if "facebench+fold" in libs and hasattr(model, "fold"):  # the opt-in folded network
        folded = copy.deepcopy(model)
        folded.fold = True
        runners["facebench+fold"] = (lambda x, g, d: atk.perturb(folded, x, g, d, thr), folded)
    wrapper = PairLogits(stock, thr, args.scale).to(device).eval()
    try:
        import torchattacks
    except ImportError as err:
        torchattacks = None
        for name in ("torchattacks", "torchattacks+fb-model"):
            if name in libs:
                runners[name] = f"not installed ({err}); {PEER_PIP['torchattacks']}"
    if torchattacks is not None:
        for name, net in (("torchattacks", stock), ("torchattacks+fb-model", model)):
            if name not in libs:
                continue
            wrap = wrapper if net is stock else PairLogits(model, thr, args.scale).eval()
            ta = torchattacks.PGD(wrap, eps=eps, alpha=alpha, steps=args.steps,
                                  random_start=False)
            layout = nchw if net is stock else (lambda x: x)

            def run_ta(x, g, d, ta=ta, wrap=wrap, layout=layout):
                wrap.gallery = g
                return ta(layout(x), d.long())
            runners[name] = (run_ta, net)
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
                adv = art_pgd.generate(nchw(x).cpu().numpy(), y=d.long().cpu().numpy())
                return torch.from_numpy(adv).to(device)
            runners["art"] = (run_art, stock)
        except ImportError as err:
            runners["art"] = f"not installed ({err}); {PEER_PIP['art']}"
    if "foolbox" in libs:
        try:
            import foolbox
            fmodel = foolbox.PyTorchModel(wrapper, bounds=(0.0, 1.0), device=device)
            fb_pgd = foolbox.attacks.LinfPGD(abs_stepsize=alpha, steps=args.steps,
                                             random_start=False)

            def run_foolbox(x, g, d):
                wrapper.gallery = g
                _, clipped, _ = fb_pgd(fmodel, nchw(x), d.long(), epsilons=eps)
                return clipped
            runners["foolbox"] = (run_foolbox, stock)
        except ImportError as err:
            runners["foolbox"] = f"not installed ({err}); {PEER_PIP['foolbox']}"
    return runners


def results_names(runners: dict) -> set:
    return {name for name, run in runners.items() if not isinstance(run, str)}


def bare_pass(model, batches, layout=lambda x: x):
    """One forward + input-gradient backward on every batch: the floor of one PGD step."""
    def once():
        for x, g, _ in batches:
            xg = layout(x).detach().requires_grad_(True)
            cos = nn.functional.cosine_similarity(model(xg), g, dim=1, eps=1e-12)
            torch.autograd.grad(cos.sum(), xg)
    return once


def check_targets(values: dict) -> None:
    print("\nissue 13 targets (this run):")
    for what, op, bound in TARGETS:
        v = values.get(what)
        if v is None:
            print(f"  {what:<40} not measured")
            continue
        ok = v >= bound if op == ">=" else v <= bound
        print(f"  {what:<40} {v:6.2f}  (target {op} {bound:g})  {'met' if ok else 'NOT met'}")


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}  device {device}  threads {torch.get_num_threads()}  "
          f"load avg {os.getloadavg()[0]:.2f}")
    probe = MachineProbe(device)
    alone = probe.rates(interleaved(dict(probe.jobs), device, max(args.repeats, 3)))
    print(f"machine probe (alone): {probe.describe(alone)}")
    models = (args.models or args.recognizer).split(",")
    if models != ["none"]:
        model_table(models, args.batch_size, device, args.repeats, probe)

    model = facebench.load_recognizer(args.recognizer, device=str(device))
    stock = stock_module(model)
    flops_fb = flops_per_image(model, device)[1]
    batches, clean_scores, same, thr = load_batches(args, model, device)
    n = len(clean_scores)
    print(f"\n{args.recognizer} on {n} LFW dev-test pairs ({int(same.sum())} same), batch "
          f"{args.batch_size} ({len(batches)} batches), linf eps {args.eps:g}/255, {args.steps} "
          f"steps of {args.step_size:g}/255, random start off everywhere, clean thr {thr:.4f}, "
          f"median of {args.repeats} shuffled interleaved rounds after 1 warm-up")
    results, drives = {}, {}
    runners = make_runners(args, model, stock, thr, device)
    nets = {"facebench": model, "stock": stock}
    for name, run in runners.items():
        if not isinstance(run, str) and all(run[1] is not v for v in nets.values()):
            nets["fb+fold"] = run[1]
    jobs = {f"bare:{k}": bare_pass(v, batches, nchw if k == "stock" else (lambda x: x))
            for k, v in nets.items()}
    for name, run in runners.items():
        if isinstance(run, str):
            results[name] = run
            continue
        fn, net = run
        drives[name] = next(k for k, v in nets.items() if v is net)
        jobs[name] = (lambda r: lambda: torch.cat([r(x, g, d) for x, g, d in batches]))(fn)
    advs = {name: timed(job, device)[1] for name, job in jobs.items()}  # warm-up, scored
    jobs.update(probe.jobs)
    times = interleaved(jobs, device, args.repeats, warm_up=False)  # warmed up above
    ran = results_names(runners)
    steps = {name: round_ratio(times, f"bare:{drives[name]}", name) / args.steps for name in ran}
    ratios = {name: round_ratio(times, "facebench", name) if "facebench" in ran
              else float("nan") for name in ran}
    rates = probe.rates(times)
    peak = rates["conv"]
    print(f"machine probe (in these rounds): {probe.describe(rates)}")
    bare = {k: statistics.median(times.pop(f"bare:{k}")) / len(batches) for k in nets}
    per_batch = n / len(batches)  # probes per batch, on average
    gfs = {k: per_batch * flops_fb / v / 1e9 for k, v in bare.items()}
    print("bare forward+backward per batch: " + ", ".join(
        f"{k} {v * 1e3:.1f} ms ({gfs[k]:.1f} GFLOP/s, {gfs[k] / peak:.0%} of the conv probe)"
        for k, v in bare.items()))
    probe_t = torch.cat([b[0] for b in batches])
    gallery = torch.cat([b[1] for b in batches]).cpu()
    for name, runs in times.items():
        wall = statistics.median(runs)
        adv = advs[name]
        with torch.no_grad():
            adv_emb = torch.cat([model(adv[i:i + args.batch_size])
                                 for i in range(0, n, args.batch_size)])
        adv_scores = M.cosine_similarity(adv_emb.cpu(), gallery).numpy()
        asr = M.attack_success_rate(clean_scores, adv_scores, same, thr, np.ones(n, bool))
        linf = (adv - probe_t).abs().amax().item() * 255
        agree = ((adv - advs["facebench"]).abs() < 0.5 / 255).float().mean().item() \
            if "facebench" in advs else float("nan")
        results[name] = dict(wall=wall, best=min(runs), rate=n / wall, asr=asr, linf=linf,
                             agree=agree, overhead=steps[name], drives=drives[name],
                             ratio=ratios[name])
    fb = results.get("facebench")
    print(f"\n{'library':<23}{'model':<10}{'wall s':>8}{'min s':>8}{'adv/s':>8}{'ASR':>8}"
          f"{'max L∞':>11}{'=fb px':>9}{'step/fwd+bwd':>14}{'fb/peer':>9}")
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name:<23}{r}")
            continue
        ratio = f"{r['ratio']:.2f}x" if isinstance(fb, dict) else "-"
        print(f"{name:<23}{r['drives']:<10}{r['wall']:>8.3f}{r['best']:>8.3f}{r['rate']:>8.2f}"
              f"{r['asr']:>8.1%}{r['linf']:>7.2f}/255{r['agree']:>9.2%}{r['overhead']:>14.2f}"
              f"{ratio:>9}")
    print("(model: the module a library drives — stock = fp32 NCHW layer by layer, as a user "
          "writes it; =fb px: share of adversarial pixels within 0.5/255 of facebench's; "
          "step/fwd+bwd and fb/peer: medians over rounds of ratios within a round)")
    if isinstance(fb, dict):
        values = {"facebench step / its bare fwd+bwd": fb["overhead"],
                  "facebench bare fwd+bwd / conv probe": gfs["facebench"] / peak}
        for name, label in (("torchattacks", "facebench / torchattacks (stock)"),
                            ("art", "facebench / art (stock)"),
                            ("foolbox", "facebench / foolbox (stock)"),
                            ("torchattacks+fb-model", "facebench / torchattacks+fb-model")):
            if isinstance(results.get(name), dict):
                values[label] = results[name]["ratio"]
        check_targets(values)


if __name__ == "__main__":
    main()

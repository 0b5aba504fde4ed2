"""SIDE training: a reconstruction warm-up, then self-supervised adversarial training (SSAT).

Each step (Algorithm 1, batched): the online model reads the perturbed faces, k antibodies
are cloned per face, each is scored by the affinity of Eq. 13 against the *clean* face
(cosine of recognizer embeddings of gray-replicated images, pixel MSE, antibody size), and
the policy is moved by REINFORCE with the per-face mean affinity as baseline (Eq. 14).

* Warm-up: input = clean + N(0, 0.04^2) per pixel in [-1,1] units (the code; the paper
  says no noise: set ``warmup_noise=0``). Memory active and written, as in the code.
* SSAT: a siamese copy, initialised from the warm-up weights, follows the online model by
  EMA (xi = 0.999 every step; ``ema_every``/``ema_decay`` reproduce the code's 0.9 every
  20k) on parameters and memory items, BN buffers copied; it runs in eval mode (no memory
  writes). Per batch it draws one Bernoulli mask per face and makes one FGSM step of
  eta = 0.04 ([-1,1] units, no clipping) on L = 1 - cos(F(x), F(D(x))), the gradient
  flowing through the projection only (mask constant) and F(x) of the clean gray face as
  the fixed anchor. A fresh SGD optimizer starts each phase (the code's adversarial run
  loaded only the warm-up weights). ``ssat=False`` stops after the warm-up ("w/o SSAT").
* Presets: ``full`` is the paper schedule (50k + 250k steps, batch 4, all training-split
  images); ``quick`` (CPU: about 5 min on two cores with dlib-resnet) keeps every
  setting but runs 150 + 150 steps, with the eigenbasis and the training images limited
  to 3000 evenly spaced images of the split; ``medium`` (CPU, about 1.5 h on two cores) is
  ``quick`` run for 2000 + 4000 steps, long enough for the selection probabilities to
  leave 0.5 (``quick`` barely moves them). ``cpu`` (the committed model; about 1.5 h on one
  loaded core) is ``medium`` with the recognizer-calibrated affinity for 1000 + 1000 steps.
  ``warm`` (CPU, about 30 min on one core) starts the policy at the top-500 projection
  (``prior_topk``, logits +-``prior_logit``; see :meth:`SIDEModel.init_prior`; 500 is the
  antibody size the paper reports after training) and runs 200 + 400 steps from there.
* Calibration (``calibration``, default ``centre``): the cosine in the affinity and in the
  SSAT loss is computed after centring the recognizer's embeddings on their mean over the
  training images (:mod:`facebench.calibration`), which puts dlib-resnet's compressed score
  (impostors at 0.83) on ArcFace's scale (impostors near 0) the paper's lambdas assume;
  ``calibration=none`` is the paper's raw cosine. The centre is saved as ``calibration.pt``
  and described in the manifest.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from facebench.calibration import CALIBRATIONS, Calibration, fit_calibration
from facebench.defenses.eigen.antibody import (affinity, antibody_stats, ema_update,
                                               log_likelihood, make_ema, pixel_term,
                                               reinforce_loss, sample_antibodies)
from facebench.defenses.eigen.faces import rgb_to_face, save_atomic
from facebench.defenses.eigen.training import EigenTrainer, embed
from facebench.embed import to_float
from facebench.errors import FacebenchError
from facebench.trainer import TrainContext

from .model import UPDATE_RULES, SIDEModel

_COMMON: Dict[str, Any] = dict(
    face_size=112, n_components=1500, feat_dim=512, n_items=128, widths=[64, 128, 256, 512],
    use_memory=True, memory_decay=0.999, memory_update="code",
    k=10, batch_size=4, lr=0.01, momentum=0.9, weight_decay=0.0,
    lambdas=[8.0, 1.0, 0.003], pixel="mse", clone_reduction="sum",
    warmup_noise=0.04, ssat=True, fgsm_eta=0.04, ema_decay=0.999, ema_every=1,
    calibration="centre", prior_topk=0, prior_logit=4.0,
)
CALIBRATION_FILE = "calibration.pt"
PRESETS: Dict[str, Dict[str, Any]] = {
    "quick": {**_COMMON, "warmup_steps": 150, "ssat_steps": 150, "max_images": 3000,
              "checkpoint_every": 50, "log_every": 10},
    "medium": {**_COMMON, "warmup_steps": 2000, "ssat_steps": 4000, "max_images": 3000,
               "checkpoint_every": 250, "log_every": 25},
    "cpu": {**_COMMON, "warmup_steps": 1000, "ssat_steps": 1000, "max_images": 3000,
            "checkpoint_every": 250, "log_every": 25},
    "warm": {**_COMMON, "warmup_steps": 200, "ssat_steps": 400, "max_images": 3000,
             "prior_topk": 500, "checkpoint_every": 100, "log_every": 25},
    "full": {**_COMMON, "warmup_steps": 50_000, "ssat_steps": 250_000, "max_images": None,
             "checkpoint_every": 2000, "log_every": 100},
}


def check_config(cfg: Dict[str, Any]) -> None:
    """Reject values the loop would misuse; FacebenchError names the key."""
    def need(ok, key, what):
        if not ok:
            raise FacebenchError(f"side option {key} must be {what}, got {cfg[key]!r}")

    for key in ("k", "batch_size", "n_components", "n_items", "feat_dim", "ema_every",
                "checkpoint_every", "log_every"):
        need(isinstance(cfg[key], int) and not isinstance(cfg[key], bool) and cfg[key] >= 1,
             key, "an integer >= 1")
    for key in ("warmup_steps", "ssat_steps", "prior_topk"):
        need(isinstance(cfg[key], int) and not isinstance(cfg[key], bool) and cfg[key] >= 0,
             key, "an integer >= 0")
    need(cfg["prior_topk"] <= cfg["n_components"], "prior_topk",
         f"at most n_components ({cfg['n_components']}); 0 = the paper's start")
    need(isinstance(cfg["prior_logit"], (int, float)) and not isinstance(cfg["prior_logit"], bool)
         and float(cfg["prior_logit"]) > 0, "prior_logit", "a number > 0")
    need(cfg["batch_size"] >= 2, "batch_size", ">= 2 (BatchNorm needs two samples)")
    need(0.0 <= float(cfg["ema_decay"]) <= 1.0, "ema_decay", "in [0, 1]")
    need(cfg["memory_update"] in UPDATE_RULES, "memory_update", " or ".join(UPDATE_RULES))
    need(cfg["pixel"] in ("mse", "l2"), "pixel", "'mse' or 'l2'")
    need(cfg["clone_reduction"] in ("sum", "mean"), "clone_reduction", "'sum' or 'mean'")
    need(cfg["calibration"] in CALIBRATIONS, "calibration", " or ".join(CALIBRATIONS))
    need(isinstance(cfg["lambdas"], (list, tuple)) and len(cfg["lambdas"]) == 3
         and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                 for v in cfg["lambdas"]), "lambdas", "three numbers (e.g. 8,1,0.003)")
    for key in ("use_memory", "ssat"):
        need(isinstance(cfg[key], bool), key, "true or false")


def fgsm_siamese(siamese, basis, recognizer, x, anchor, eta: float,
                 generator: torch.Generator, calibration: Calibration | None = None):
    """One FGSM step against the siamese defense + recognizer (Eqs. 16-17), on the
    (calibrated) cosine.

    Returns the adversarial faces and the mean cosine of their *undefended* embeddings to
    the anchor (the code's ``sim_adv`` log)."""
    cal = calibration or Calibration.identity(anchor.shape[1]).to(anchor)
    with torch.no_grad():
        mask = sample_antibodies(siamese(x), 1, generator)[:, 0]
    xg = x.detach().clone().requires_grad_(True)
    loss = 1.0 - cal.cosine(embed(recognizer, basis.project(xg, mask)), anchor).mean()
    (grad,) = torch.autograd.grad(loss, xg)
    x_adv = (x + eta * grad.sign()).detach()
    with torch.no_grad():
        adv_cos = cal.cosine(embed(recognizer, x_adv), anchor).mean()
    return x_adv, float(adv_cos)


def fit_side_calibration(ctx: TrainContext) -> Calibration:
    """The recognizer's score calibration on the training faces, as the affinity sees them
    (gray, resampled to the face size and back); saved beside the model and recorded in the
    manifest so a resumed run reuses it and a reader sees what the affinity measured."""
    path = ctx.out_dir / CALIBRATION_FILE
    kind = ctx.cfg["calibration"]
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        cal, info = Calibration(saved["mean"], saved["kind"]), saved["info"]
    else:
        size = ctx.cfg["face_size"]
        recognizer = ctx.recognizer

        def to_input(batch):
            return rgb_to_face(to_float(batch, ctx.device), size)

        cal, info = fit_calibration(kind, lambda faces: embed(recognizer, faces), ctx.images,
                                    to_input)
        save_atomic({"mean": cal.mean, "kind": kind, "info": info}, path)
    ctx.sections["calibration"] = info
    ctx.files["calibration"] = CALIBRATION_FILE
    return cal.to(ctx.device)


class SIDETrainer(EigenTrainer):
    check_config = staticmethod(check_config)

    @classmethod
    def prepare(cls, ctx: TrainContext, resume: bool = True, eigen_cache_dir=None) -> None:
        super().prepare(ctx, resume, eigen_cache_dir)
        if not resume:
            (ctx.out_dir / CALIBRATION_FILE).unlink(missing_ok=True)
        ctx.extras["calibration"] = fit_side_calibration(ctx)

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        c = ctx.cfg
        self.model = SIDEModel(
            n_components=c["n_components"], feat_dim=c["feat_dim"], n_items=c["n_items"],
            widths=c["widths"], image_size=c["face_size"], use_memory=c["use_memory"],
            memory_decay=c["memory_decay"], memory_update=c["memory_update"]).to(ctx.device)
        if c["prior_topk"]:  # a resumed run overwrites this with its checkpoint
            self.model.init_prior(c["prior_topk"], c["prior_logit"])
        self.calibration = ctx.extras["calibration"]
        self.ema = None
        self.optimizer = None

    schedule_keys = ("warmup_steps", "ssat_steps")

    def phases_for(self, c):
        return [("warmup", c["warmup_steps"])] + ([("ssat", c["ssat_steps"])] if c["ssat"]
                                                  else [])

    def _new_optimizer(self):
        c = self.ctx.cfg
        return torch.optim.SGD(self.model.optimized_parameters(), lr=c["lr"],
                               momentum=c["momentum"], weight_decay=c["weight_decay"])

    def begin_phase(self, name: str) -> None:
        super().begin_phase(name)
        self.optimizer = self._new_optimizer()
        if name == "ssat":
            self.ema = make_ema(self.model)

    def step(self, phase: str, x: torch.Tensor, phase_step: int) -> Dict[str, float]:
        ctx, c = self.ctx, self.ctx.cfg
        rec_net, gen, basis = ctx.recognizer, ctx.generator, self.basis
        with torch.no_grad():
            anchor = embed(rec_net, x)
        metrics: Dict[str, float] = {}
        if phase == "warmup":
            noise = torch.randn(x.shape, generator=gen).to(x.device)
            x_in = x + c["warmup_noise"] * noise
        else:
            x_in, metrics["adv_cos"] = fgsm_siamese(self.ema, basis, rec_net, x, anchor,
                                                    c["fgsm_eta"], gen, self.calibration)
        self.model.train()
        p = self.model(x_in)
        masks = sample_antibodies(p, c["k"], gen)
        b, k = masks.shape[:2]
        with torch.no_grad():
            recon = basis.project(x_in, masks)  # B x k x 1 x s x s
            emb = embed(rec_net, recon.flatten(0, 1)).view(b, k, -1)
            cos = self.calibration.cosine(emb, anchor.unsqueeze(1))
            pix = pixel_term(recon, x, c["pixel"])
            size = masks.sum(-1)
            s = affinity(cos, pix, size, c["lambdas"])
        loss = reinforce_loss(log_likelihood(p, masks), s, "image", c["clone_reduction"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if phase == "ssat" and (phase_step + 1) % c["ema_every"] == 0:
            ema_update(self.ema, self.model, c["ema_decay"])
        metrics.update(loss=float(loss.detach()), affinity=float(s.mean()),
                       cos=float(cos.mean()), pixel=float(pix.mean()),
                       clone_size=float(size.float().mean()), **antibody_stats(p))
        return metrics

    def state_dict(self) -> Dict[str, Any]:
        return {"phase": self.phase, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None,
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.phase = state["phase"]
        self.optimizer = None
        if state["optimizer"] is not None:
            self.optimizer = self._new_optimizer()
            self.optimizer.load_state_dict(state["optimizer"])
        self.ema = None
        if state["ema"] is not None:
            self.ema = make_ema(self.model)
            self.ema.load_state_dict(state["ema"])

    def export(self):
        return dict(self.model.config), self.model.state_dict()

"""PIN training: the denoising auto-encoder, then the eigenface selector.

The authors released the selector's training code but not the DAE's (digest section 3.2,
default 24), so:

* Phase ``dae`` (not in the released code; the choices here are ours): denoise faces
  carrying Gaussian noise whose L2 norm is 0.04 of the batch's (PIN's noise), loss =
  MSE(first pass, clean) + MSE(second pass, clean), since PIN applies the pair twice and
  uses the second output; batch 20, lr x0.5 every 20 epochs (the weights' name
  ``dae2_200`` suggests 200 epochs). Optimizer ``dae_optimizer``: ``adam`` (default, lr
  ``dae_lr`` = 1e-3) or ``sgd`` (the selector's SGD, lr 0.01, momentum 0.9, which the first
  models used). Measured on 400 training faces, batch 8: SGD left the DAE at its all-zero
  output (loss 0.42 after 60 steps, 2 x the 0.19 of predicting 0 for every pixel), Adam
  reached 0.075 and was still falling, so the selector sees a denoised face, not a constant.
* Phase ``selector`` (the code): DAE frozen; the same noise; k = 30 Bernoulli clones per
  face; cost = pixel MSE(projection of the noisy face, clean face) + 0.015 |a|, no
  recognizer term; baseline = mean cost over every clone of the batch; surrogate summed
  over clones, averaged over faces; SGD lr 0.01, momentum 0.9, lr x0.5 every 20 epochs.

Presets: ``full`` = 200 + 200 epochs of the training split at batch 20; ``quick`` (CPU,
about 10 min) = 100 + 100 steps at batch 8 with the basis on 3000 evenly spaced images;
``medium`` = ``quick`` for 500 + 1000 steps (the DAE under Adam needs fewer).
The learning rate is set from the step count (no scheduler object to checkpoint).
"""
from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F

from facebench.defenses.eigen.antibody import (antibody_stats, log_likelihood, pixel_term,
                                               reinforce_loss, sample_antibodies)
from facebench.defenses.eigen.training import EigenTrainer
from facebench.errors import FacebenchError
from facebench.trainer import TrainContext

from .model import PINModel

_COMMON: Dict[str, Any] = dict(
    face_size=112, n_components=2500, feat_dim=512, widths=[64, 128, 256, 512],
    dae_widths=[64, 128, 256], k=30, lr=0.01, momentum=0.9, lr_gamma=0.5,
    noise_scale=0.04, lamb_sparse=0.015, dae_optimizer="adam", dae_lr=1e-3,
)
PRESETS: Dict[str, Dict[str, Any]] = {
    "quick": {**_COMMON, "batch_size": 8, "dae_steps": 100, "selector_steps": 100,
              "lr_step": 1000, "dae_epochs": None, "selector_epochs": None,
              "lr_step_epochs": None, "max_images": 3000, "checkpoint_every": 20,
              "log_every": 5},
    "medium": {**_COMMON, "batch_size": 8, "dae_steps": 500, "selector_steps": 1000,
               "lr_step": 1000, "dae_epochs": None, "selector_epochs": None,
               "lr_step_epochs": None, "max_images": 3000, "checkpoint_every": 100,
               "log_every": 25},
    "full": {**_COMMON, "batch_size": 20, "dae_steps": None, "selector_steps": None,
             "lr_step": None, "dae_epochs": 200, "selector_epochs": 200,
             "lr_step_epochs": 20, "max_images": None, "checkpoint_every": 1000,
             "log_every": 100},
}


def check_config(cfg: Dict[str, Any]) -> None:
    def need(ok, key, what):
        if not ok:
            raise FacebenchError(f"pin option {key} must be {what}, got {cfg[key]!r}")

    for key in ("k", "batch_size", "n_components", "feat_dim", "checkpoint_every",
                "log_every"):
        need(isinstance(cfg[key], int) and not isinstance(cfg[key], bool) and cfg[key] >= 1,
             key, "an integer >= 1")
    for steps, epochs in (("dae_steps", "dae_epochs"), ("selector_steps", "selector_epochs"),
                          ("lr_step", "lr_step_epochs")):
        need(cfg[steps] is not None or cfg[epochs] is not None, steps,
             f"set (or {epochs})")
    need(cfg["dae_optimizer"] in ("adam", "sgd"), "dae_optimizer", "'adam' or 'sgd'")
    need(isinstance(cfg["dae_lr"], (int, float)) and not isinstance(cfg["dae_lr"], bool)
         and cfg["dae_lr"] > 0, "dae_lr", "a number > 0")


def resolve_steps(cfg: Dict[str, Any], n_images: int) -> Dict[str, Any]:
    """Turn epoch counts into step counts for ``n_images`` (last partial batch dropped)."""
    per_epoch = max(1, n_images // cfg["batch_size"])
    out = dict(cfg)
    for steps, epochs in (("dae_steps", "dae_epochs"), ("selector_steps", "selector_epochs"),
                          ("lr_step", "lr_step_epochs")):
        if out[steps] is None:
            out[steps] = int(out[epochs]) * per_epoch
    out["lr_step"] = max(1, out["lr_step"])
    return out


def relative_noise(x: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise rescaled to ``scale`` times the L2 norm of the whole batch (PIN)."""
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    return noise * (scale * x.norm() / noise.norm())


class PINTrainer(EigenTrainer):
    check_config = staticmethod(check_config)
    resolve_steps = staticmethod(resolve_steps)

    def __init__(self, ctx: TrainContext):
        super().__init__(ctx)
        c = ctx.cfg
        self.model = PINModel(n_components=c["n_components"], feat_dim=c["feat_dim"],
                              widths=c["widths"], image_size=c["face_size"],
                              dae_widths=c["dae_widths"]).to(ctx.device)
        self.optimizer = None

    def phases(self):
        c = self.ctx.cfg
        return [("dae", c["dae_steps"]), ("selector", c["selector_steps"])]

    def _new_optimizer(self, phase: str):
        c = self.ctx.cfg
        if phase == "dae" and c["dae_optimizer"] == "adam":
            return torch.optim.Adam(self.model.dae.parameters(), lr=c["dae_lr"])
        params = (self.model.dae.parameters() if phase == "dae"
                  else self.model.selector_parameters())
        return torch.optim.SGD(params, lr=c["lr"], momentum=c["momentum"])

    def begin_phase(self, name: str) -> None:
        super().begin_phase(name)
        if name == "selector":
            self.model.freeze_dae()
        self.optimizer = self._new_optimizer(name)

    def step(self, phase: str, x: torch.Tensor, phase_step: int) -> Dict[str, float]:
        c, gen = self.ctx.cfg, self.ctx.generator
        base = c["dae_lr"] if phase == "dae" and c["dae_optimizer"] == "adam" else c["lr"]
        lr = base * c["lr_gamma"] ** (phase_step // c["lr_step"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        noisy = x + relative_noise(x, c["noise_scale"], gen)
        self.model.train()
        if phase == "dae":
            first, second = self.model.dae.twice(noisy)
            loss = F.mse_loss(first, x) + F.mse_loss(second, x)
            metrics = {"mse_first": float(F.mse_loss(first.detach(), x)),
                       "mse_second": float(F.mse_loss(second.detach(), x))}
        else:
            p = self.model(noisy)
            masks = sample_antibodies(p, c["k"], gen)
            with torch.no_grad():
                recon = self.basis.project(noisy, masks)
                pix = pixel_term(recon, x, "mse")
                size = masks.sum(-1)
                cost = pix + c["lamb_sparse"] * size.to(pix.dtype)
            loss = reinforce_loss(log_likelihood(p, masks), -cost, "batch", "sum")
            metrics = {"cost": float(cost.mean()), "pixel": float(pix.mean()),
                       "clone_size": float(size.float().mean()), **antibody_stats(p)}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        metrics.update(loss=float(loss.detach()), lr=lr)
        return metrics

    def state_dict(self) -> Dict[str, Any]:
        return {"phase": self.phase, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.phase = state["phase"]
        self.optimizer = None
        if self.phase == "selector":
            self.model.freeze_dae()
        if state["optimizer"] is not None:
            self.optimizer = self._new_optimizer(self.phase)
            self.optimizer.load_state_dict(state["optimizer"])

    def export(self):
        return dict(self.model.config), self.model.state_dict()

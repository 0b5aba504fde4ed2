"""LOTS (Rozsa, Günther & Boult): iterate the probe's embedding onto a target embedding.

Seed 004 (Amada et al.) measures robustness with it: an unbounded, per-sample-stopped
feature-space attack, scored by the τ-attack success rate (the share of probes broken with an
L2 perturbation below τ) instead of a success rate at one budget.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import torch

from facebench.attack import Attack, success
from facebench.errors import FacebenchError
from facebench.registry import register_attack

#: τ thresholds on ‖x_adv − x‖₂ in 0..255 pixel units (seed 004 gives its curves only as
#: figures, with no numbers). For scale on a 150×150 RGB crop: 260 is every pixel moved by one
#: grey level, 2078 a full linf 8/255 sign perturbation; undefended dlib-resnet breaks at
#: about 30–800 (impersonation median ≈ 130, dodging ≈ 200).
DEFAULT_TAUS = (50, 100, 250, 500, 1000, 2000)


@register_attack("lots")
class LOTS(Attack):
    """LOTS: x ← x − step·∇‖F(x)−t‖²/‖∇‖∞ until the decision flips, unbounded.

    Impersonation targets the gallery embedding; dodging targets its mirror −g (cosine −1 with
    the gallery at the same norm), so one Euclidean loss serves both goals. Each probe stops
    at its first flipped iterate (cosine past ``thr`` by ``margin``) or after ``steps``.
    ``step`` is the largest pixel change of one iteration in 0..255 grey levels; ``quantize``
    keeps every iterate on the 8-bit grid, like the original LOTS on 8-bit images. The
    threat's eps is ignored (the threat is still recorded in the rows); robustness is read
    from the ``tau_asr_<τ>`` rows, with τ on ‖x_adv−x‖₂ in 0..255 units like LOTS reports.
    """

    #: the search ignores the threat ball, so a budget sweep (--minimal-eps) is meaningless
    metric_formats = {"tau_asr_<tau>": "percent"}  # share flipped within ||d||_2*255 < tau
    unbounded = True
    defaults = {"steps": 500, "step": 1.0, "quantize": False, "margin": 0.0,
                "taus": DEFAULT_TAUS}

    def validate(self) -> None:
        self._int_at_least("steps", 1)
        self._positive("step")
        self._non_negative("margin")
        if not isinstance(self.quantize, bool):
            raise FacebenchError(f"lots quantize must be true or false, got {self.quantize!r}")
        if self.quantize and self.step < 1:
            raise FacebenchError(f"lots step must be >= 1 grey level with quantize "
                                 f"(smaller steps can round to no change), got {self.step!r}")
        taus = self.taus
        if isinstance(taus, (int, float)) and not isinstance(taus, bool):
            taus = (taus,)
        elif isinstance(taus, str):
            try:
                taus = tuple(float(t) for t in taus.replace(";", ",").split(",") if t.strip())
            except ValueError:
                raise FacebenchError(f"lots taus must be numbers, got {self.taus!r}") from None
        try:
            taus = tuple(float(t) for t in taus)
        except (TypeError, ValueError):
            raise FacebenchError(f"lots taus must be numbers, got {self.taus!r}") from None
        if not taus or any(math.isnan(t) or math.isinf(t) or t <= 0 for t in taus):
            raise FacebenchError(f"lots taus must be finite numbers > 0, got {self.taus!r}")
        self.taus = tuple(sorted(set(taus)))
        self.params["taus"] = self.taus

    def _done(self, emb, g, d, thr):
        """Decision flipped with the margin: cos < thr−margin (dodge), >= thr+margin (impersonate)."""
        return success(emb, g, d, thr + torch.where(d, -self.margin, self.margin))

    def perturb(self, model, probe, gallery_emb, dodge, thr):
        x, g, d = self._inputs(probe, gallery_emb, dodge)
        view = (-1,) + (1,) * (x.dim() - 1)
        target = torch.where(d.reshape(-1, 1), -g, g)
        x_adv = x.clone()
        active = torch.arange(x.shape[0], device=x.device)
        self.iterations = torch.zeros(x.shape[0], dtype=torch.long)
        for it in range(self.steps + 1):
            with torch.enable_grad():
                xa = x_adv[active].requires_grad_(True)
                emb = model(xa)
                loss = (emb - target[active]).pow(2).sum()
                (grad,) = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                done = self._done(emb.detach(), g[active], d[active], thr)
                self.iterations[active[done].cpu()] = it
                keep = ~done
                active, grad = active[keep], grad[keep]
                if active.numel() == 0 or it == self.steps:
                    self.iterations[active.cpu()] = it
                    break
                gmax = grad.reshape(grad.shape[0], -1).abs().amax(dim=1).clamp_min(1e-20)
                new = x_adv[active] - (self.step / 255.0) * grad / gmax.reshape(view)
                if self.quantize:
                    new = torch.round(new * 255.0) / 255.0
                x_adv[active] = new.clamp(0.0, 1.0)
        return x_adv.detach()

    def __repr__(self) -> str:
        # the adversarial-example cache is keyed on this: τ only changes the metric rows
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if k != "taus")
        return f"{self.name}({self.threat.describe()}, {args})"

    def extra_metrics(self, success: np.ndarray, l2: np.ndarray) -> Dict[str, float]:
        """``tau_asr_<τ>``: share of attacked probes flipped with ‖x_adv−x‖₂·255 < τ.

        The denominator is every attacked probe, so each curve is capped by the ASR; seed
        004 divides by the successful examples only, which is the same there because all of
        its attacks succeeded. Computed from the runner's arrays alone, so cached examples
        give the same rows.
        """
        success = np.asarray(success, dtype=bool).reshape(-1)
        l2_255 = 255.0 * np.asarray(l2, dtype=float).reshape(-1)
        out = {}
        for tau in self.taus:
            key = f"tau_asr_{tau:g}"
            out[key] = float(np.mean(success & (l2_255 < tau))) if success.size else math.nan
        ok = l2_255[success]
        out["median_l2_255_success"] = float(np.median(ok)) if ok.size else math.nan
        return out

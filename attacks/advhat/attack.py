"""The AdvHat attack: its parameters, the sticker optimiser and the Table 6 protocol."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from facebench.errors import FacebenchError
from facebench.fingerprint import source_hash
from facebench.protocol_attack import ProtocolAttack, ProtocolContext
from facebench.registry import register_attack

from . import figure, selection
from . import sticker as S

INITS = ("grey", "random")
#: parameters that only change the evaluation, not the trained sticker (not in its cache key)
EVAL_ONLY = ("n_people", "gallery_photos")


def _normalized_mean(emb: torch.Tensor) -> torch.Tensor:
    """1×D template: the L2-normalised mean of L2-normalised embeddings."""
    return F.normalize(F.normalize(emb.float(), dim=1).mean(0, keepdim=True), dim=1)


@register_attack("advhat")
class AdvHat(ProtocolAttack):
    """AdvHat universal forehead sticker (impersonation, SIDE Table 6; own protocol).

    Training (grey-box by default: on the bare recognizer; ``--adaptive``: through the
    defense with BPDA/EOT as it needs) minimises −cos(F(face+sticker), target) + λ·TV over
    training-split faces, with AdvHat's parabolic bend and lean-back, a fresh random
    placement per face and step (EOT), and AdvHat's two-stage sign-momentum optimiser.
    ``steps=0`` evaluates the initial sticker. Each stickered face is then verified against
    each of the target's enrolled gallery photos, at the protocol's clean threshold.
    Parameters: ``target`` (LFW name; default the evaluation-split person with most photos),
    ``target_photos`` (attacker's photos, averaged into the training template),
    ``gallery_photos`` (other photos of the target enrolled in the system; 1 = SIDE's single
    target image), ``n_people`` (evaluation faces), ``train_images`` (training-split crops to
    draw from), ``batch`` (faces per step), ``step_size`` (stage-1 step, pixel units; stage
    2 uses a fifth), ``tv_weight`` (λ), ``bend``/``tilt`` (off-plane placement), ``init``
    (grey, random or a PNG of the sticker's size).
    """

    metric_formats = {"accuracy": "percent", "tar_at_thr": "percent", "frr_at_thr": "percent",
                      "far_at_thr": "percent", "impersonation_rate": "percent",
                      "accuracy_grey_sticker": "percent"}

    datasets = ("lfw",)  # it needs identities: a target and people who are not the target
    goals = ("impersonation", "pair")
    defaults = {"steps": 300, "batch": 16, "step_size": 5 / 255, "tv_weight": 0.3,
                "target": None, "target_photos": 10, "gallery_photos": 5, "n_people": 1000,
                "train_images": 3000,
                "bend": S.ADVHAT_BEND, "tilt": S.ADVHAT_TILT, "init": "grey"}

    def validate(self) -> None:
        self._int_at_least("steps", 0)
        for key in ("batch", "target_photos", "gallery_photos", "n_people", "train_images"):
            self._int_at_least(key, 1)
        self._positive("step_size")
        if self.step_size > 1:
            raise FacebenchError(f"advhat step_size is in [0, 1] pixel units, got {self.step_size}")
        self._non_negative("tv_weight")
        self._number("bend", -2.0, strict=False)
        if self.bend > 2:
            raise FacebenchError(
                f"advhat bend must be in [-2, 2] (depth / half width), got {self.bend}")
        self._number("tilt", -80.0, strict=False)
        if self.tilt > 80:
            raise FacebenchError(f"advhat tilt must be in [-80, 80] degrees, got {self.tilt}")
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise FacebenchError(f"advhat target must be an LFW person name, got {self.target!r}")
        if not isinstance(self.init, str) or (self.init not in INITS
                                              and not Path(self.init).is_file()):
            raise FacebenchError(f"advhat init must be one of {', '.join(INITS)} or a PNG file, "
                                 f"got {self.init!r}")

    # -- pieces, usable on their own ------------------------------------------------------
    def placement(self, crop_hw, eyes_mouth_y=None) -> S.Placement:
        return S.forehead_placement(crop_hw, bend=self.bend, tilt=self.tilt,
                                    eyes_mouth_y=eyes_mouth_y)

    def initial_sticker(self, place: S.Placement, seed: int = 0) -> torch.Tensor:
        hw = (place.height, place.width)
        if self.init == "grey":
            return torch.full((3, *hw), 127 / 255)
        if self.init == "random":
            return torch.rand((3, *hw), generator=torch.Generator().manual_seed(seed))
        return S.load_png(self.init, hw)

    def train(self, model, faces_u8: np.ndarray, template: torch.Tensor, place: S.Placement,
              seed: int = 0, device="cpu", progress: bool = True):
        """(sticker 3×h×w, mean target cosine over the last tenth of the steps).

        ``template`` is the 1×D target embedding in ``model``'s space; each step draws
        ``batch`` faces and one random placement per face.
        """
        from facebench.embed import to_float

        gen = torch.Generator().manual_seed(seed)
        sticker = self.initial_sticker(place, seed).to(device)
        opt = S.SignMomentum(self.steps, self.step_size)
        jitter = S.Jitter()
        recent = []
        bar = tqdm(range(self.steps), desc="advhat sticker", unit="step", disable=not progress)
        for _ in bar:
            idx = torch.randint(len(faces_u8), (self.batch,), generator=gen).numpy()
            faces = to_float(faces_u8[idx], device)
            params = jitter.sample(place, self.batch, gen, device)
            with torch.enable_grad():
                s = sticker.detach().requires_grad_(True)
                emb = model(S.apply(s, faces, place, params)).float()
                cos = F.cosine_similarity(emb, template.to(emb.device).expand_as(emb), dim=1)
                loss = -cos.mean() + self.tv_weight * S.tv_loss(s)
                (grad,) = torch.autograd.grad(loss, s)
            sticker = opt.step(sticker, grad)
            recent.append(float(cos.detach().mean()))
            bar.set_postfix(cos=f"{recent[-1]:.3f}", stage=opt.stage())
        bar.close()
        tail = recent[-max(1, len(recent) // 10):]
        return sticker.detach(), (float(np.mean(tail)) if tail else float("nan"))

    # -- the protocol --------------------------------------------------------------------
    def evaluate(self, ctx: ProtocolContext) -> None:
        """Clean rows at the protocol's threshold, then train and score one sticker."""
        from facebench.data import (aligner_for, default_cache_dir, load_aligned,
                                    resolve_data_home)
        from facebench.datasets.lfw import ensure_lfw, lfw_pairs
        from facebench.embed import to_float

        cfg, device = ctx.cfg, ctx.device
        t0 = time.perf_counter()
        home = ensure_lfw(resolve_data_home(cfg.data_home), cfg.protocol, download=cfg.download)
        full = lfw_pairs(home, cfg.protocol)
        sel = selection.select(self, home, cfg.protocol, full, cfg.seed)
        aligner = aligner_for("lfw", ctx.recognizer)
        place = self.placement(aligner.out_size, getattr(aligner, "eyes_mouth_y", None))
        cache = default_cache_dir()

        def crops(paths, key):
            return load_aligned(paths, aligner, cache, cache_key=f"lfw_{cfg.protocol}_{key}",
                                progress=cfg.progress, root=home)

        # --- clean: the protocol's threshold through the defended system -------------------
        pairs = full.subset(cfg.pairs, cfg.seed) if cfg.pairs is not None else full
        clean = ctx.clean_threshold(pairs, aligner)
        thr = clean.thr
        faces_u8 = crops(sel.eval_paths, "advhat_eval")
        target_u8 = crops(sel.target_paths, "advhat_target")
        gallery = ctx.embed(crops(sel.gallery_paths, "advhat_gallery"), "gallery")
        clean_cos = self._target_cos(ctx.defended, faces_u8, None, place, gallery, cfg, device)
        ctx.start_rows(len(sel.eval_paths), cfg.protocol)
        ctx.emit({"threshold": thr, "tar_at_thr": clean.tar, "frr_at_thr": 1 - clean.tar,
                  "far_at_thr": clean.far, "accuracy": float(np.mean(clean_cos < thr)),
                  "mean_target_cos": float(clean_cos.mean())},
                 time.perf_counter() - t0)

        # --- train the sticker: grey-box as in SIDE (bare recognizer), or --adaptive -------
        t0 = time.perf_counter()
        model, adaptive = ctx.attacker_model()
        with torch.no_grad():
            attack_template = _normalized_mean(model(to_float(target_u8, device)))
        key = None
        sticker = None
        if ctx.cache_enabled and self.init in INITS:
            key = self._cache_key(cfg, aligner.key, sel.target_paths, sel.train_paths)
            cached = ctx.cache_get(key, (4, place.height, place.width))
            if cached is not None:  # channel 3 holds the training cosine
                sticker = torch.from_numpy(cached[:3].copy()).to(device)
                train_cos = float(cached[3, 0, 0])
                if cfg.progress:
                    print(f"reusing the cached grey-box advhat sticker (target {sel.target})")
        if sticker is None:
            train_u8 = crops(sel.train_paths, "train")
            sticker, train_cos = self.train(model, train_u8, attack_template, place, cfg.seed,
                                            device, cfg.progress)
            if key is not None:
                stored = torch.cat([sticker.cpu(), torch.full_like(sticker[:1].cpu(), train_cos)])
                ctx.cache_put(key, stored.numpy())
        train_s = time.perf_counter() - t0

        # --- evaluate: fixed placement on every evaluation face, through the defense --------
        adv_cos = self._target_cos(ctx.defended, faces_u8, sticker, place, gallery, cfg, device)
        grey = torch.full_like(sticker, 127 / 255)
        grey_cos = self._target_cos(ctx.defended, faces_u8, grey, place, gallery, cfg, device)
        accuracy = float(np.mean(adv_cos < thr))
        budget = place.height * place.width / float(np.prod(aligner.out_size))
        ctx.emit({"accuracy": accuracy, "impersonation_rate": 1 - accuracy,
                  "mean_target_cos": float(adv_cos.mean()),
                  "accuracy_grey_sticker": float(np.mean(grey_cos < thr)),
                  "mean_target_cos_grey_sticker": float(grey_cos.mean()),
                  "train_target_cos": train_cos, "train_steps": self.steps,
                  "train_s": train_s},
                 time.perf_counter() - t0, attack=self.name,
                 threat_model=f"sticker:{sel.target}",
                 budget=round(budget, 6), goal="impersonation", adaptive=adaptive)
        folder = ctx.artifacts_dir("advhat")
        if folder is not None:
            figure.save(folder, cfg, sel.target, adaptive, sticker, faces_u8, place,
                        ctx.defense, adv_cos, thr, device)

    # -- helpers -------------------------------------------------------------------------
    def _choose_target(self, people, first_photo) -> str:
        """The named person, or the evaluation-split person with the most LFW photos."""
        if self.target is None:
            return min(first_photo, key=lambda n: (-len(people.get(n, [])), n))
        if self.target not in people:
            import difflib

            close = difflib.get_close_matches(self.target, people, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FacebenchError(f"advhat target {self.target!r} is not an LFW person{hint}")
        if len(people[self.target]) < 2:
            raise FacebenchError(f"advhat target {self.target!r} has one LFW photo; it needs two "
                                 "(the attacker's and the gallery's)")
        return self.target

    @torch.no_grad()
    def _target_cos(self, defended, faces_u8, sticker, place, gallery, cfg, device):
        """faces × gallery cosines of the faces (stickered at the fixed placement, or clean)."""
        from facebench.embed import to_float

        out = []
        desc = "clean faces" if sticker is None else "stickered faces"
        for start in tqdm(range(0, len(faces_u8), cfg.batch_size), desc=desc, unit="batch",
                          disable=not cfg.progress, leave=False):
            x = to_float(faces_u8[start:start + cfg.batch_size], device)
            if sticker is not None:
                x = S.apply(sticker, x, place)
            emb = defended(x).float()
            if not torch.isfinite(emb).all():
                raise FacebenchError("advhat: the defended system returned NaN/inf embeddings")
            out.append(F.normalize(emb, dim=1).cpu() @ F.normalize(gallery.float(), dim=1).T)
        return torch.cat(out).numpy()

    def _cache_key(self, cfg, aligner_key, target_paths, train_paths) -> str:
        """The trained sticker's name: what it was trained on and the code that trained it."""
        payload = json.dumps({
            "kind": "advhat-sticker", "recognizer": cfg.recognizer, "protocol": cfg.protocol,
            "aligner": aligner_key, "seed": cfg.seed,
            "params": {k: v for k, v in self.params.items() if k not in EVAL_ONLY},
            "target": hashlib.sha256("\n".join(target_paths).encode()).hexdigest(),
            "train": hashlib.sha256("\n".join(train_paths).encode()).hexdigest(),
            "source": source_hash(AdvHat, S)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

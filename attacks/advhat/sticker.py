"""A printed sticker on a face crop, differentiably: AdvHat's off-plane model, EOT, TV, saving.

Komkov & Petiushko (AdvHat, 2019) model a paper sticker on a hat by two off-plane moves
applied to the flat sticker before it is pasted: a *parabolic bend* (the sticker wraps around
the head, depth ``z = k·x²``, with the paper's arc length preserved, so the sides shrink in the
image), then an *off-plane rotation* about the horizontal axis (the surface leans back, so
its height shrinks by cos φ and the receding sides rise). Small random rotations, shifts,
scales and bend/tilt changes drawn at every step (expectation over transformation, EOT) make
the sticker survive imprecise placement.

Here the whole chain is one inverse map per output pixel, sampled with ``grid_sample``: for
every crop pixel, where on the flat sticker does it land? Gradients then reach every sticker
pixel, and crop pixels the sticker does not cover do not depend on it. Orthographic
projection, as in the authors' code. Coordinates are crop pixels with pixel ``j`` spanning
``[j, j+1)``; with no bend, tilt, rotation or scaling the sticker's pixels land exactly on a
rectangle of the crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from facebench.errors import FacebenchError

#: the SIDE paper's sticker (H×W) on 112×112 ArcFace crops (Table 6)
PAPER_STICKER = (20, 72)
PAPER_CROP = 112
#: eye line to mouth line in that crop: the ArcFace template's (51.6 -> 92.3 px)
PAPER_EYES_TO_MOUTH = 40.7
#: the sticker's lower edge above the eye line, in eye-to-mouth distances
FOREHEAD_GAP = 0.21
#: AdvHat's default off-plane parameters, scale-free: depth of the sticker's ends relative to
#: its half width (their 0.0013 px⁻¹ on a 900 px wide sticker) and the lean-back angle
ADVHAT_BEND = 0.585
ADVHAT_TILT = 17.0


@dataclass(frozen=True)
class Placement:
    """Where and how the flat ``height×width`` sticker sits on the crop (crop pixels, degrees).

    ``cx, cy``: centre of the sticker on the crop; ``bend``: depth of its left/right ends
    relative to its half width (0 = flat); ``tilt``: off-plane lean-back angle; ``angle``:
    in-plane rotation; ``scale``: in-plane zoom.
    """

    cx: float
    cy: float
    height: int
    width: int
    bend: float = ADVHAT_BEND
    tilt: float = ADVHAT_TILT
    angle: float = 0.0
    scale: float = 1.0

    def rectangle(self) -> Tuple[float, float, float, float]:
        """(top, left, bottom, right) of the flat, unrotated sticker on the crop."""
        return (self.cy - self.height / 2, self.cx - self.width / 2,
                self.cy + self.height / 2, self.cx + self.width / 2)


def forehead_placement(crop_hw: Sequence[int] = (150, 150), bend: float = ADVHAT_BEND,
                       tilt: float = ADVHAT_TILT, eyes_mouth_y=None) -> Placement:
    """The SIDE sticker scaled to a dlib-chip crop, centred on the forehead above the brows.

    Face scale: in the 150×150 dlib chips (``bench/data/align.py``) the mean LFW face has its
    eyes about 47 px apart and 57 px above the mouth; in the 112×112 ArcFace template these are
    35 and 41 px, so the face occupies the same share of both crops and 20×72 scales by
    150/112 to 27×96. Position: brows sit near y≈35, eyes y≈45, hairline y≈5–15 in those
    chips, so the flat sticker spans y 6–33 (centre 0.13·H), centred horizontally.

    ``eyes_mouth_y``: a crop geometry that declares where its eye line and mouth line sit
    (fractions of its height; an ArcFace template crop does) gets the sticker placed by its
    face instead: scaled so that the paper's 20×72 sticker goes with the paper's 112 px
    ArcFace crop (eye-to-mouth 40.7 px), its lower edge 0.21 eye-to-mouth distances above
    the eye line -- where it sits in the dlib chips above (33 = 45 − 0.21·57).
    """
    h, w = (int(v) for v in crop_hw)
    if eyes_mouth_y is not None:
        eyes, mouth = (float(v) * h for v in eyes_mouth_y)
        face = mouth - eyes
        sh = int(round(PAPER_STICKER[0] * face / PAPER_EYES_TO_MOUTH))
        sw = int(round(PAPER_STICKER[1] * face / PAPER_EYES_TO_MOUTH))
        bottom = eyes - FOREHEAD_GAP * face
        return Placement(cx=w / 2, cy=bottom - sh / 2, height=sh, width=sw, bend=bend,
                         tilt=tilt)
    sh = int(round(PAPER_STICKER[0] * h / PAPER_CROP))
    sw = int(round(PAPER_STICKER[1] * w / PAPER_CROP))
    cy = round(0.04 * h) + sh / 2
    return Placement(cx=w / 2, cy=cy, height=sh, width=sw, bend=bend, tilt=tilt)


# -- the inverse map -----------------------------------------------------------------------
def _arc_length(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Arc length along z = k·t² from t=0 to t=x (signed); x itself when k≈0."""
    flat = k.abs() < 1e-6
    k_safe = torch.where(flat, torch.ones_like(k), k)
    two_kx = 2 * k_safe * x
    curved = 0.5 * x * torch.sqrt(1 + two_kx ** 2) + torch.asinh(two_kx) / (4 * k_safe)
    return torch.where(flat, x, curved)


def _column(v, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise FacebenchError(f"placement parameter has {t.numel()} values for {n} faces")
    return t.reshape(n, 1, 1)


def sticker_grid(n: int, crop_hw: Sequence[int], sticker_hw: Sequence[int], cx, cy,
                 bend=0.0, tilt=0.0, angle=0.0, scale=1.0, device="cpu") -> torch.Tensor:
    """``grid_sample`` grid (n×H×W×2) mapping each crop pixel to flat-sticker coordinates.

    Each parameter is a float or one value per face. Coordinates follow ``grid_sample``'s
    ``align_corners=False`` convention: ±1 are the sticker's outer pixel edges, anything
    beyond lies off the sticker.
    """
    H, W = (int(v) for v in crop_hw)
    sh, sw = (float(v) for v in sticker_hw)
    cx, cy, bend, tilt, angle, scale = (_column(v, n, device)
                                        for v in (cx, cy, bend, tilt, angle, scale))
    v = torch.arange(H, dtype=torch.float32, device=device).add_(0.5).reshape(1, H, 1)
    u = torch.arange(W, dtype=torch.float32, device=device).add_(0.5).reshape(1, 1, W)
    du, dv = u - cx, v - cy
    a = angle * (math.pi / 180)
    cos_a, sin_a = torch.cos(a), torch.sin(a)
    # undo the in-plane similarity: image offset -> projected sticker frame
    x = (cos_a * du + sin_a * dv) / scale
    y = (-sin_a * du + cos_a * dv) / scale
    # undo the off-plane moves: image x is the bent curve's abscissa, its arc length is the
    # flat sticker's x; image y = b·cos φ − z·sin φ, so the flat sticker's b follows
    half_w = sw / 2
    k = bend / half_w
    flat_x = _arc_length(x, k)
    z = k * x ** 2
    phi = tilt * (math.pi / 180)
    flat_y = (y + z * torch.sin(phi)) / torch.cos(phi)
    return torch.stack((flat_x / half_w, flat_y / (sh / 2)), dim=-1)


def paste(sticker: torch.Tensor, faces: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Faces with the sticker (3×h×w or n×3×h×w in [0, 1]) pasted through ``grid``.

    Bilinear sampling of the sticker and of its all-ones coverage with the same weights
    gives an antialiased edge, and a convex blend of face and sticker inside it.
    """
    n = faces.shape[0]
    src = sticker.unsqueeze(0) if sticker.dim() == 3 else sticker
    src = src.to(faces.dtype).expand(n, -1, -1, -1)
    grid = grid.to(faces.dtype)
    drawn = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones_like(src[:, :1])
    cover = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return (faces * (1 - cover) + drawn).clamp(0, 1)


def apply(sticker: torch.Tensor, faces: torch.Tensor, place: Placement,
          params: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """Paste ``sticker`` at ``place`` (or at per-face ``params`` drawn by :meth:`Jitter.sample`)."""
    p = params if params is not None else dict(cx=place.cx, cy=place.cy, bend=place.bend,
                                                tilt=place.tilt, angle=place.angle,
                                                scale=place.scale)
    grid = sticker_grid(faces.shape[0], faces.shape[-2:], (place.height, place.width),
                        device=faces.device, **p)
    return paste(sticker, faces, grid)


@dataclass(frozen=True)
class Jitter:
    """Half-widths of the uniform EOT draws around a placement.

    AdvHat's ranges: ±4 % scale, ±2° tilt, ±15 % bend; in-plane rotation ±2° and shifts of
    ±2 crop px cover its ±1° sticker and ±1° whole-crop rotations and its ±1 px (of 112)
    sticker shift plus whole-crop jitter.
    """

    shift: float = 2.0
    angle: float = 2.0
    scale: float = 0.04
    tilt: float = 2.0
    bend: float = 0.15  # relative

    def sample(self, place: Placement, n: int, generator: torch.Generator,
               device="cpu") -> Dict[str, torch.Tensor]:
        def u(half: float) -> torch.Tensor:
            return ((torch.rand(n, generator=generator) * 2 - 1) * half).to(device)

        return dict(cx=place.cx + u(self.shift), cy=place.cy + u(self.shift),
                    angle=place.angle + u(self.angle), scale=place.scale * (1 + u(self.scale)),
                    tilt=place.tilt + u(self.tilt), bend=place.bend * (1 + u(self.bend)))


# -- loss and optimiser -------------------------------------------------------------------
def tv_loss(sticker: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean isotropic total variation: mean of sqrt(Δᵥ² + Δₕ² + eps) over channels, pixels.

    Forward differences; the last row (column) has no vertical (horizontal) neighbour and
    contributes 0 there, as in AdvHat's TV (which sums instead of averaging, so its weight
    depends on the sticker size; the mean keeps λ size-free).
    """
    s = sticker if sticker.dim() == 4 else sticker.unsqueeze(0)
    dv = F.pad(s[..., 1:, :] - s[..., :-1, :], (0, 0, 0, 1))
    dh = F.pad(s[..., :, 1:] - s[..., :, :-1], (0, 1, 0, 0))
    return torch.sqrt(dv ** 2 + dh ** 2 + eps).mean()


class SignMomentum:
    """AdvHat's optimiser: m ← μ·m + (1−μ)·g, x ← clip(x − step·sign(m), 0, 1).

    Two stages as in the authors' code: a coarse one (step 5/255, μ 0.9) and a fine one
    (step 1/255, μ 0.995). They switch when a line fitted to the last 100 losses stops
    falling; with a fixed step budget, the switch happens after ``switch`` of the steps.
    """

    def __init__(self, steps: int, step_size: float = 5 / 255, switch: float = 0.6):
        self.steps, self.step_size, self.switch = steps, step_size, switch
        self.moment: Optional[torch.Tensor] = None
        self.t = 0

    def stage(self) -> int:
        return 1 if self.t < int(round(self.switch * self.steps)) else 2

    @torch.no_grad()
    def step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One descent step on ``x`` (returned, clipped to [0, 1])."""
        first = self.stage() == 1
        mu = 0.9 if first else 0.995
        size = self.step_size if first else self.step_size / 5
        self.moment = grad * (1 - mu) if self.moment is None else \
            self.moment * mu + grad * (1 - mu)
        self.t += 1
        return (x - size * torch.sign(self.moment)).clamp_(0, 1)


# -- files --------------------------------------------------------------------------------
def to_uint8(img: torch.Tensor) -> np.ndarray:
    """3×h×w float in [0, 1] -> h×w×3 uint8 (rounded)."""
    arr = img.detach().float().cpu().clamp(0, 1).mul(255).round().byte()
    return arr.permute(1, 2, 0).numpy()


def save_png(img: torch.Tensor, path) -> Path:
    """Write a 3×h×w image in [0, 1] as a lossless PNG (the printable sticker)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(path, format="PNG")
    return path


def load_png(path, hw: Sequence[int]) -> torch.Tensor:
    """A sticker PNG as 3×h×w float in [0, 1]; its size must be ``hw``."""
    from .data.images import load_image

    arr = load_image(path)
    if arr.shape[:2] != tuple(hw):
        raise FacebenchError(f"sticker image {path} is {arr.shape[0]}x{arr.shape[1]}, "
                             f"expected {hw[0]}x{hw[1]}")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)


def save_figure(path, sticker: torch.Tensor, rows: Sequence[Tuple[str, torch.Tensor]],
                captions: Optional[Sequence[str]] = None, note: str = "",
                zoom: int = 2) -> Path:
    """A PNG grid: one labelled row per (title, n×3×H×W images), then the sticker, enlarged.

    ``captions`` (one per column) go under the last row, e.g. each face's cosine to the target;
    ``note`` is one line of text after them.
    """
    from PIL import Image, ImageDraw

    n = rows[0][1].shape[0]
    H, W = rows[0][1].shape[-2:]
    cell_w, cell_h, label_h, pad = W * zoom, H * zoom, 14, 4
    sticker_img = Image.fromarray(to_uint8(sticker))
    sz = max(1, min(zoom * 2, (n * (cell_w + pad) - pad) // sticker_img.width))
    sticker_img = sticker_img.resize((sticker_img.width * sz, sticker_img.height * sz),
                                     Image.Resampling.NEAREST)
    width = max(n * (cell_w + pad) - pad, sticker_img.width) + 2 * pad
    height = pad + len(rows) * (label_h + cell_h + pad) + label_h + \
        (label_h if captions else 0) + (label_h if note else 0) + sticker_img.height + 2 * pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for title, imgs in rows:
        draw.text((pad, y), title, fill="black")
        y += label_h
        for i in range(n):
            face = Image.fromarray(to_uint8(imgs[i])).resize((cell_w, cell_h),
                                                             Image.Resampling.NEAREST)
            canvas.paste(face, (pad + i * (cell_w + pad), y))
        y += cell_h + pad
    if captions:
        for i, text in enumerate(captions[:n]):
            draw.text((pad + i * (cell_w + pad), y), text, fill="black")
        y += label_h
    if note:
        draw.text((pad, y), note, fill="black")
        y += label_h
    draw.text((pad, y), f"sticker ({sticker.shape[-2]}x{sticker.shape[-1]} px, x{sz})",
              fill="black")
    canvas.paste(sticker_img, (pad, y + label_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path

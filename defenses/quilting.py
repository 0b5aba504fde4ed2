"""Image quilting (Guo et al., ICLR 2018): rebuild each image from clean patches.

Every patch of the input on a regular grid is replaced by one of its ``k`` nearest patches in
a bank cut from clean faces, so the output contains no perturbed pixel, only clean texture
chosen by appearance. Overlapping patches are averaged, as in the SIDE baseline code (Guo et
al. used a minimum-error seam instead). The bank comes from the LFW *training split* of the
evaluation protocol, i.e. people in no evaluated pair, cropped at the recognizer's geometry,
and is cached on disk. The random choice among neighbours makes the defense randomized (EOT),
and nearest-neighbour search has no gradient (BPDA).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from facebench.defense import Defense
from facebench.errors import FacebenchError
from facebench.fileio import save_torch_atomic
from facebench.registry import register_defense

from ._util import check_images, defaults_of, int_param, make_generator, seed_param

# The SIDE baseline code: 11×11 patches every 9 pixels on 112×112 faces (a 12×12 grid).
REF_PATCH, REF_STRIDE, REF_SIDE = 11, 9, 112
CHUNK = 512  # query patches per distance matrix: 512 × 50k floats ~ 100 MB


def bank_cache_dir() -> Path:
    """Where built patch banks are kept between runs."""
    from facebench.paths import cache_dir

    return cache_dir("quilting")


def scaled_patch(side: int) -> int:
    """The odd patch size covering the same face fraction as 11 px at 112 px."""
    p = max(3, round(REF_PATCH * side / REF_SIDE))
    return p if p % 2 else p + 1


def grid(side: int, patch: int, stride: int) -> np.ndarray:
    """Top-left offsets of patches covering ``[0, side)``; the last one is flush with the end."""
    starts = list(range(0, side - patch + 1, stride))
    if starts[-1] + patch < side:
        starts.append(side - patch)
    return np.asarray(starts, dtype=np.int64)


def build_patch_bank(images_u8, patch: int, n_patches: int, seed: int = 0) -> torch.Tensor:
    """``n_patches`` random ``patch×patch`` crops of uint8 N×H×W×3 images, as uint8 n×3×p×p.

    Crops are drawn uniformly over images and positions, so every region of an aligned face
    is represented in proportion to its area.
    """
    imgs = np.asarray(images_u8)
    if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[-1] != 3 or len(imgs) == 0:
        raise FacebenchError(f"patch bank needs a non-empty uint8 N×H×W×3 image stack, "
                             f"got {imgs.dtype} {imgs.shape}")
    _, h, w, _ = imgs.shape
    if patch > min(h, w):
        raise FacebenchError(f"quilting patch {patch} is larger than the {h}x{w} images")
    rng = np.random.default_rng(seed)
    which = rng.integers(len(imgs), size=n_patches)
    ys = rng.integers(h - patch + 1, size=n_patches)
    xs = rng.integers(w - patch + 1, size=n_patches)
    span = np.arange(patch)
    crops = imgs[which[:, None, None], ys[:, None, None] + span[None, :, None],
                 xs[:, None, None] + span[None, None, :]]  # n×p×p×3
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).contiguous()


def _as_bank(patches, where: str) -> torch.Tensor:
    """Validate a patch tensor (uint8 0..255 or float 0..1, n×3×p×p) -> float32 on CPU."""
    if isinstance(patches, dict):
        patches = patches.get("patches")
    if not torch.is_tensor(patches) or patches.dim() != 4 or patches.shape[1] != 3 \
            or patches.shape[2] != patches.shape[3] or len(patches) == 0:
        got = tuple(patches.shape) if torch.is_tensor(patches) else type(patches).__name__
        raise FacebenchError(f"quilting {where} must hold an n×3×p×p patch tensor, got {got}")
    if patches.dtype == torch.uint8:
        return patches.float().div(255.0)
    patches = patches.detach().float().cpu()
    if not torch.isfinite(patches).all() or patches.min() < 0 or patches.max() > 1:
        raise FacebenchError(f"quilting {where}: float patches must lie in [0, 1]")
    return patches


def _load_bank_file(path) -> torch.Tensor:
    path = Path(path).expanduser()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FacebenchError(f"quilting patch bank not found: {path}") from None
    except Exception as exc:  # a corrupt or foreign file: one line naming it
        raise FacebenchError(f"cannot read quilting patch bank {path}: {exc}") from None
    return _as_bank(obj, f"bank {path}")


@register_defense("quilting")
class Quilting(Defense):
    """Guo et al. image quilting: each grid patch -> one of its k nearest clean bank patches."""

    table_order = 5.0  # column/row position in the SIDE paper's Table 1
    differentiable = False
    randomized = True

    def __init__(self, patch: Optional[int] = None, stride: Optional[int] = None, k: int = 10,
                 n_patches: int = 50_000, n_images: int = 1000, bank: Optional[str] = None,
                 patches: Optional[torch.Tensor] = None, data_home: Optional[str] = None,
                 protocol: str = "10-fold", bank_seed: int = 0, seed: Optional[int] = None):
        super().__init__()
        name = "quilting"
        # patch/stride None: 11 and 9 px at 112 px (SIDE code), scaled to the image side.
        self.patch = None if patch is None else int_param(name, "patch", patch, 2, 512)
        self.stride = None if stride is None else int_param(name, "stride", stride, 1, 512)
        if self.patch is not None and self.stride is not None and self.stride > self.patch:
            raise FacebenchError(f"defense 'quilting': stride {self.stride} > patch "
                                 f"{self.patch} would leave pixels uncovered")
        # k=10 nearest neighbours, one drawn at random: Guo et al.'s setting.
        self.k = int_param(name, "k", k, 1, 1000)
        self.randomized = self.k > 1
        # 50k patches (~34 MB as uint8) from 1000 training-split faces: 50 per face, and one
        # 512×50k distance block stays ~100 MB on any device.
        self.n_patches = int_param(name, "n_patches", n_patches, 1, 10_000_000)
        self.n_images = int_param(name, "n_images", n_images, 1, 10_000_000)
        if bank is not None and patches is not None:
            raise FacebenchError("defense 'quilting': give either bank (a file) or patches")
        self.bank_path = None if bank is None else str(bank)
        self.data_home, self.protocol = data_home, str(protocol)
        self.bank_seed = int_param(name, "bank_seed", bank_seed, 0, 2**63 - 1)
        self.seed = seed_param(name, seed)
        self._gen = make_generator(self.seed)
        self._bank = None if patches is None else _as_bank(patches, "patches")
        if self._bank is None and self.bank_path is not None:
            self._bank = _load_bank_file(self.bank_path)
        if self._bank is not None and self.patch not in (None, self._bank.shape[-1]):
            raise FacebenchError(f"defense 'quilting': patch={self.patch} but the bank holds "
                                 f"{self._bank.shape[-1]}x{self._bank.shape[-1]} patches")
        self._alignment = "dlib-chip"
        self._on_device: dict = {}

    defaults = {k: v for k, v in defaults_of(__init__).items() if k != "patches"}

    def wrap(self, recognizer):
        """Remember the recognizer's alignment: a bank built later is cropped the same way."""
        self._alignment = getattr(recognizer, "alignment", None) or self._alignment
        return super().wrap(recognizer)

    # --- the patch bank --------------------------------------------------------------------
    def _build_bank(self, h: int, w: int) -> torch.Tensor:
        """Crop the training split at the recognizer geometry, sample patches, cache them."""
        from facebench.data import get_aligner, load_image, resolve_data_home
        from facebench.datasets.lfw import ensure_lfw, training_split

        patch = self.patch or scaled_patch(min(h, w))
        aligner = get_aligner(self._alignment, (h, w))
        key = (f"lfw-{self.protocol}-{aligner.key}-p{patch}-n{self.n_patches}"
               f"-i{self.n_images}-s{self.bank_seed}.pt")
        path = bank_cache_dir() / key
        if path.is_file():
            return _load_bank_file(path)
        home = ensure_lfw(resolve_data_home(self.data_home), self.protocol, download=False)
        paths = training_split(home, self.protocol)
        rng = np.random.default_rng(self.bank_seed)
        chosen = sorted(rng.choice(len(paths), min(self.n_images, len(paths)), replace=False))
        imgs = np.stack([aligner(load_image(home / paths[i])) for i in chosen])
        bank = build_patch_bank(imgs, patch, self.n_patches, self.bank_seed)
        save_torch_atomic(bank, path)  # readers never see a half-written bank
        return _as_bank(bank, "bank")

    def bank(self, h: int, w: int) -> torch.Tensor:
        """The float n×3×p×p bank on CPU, built (or read from the cache) on first use."""
        if self._bank is None:
            self._bank = self._build_bank(h, w)
        return self._bank

    def _flat_bank(self, h: int, w: int, device) -> torch.Tensor:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self.bank(h, w).flatten(1).to(device)
        return self._on_device[key]

    # --- quilting --------------------------------------------------------------------------
    def _neighbours(self, queries: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Bank index for each query row: one of its k nearest, drawn at random."""
        k = min(self.k, len(flat))
        picks = []
        for start in range(0, len(queries), CHUNK):
            dist = torch.cdist(queries[start:start + CHUNK], flat)
            near = dist.topk(k, dim=1, largest=False).indices
            if k == 1:
                picks.append(near[:, 0])
                continue
            draw = torch.randint(k, (len(near),), generator=self._gen).to(near.device)
            picks.append(near.gather(1, draw[:, None])[:, 0])
        return torch.cat(picks)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images("quilting", x)
        n, c, h, w = x.shape
        flat = self._flat_bank(h, w, x.device)
        p = self._bank.shape[-1]
        if p > min(h, w):
            raise FacebenchError(f"quilting patches ({p}px) are larger than the {h}x{w} images")
        stride = self.stride or max(1, round(p * REF_STRIDE / REF_PATCH))
        if stride > p:
            raise FacebenchError(f"defense 'quilting': stride {stride} > patch {p} would "
                                 "leave pixels uncovered")
        ys = torch.as_tensor(grid(h, p, stride), device=x.device)
        xs = torch.as_tensor(grid(w, p, stride), device=x.device)
        span = torch.arange(p, device=x.device)
        rows, cols = ys[:, None] + span, xs[:, None] + span
        cells = x.float()[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # n,c,ny,nx,p,p
        ny, nx = len(ys), len(xs)
        queries = cells.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * p * p)
        chosen = flat[self._neighbours(queries, flat)].view(n, ny, nx, c, p, p)
        out = torch.zeros(n, c, h, w, device=x.device)
        count = torch.zeros(1, 1, h, w, device=x.device)
        for i, y0 in enumerate(ys.tolist()):
            for j, x0 in enumerate(xs.tolist()):
                out[:, :, y0:y0 + p, x0:x0 + p] += chosen[:, i, j]
                count[:, :, y0:y0 + p, x0:x0 + p] += 1
        return (out / count).clamp_(0.0, 1.0).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"patch={self.patch}, stride={self.stride}, k={self.k}, "
                f"n_patches={self.n_patches}, seed={self.seed}")

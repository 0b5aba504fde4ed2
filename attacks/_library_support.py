"""What the library attacks stand on: a pair as a two-class classifier, query budgets, and
seeded, restorable randomness around a library call (see :mod:`.library`)."""
from __future__ import annotations

import contextlib
import hashlib
import math
import random
import time
import numpy as np
import torch
from torch import nn

from facebench.errors import FacebenchError


class ToyTwoClass(nn.Module):
    """A two-class model on 3×4×4 inputs, only to build a library attack once at construction
    (so bad keyword arguments fail before any data is loaded)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(48, 2)

    def forward(self, x):
        return self.fc(x.reshape(x.shape[0], -1))



class TwoLogitVerifier(nn.Module):
    """Pair verification as a two-class classifier: logits s·[thr − cos, cos − thr].

    Row ``i`` of a batch is compared with gallery embedding ``i``; class 1 (accept) wins
    exactly when cos > thr. The scale ``s`` only shapes the softmax: the loss gradient is a
    positive multiple of ±∇cos (so sign/L2-normalised steps equal facebench's), and s = 10
    keeps the cross-entropy gradient far from float32 underflow even at |cos − thr| = 2.

    Libraries may call the model on sub-batches (ART's ``batch_size``, AutoAttack and APGD on
    the still-robust rows). A batch of the full size is taken in order; any other batch is
    matched row by row to the nearest clean probe, which is unambiguous because adversarial
    rows stay within the budget of their own probe; two identical probes with different
    galleries in one sub-batch raise :class:`FacebenchError` instead of guessing.
    """

    def __init__(self, model: nn.Module, probes: torch.Tensor, gallery_emb: torch.Tensor,
                 thr: float, scale: float = 10.0):
        super().__init__()
        # first parameter: torchattacks reads the device from next(model.parameters())
        self.anchor = nn.Parameter(torch.zeros(0, device=probes.device), requires_grad=False)
        self.model = model
        n = probes.shape[0]
        if gallery_emb.shape[0] != n:
            raise FacebenchError(f"{n} probes but {gallery_emb.shape[0]} gallery embeddings")
        self.register_buffer("probes", probes.detach().reshape(n, -1).float())
        self.register_buffer("gallery", gallery_emb.detach().float())
        self.thr = float(thr)
        self.scale = float(scale)
        #: counts and bounds the library's queries while it runs (see QueryBudget)
        self.budget: QueryBudget | None = None
        # torchattacks restores train() after its call when it found the model training
        self.training = False

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the pair each row of ``x`` belongs to."""
        n, b = self.probes.shape[0], x.shape[0]
        if x[0].numel() != self.probes.shape[1]:
            raise FacebenchError(f"the library passed inputs of shape {tuple(x.shape[1:])}, "
                                 "not the probes' shape")
        if b == n:
            return torch.arange(n, device=self.gallery.device)
        flat = x.detach().reshape(b, -1).float().to(self.probes.device)
        dist = torch.cdist(flat, self.probes)  # (b, n)
        best = dist.argmin(dim=1)
        same = (self.gallery[best][:, None, :] == self.gallery[None, :, :]).all(dim=2)
        rival = dist.masked_fill(same, float("inf")).amin(dim=1)
        if (rival <= dist.gather(1, best[:, None]).squeeze(1) + 1e-6).any():
            raise FacebenchError("a library passed a sub-batch in which two identical probes "
                                 "have different galleries; use --batch-size 1 for this attack")
        return best.to(self.gallery.device)

    def cosine(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.model(x.to(self.probes.dtype)).float()  # ART may hand float64
        g = self.gallery[self.rows(x) if rows is None else rows].to(emb.device)
        return nn.functional.cosine_similarity(emb, g, dim=1, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.rows(x)
        if self.budget is not None:
            self.budget.charge(x.shape[0])
        cos = self.cosine(x, rows)
        if self.budget is not None:
            self.budget.observe(x, rows, cos.detach(), self.thr)
        margin = self.scale * (cos - self.thr)
        return torch.stack([-margin, margin], dim=1)



class BudgetExhausted(BaseException):
    """Stops a library call from inside its loop; a BaseException, so that a library's own
    ``except Exception`` cannot swallow it and loop on."""



class QueryBudget:
    """Counts the samples a library queries (not calls) and the wall time, and keeps per
    pair the queried input closest to its probe that is adversarial and inside the ball, so a
    call stopped at its bound still returns the best the library had found."""

    def __init__(self, probes: torch.Tensor, dodge: torch.Tensor, radius: torch.Tensor,
                 threat, max_queries: int, deadline: float):
        self.probes = probes.detach()
        self.dodge = dodge.bool().to(probes.device)
        self.radius = radius.detach().to(probes.device)
        self.threat = threat
        self.limit = int(max_queries) * probes.shape[0]
        self.deadline = deadline
        self.used = 0
        self.reason: str | None = None  # "queries" or "seconds" once stopped
        self.best = self.probes.clone()
        self.best_dist = torch.full((probes.shape[0],), math.inf, device=probes.device)

    def charge(self, samples: int) -> None:
        """Count ``samples`` queries, or stop the call if they overrun a bound."""
        if self.used + samples > self.limit:
            self.reason = "queries"
        elif time.monotonic() > self.deadline:
            self.reason = "seconds"
        if self.reason is not None:
            raise BudgetExhausted(self.reason)
        self.used += samples

    def observe(self, x: torch.Tensor, rows: torch.Tensor, cos: torch.Tensor, thr: float):
        """Keep the rows of a query that beat the best adversarial input of their pair."""
        x = x.detach().to(self.probes.device, self.probes.dtype).reshape(
            x.shape[0], *self.probes.shape[1:])
        rows, cos = rows.to(self.probes.device), cos.to(self.probes.device)
        won = torch.where(self.dodge[rows], cos < thr, cos >= thr)
        dist = self.threat.norm_of(x - self.probes[rows])
        flat = x.reshape(x.shape[0], -1)
        ok = (won & (dist <= self.radius[rows] * (1 + 1e-5) + 1e-7)
              & (flat.amin(dim=1) >= -1e-6) & (flat.amax(dim=1) <= 1 + 1e-6))
        for i in ok.nonzero().flatten().tolist():
            r = int(rows[i])
            if dist[i] < self.best_dist[r]:
                self.best_dist[r] = dist[i]
                self.best[r] = x[i]



class _AnyRandomState(type):
    """isinstance checks against the stand-in class still accept numpy's own RandomStates."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, _NUMPY_RANDOM_STATE)


_NUMPY_RANDOM_STATE = np.random.RandomState



class _SeededRandomState(_NUMPY_RANDOM_STATE, metaclass=_AnyRandomState):
    """``np.random.RandomState()`` without a seed draws one from numpy's global generator
    (seeded by :func:`seeded`) instead of OS entropy: ART's HopSkipJump, Boundary and
    Brendel-Bethge start from such a generator, which made them unrepeatable."""

    def __init__(self, seed=None):
        super().__init__(int(np.random.randint(0, 2**31 - 1)) if seed is None else seed)



def batch_seed(seed: int, x: torch.Tensor, labels: torch.Tensor) -> int:
    """A 31-bit seed from the run's ``seed`` and the batch's contents, so the randomness a
    batch gets depends on neither the batch order nor what ran before in the process."""
    h = hashlib.sha256(f"facebench-library-seed:{int(seed)}".encode())
    h.update(x.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(labels.detach().long().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:4], "little") & 0x7FFFFFFF



@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Seed every generator a library may draw from, and give the caller's back afterwards
    (numpy's and Python's global state, torch's CPU and ``device`` streams)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    random_state = np.random.RandomState
    cuda = [device.index if device.index is not None else torch.cuda.current_device()
            ] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            np.random.seed(seed)
            random.seed(seed)
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(cuda[0]):
                    torch.cuda.manual_seed(seed)
            np.random.RandomState = _SeededRandomState
            yield
    finally:
        np.random.RandomState = random_state
        np.random.set_state(np_state)
        random.setstate(py_state)



@contextlib.contextmanager
def kept_modes(model: nn.Module):
    """Give every submodule its train/eval mode back: torchattacks calls ``eval()`` and then
    ``train()`` on the model it was given, which left the recognizer in training mode."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode



def labels_for(dodge: torch.Tensor) -> torch.Tensor:
    """The true class the untargeted attack moves away from: 1 (accept) for dodging rows."""
    return dodge.long()

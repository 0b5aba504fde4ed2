"""Adaptive-attack plumbing: BPDA straight-through gradients, EOT averaging, target labels."""
import pytest
import torch
from torch import nn

from facebench.adaptive import BPDA, EOTRecognizer, adaptive_target, bpda, eot
from facebench.defense import Defense, DefendedRecognizer
from facebench.errors import FacebenchError
from facebench.registry import DEFENSES


def tiny_recognizer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(16, 8))
    return net.eval().requires_grad_(False)


def images():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_bpda_forward_is_defense_and_backward_is_identity():
    rec, jpeg = tiny_recognizer(), DEFENSES.get("jpeg")(quality=50)
    x = images().requires_grad_(True)
    out = rec(bpda(jpeg)(x))
    purified = jpeg(x.detach()).requires_grad_(True)
    ref = rec(purified)
    assert torch.allclose(out, ref)
    w = torch.randn_like(ref)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), purified)
    assert torch.allclose(g, g_ref) and g.abs().sum() > 0


def test_bpda_keeps_randomness_and_rejects_recognizer_transforms():
    assert BPDA(DEFENSES.get("tvm")(seed=0)).randomized
    assert not BPDA(DEFENSES.get("jpeg")()).randomized

    class Transform(Defense):
        purifier = False
        differentiable = False

        def wrap(self, recognizer):
            return recognizer

    with pytest.raises(FacebenchError, match="BPDA"):
        bpda(Transform())

    class RecordingPurifier(Defense):  # overrides wrap only to look at the recognizer
        differentiable = False

        def wrap(self, recognizer):
            self.seen = recognizer
            return super().wrap(recognizer)

    assert isinstance(bpda(RecordingPurifier()), BPDA)


class Draws(nn.Module):
    """A 'randomized' model whose j-th call returns scale_j * x (flattened)."""

    def __init__(self, scales):
        super().__init__()
        self.scales, self.calls = scales, 0

    def forward(self, x):
        s = self.scales[self.calls % len(self.scales)]
        self.calls += 1
        return (x * s).flatten(1)


def test_eot_averages_n_normalised_draws_and_their_gradients():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]]).requires_grad_(True)
    draws = Draws([1.0, -1.0, 2.0])
    out = eot(draws, 3)(x)
    assert draws.calls == 3
    unit = nn.functional.normalize(x.detach(), dim=1)
    assert torch.allclose(out, (unit - unit + unit) / 3)
    # the EOT gradient is the mean of the per-draw gradients
    w = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
    (g,) = torch.autograd.grad((out * w).sum(), x)
    per_draw = []
    for s in (1.0, -1.0, 2.0):
        xi = x.detach().clone().requires_grad_(True)
        (gi,) = torch.autograd.grad((nn.functional.normalize(xi * s, dim=1) * w).sum(), xi)
        per_draw.append(gi)
    assert torch.allclose(g, torch.stack(per_draw).mean(0), atol=1e-6)
    with pytest.raises(FacebenchError):
        EOTRecognizer(draws, 0)


class NoisyDifferentiable(Defense):
    """Differentiable and randomized: adds small Gaussian noise."""

    randomized = True

    def forward(self, x):
        return (x + 0.01 * torch.randn_like(x)).clamp(0, 1)


@pytest.mark.parametrize("defense,label", [
    (DEFENSES.get("none")(), "plain"),
    (DEFENSES.get("median")(), "plain"),
    (DEFENSES.get("jpeg")(), "bpda"),
    (DEFENSES.get("bit-depth")(), "bpda"),
    (DEFENSES.get("tvm")(seed=0), "bpda+eot"),
    (NoisyDifferentiable(), "eot"),
])
def test_adaptive_target_labels(defense, label):
    rec = tiny_recognizer()
    target, got = adaptive_target(defense, rec)
    assert got == label
    assert isinstance(target, EOTRecognizer) == ("eot" in label)
    if "eot" in label:
        assert target.n == 8
    inner = target.defended if isinstance(target, EOTRecognizer) else target
    assert isinstance(inner, DefendedRecognizer) and inner.recognizer is rec
    assert isinstance(inner.defense, BPDA) == label.startswith("bpda")
    x = images().requires_grad_(True)
    (g,) = torch.autograd.grad(target(x).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_adaptive_target_plain_matches_defended_and_eot_samples():
    rec, med = tiny_recognizer(), DEFENSES.get("median")()
    target, _ = adaptive_target(med, rec, eot_samples=4)  # deterministic: no EOT
    x = images()
    assert torch.allclose(target(x), med.wrap(rec)(x))
    target, label = adaptive_target(NoisyDifferentiable(), rec, eot_samples=3)
    assert label == "eot[eot_samples=3]" and target.n == 3  # another strength, another cell
    target, label = adaptive_target(NoisyDifferentiable(), rec, eot_samples=8)
    assert label == "eot" and target.n == 8  # the default draws: the plain label
    for bad in (0, -2, 1.5, True):
        with pytest.raises(FacebenchError, match="eot"):
            adaptive_target(med, rec, eot_samples=bad)

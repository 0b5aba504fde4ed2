"""A complete purifier plugin: a box blur, differentiable and deterministic."""
import torch
from torch.nn import functional as F

from facebench.defense import Defense
from facebench.registry import register_defense


@register_defense("example-blur")
class ExampleBlur(Defense):
    """Box blur of a size x size window (reflect padding): smooths high-frequency noise."""

    differentiable = True
    randomized = False
    defaults = {"size": 3}

    def __init__(self, size: int = 3):
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.size // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        return F.avg_pool2d(padded, self.size, stride=1)

"""Base class of defenses.

A defense is either a *purifier* (``forward(x) -> x'`` of the same shape, applied to every
image the recognizer sees, probe and gallery alike) or a *recognizer transform* (override
``wrap``). ``differentiable`` and ``randomized`` tell adaptive attacks whether they need BPDA
or EOT.
"""
from __future__ import annotations

import torch
from torch import nn

from .params import Parameterized


class Defense(Parameterized, nn.Module):
    """A defense; parameters as for attacks: a class-level ``spec`` or a ``defaults`` dict.

    A plugin with a spec passes its keyword arguments to ``super().__init__(**params)``,
    which checks them against the spec and sets them as attributes.
    """

    plugin_kind = "defense"
    #: False for recognizer transforms (adversarial training, ensembles): no image to BPDA
    purifier: bool = True
    differentiable: bool = True
    randomized: bool = False

    def __init__(self, **params):
        nn.Module.__init__(self)
        if params:
            for key, value in self.param_spec().validate(params).items():
                setattr(self, key, value)

    @classmethod
    def param_owner(cls) -> str:
        return f"defense {getattr(cls, 'registry_name', cls.__name__.lower())!r}"

    @classmethod
    def trained_protocol(cls, params) -> str | None:
        """The LFW protocol whose people the model ``params`` would load was trained without,
        read cheaply (a manifest, never the weights); None for defenses that are not learned
        or have no model yet. The runner uses it to pick and check the protocol before any
        heavy work."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def wrap(self, recognizer: nn.Module) -> nn.Module:
        """The defended system seen by the attacker and the evaluator: recognizer∘purifier."""
        return DefendedRecognizer(self, recognizer)


class DefendedRecognizer(nn.Module):
    def __init__(self, defense: Defense, recognizer: nn.Module):
        super().__init__()
        self.defense = defense
        self.recognizer = recognizer
        for attr in ("input_size", "embedding_dim", "alignment"):
            setattr(self, attr, getattr(recognizer, attr, None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.recognizer(self.defense(x))

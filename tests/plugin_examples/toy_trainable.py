"""A complete trainable defense: learns the mean colour of training faces and pulls every
image a fraction of the way towards it (a toy, not a defense anyone should deploy)."""
import torch

from facebench.defense import Defense
from facebench.registry import register_defense
from facebench.trainable import Trainable, load_model_file
from facebench.trainer import Trainer


class MeanColourTrainer(Trainer):
    """One phase of SGD steps on the squared distance to each batch's mean colour."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.colour = torch.zeros(3, requires_grad=True)
        self.opt = torch.optim.SGD([self.colour], lr=ctx.cfg["lr"])

    def phases(self):
        return [("fit", self.ctx.cfg["steps"])]

    def step(self, phase, x, phase_step):
        loss = (x.mean(dim=(0, 2, 3)) - self.colour).pow(2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}

    def state_dict(self):
        return {"colour": self.colour.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.colour.copy_(state["colour"])
        self.opt.load_state_dict(state["opt"])

    def export(self):
        return {"strength": self.ctx.cfg["strength"]}, {"colour": self.colour.detach()}


@register_defense("example-mean-colour")
class ExampleMeanColour(Trainable, Defense):
    """Pulls images towards the training faces' mean colour (learned; a toy example)."""

    differentiable = True
    presets = {"quick": {"steps": 20, "lr": 0.5, "strength": 0.2, "batch_size": 8,
                         "max_images": 64, "checkpoint_every": 10, "log_every": 5}}
    trainer_class = MeanColourTrainer
    defaults = {"checkpoint": None}

    def __init__(self, checkpoint=None):
        super().__init__()
        data = load_model_file(self.find_model(checkpoint), "example-mean-colour")
        self.strength = float(data["config"]["strength"])
        self.register_buffer("colour", data["state_dict"]["colour"].float().view(1, 3, 1, 1))

    def forward(self, x):
        return x + self.strength * (self.colour.clamp(0, 1) - x)

"""The learned-defense contract: a toy Trainable defense registered from outside the core
trains, checkpoints, resumes and is found by name, with no edit to the core."""
import json

import numpy as np
import pytest
import torch

import facebench.trainer
from facebench.defense import Defense
from facebench.errors import FacebenchError
from facebench.registry import DEFENSES
from facebench.trainable import NoModelError, Trainable, load_model_file, trainable_names
from facebench.trainer import Trainer
from facebench.training import train


class ShiftTrainer(Trainer):
    """Learns one scalar: the mean brightness of the training images."""

    fit_options = {"note": None}

    @classmethod
    def prepare(cls, ctx, resume=True, note=None):
        ctx.sections["toy"] = {"note": note}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.shift = torch.zeros(1, requires_grad=True)
        self.opt = torch.optim.SGD([self.shift], lr=0.5)

    def phases(self):
        return [("fit", self.ctx.cfg["steps"])]

    def step(self, phase, x, phase_step):
        loss = (x.mean() - self.shift).pow(2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach())}

    def state_dict(self):
        return {"shift": self.shift.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.shift.copy_(state["shift"])
        self.opt.load_state_dict(state["opt"])

    def export(self):
        return {}, {"shift": self.shift.detach()}


class ToyLearned(Trainable, Defense):
    """Toy learned defense: subtracts a learned shift"""

    presets = {"quick": {"steps": 4, "batch_size": 2, "max_images": None,
                         "checkpoint_every": 1, "log_every": 1}}
    trainer_class = ShiftTrainer

    def __init__(self, checkpoint=None):
        super().__init__()
        data = load_model_file(self.find_model(checkpoint), "toy-learned")
        self.shift = float(data["state_dict"]["shift"])

    def forward(self, x):
        return x - self.shift


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEBENCH_MODELS", str(tmp_path / "models"))
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    info = {"protocol": "dev-test", "image_list_sha256": "0" * 64, "n_images": 6}
    monkeypatch.setattr(facebench.trainer, "load_training_images",
                        lambda *a, **k: (images, ["toy"], info))
    DEFENSES.names()  # load the plugins first, then add the toy
    DEFENSES.register("toy-learned")(ToyLearned)
    yield images
    DEFENSES._entries.pop("toy-learned")


def test_any_registered_trainable_defense_trains_by_name(toy, one_thread):
    assert "toy-learned" in trainable_names()
    with pytest.raises(NoModelError, match="facebench train toy-learned"):
        ToyLearned()
    out = train("toy-learned", progress=False, max_steps=2, note="hello")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["toy"] == {"note": "hello"}
    assert ToyLearned.trained_protocol({}) is None  # an unfinished default run is skipped
    train("toy-learned", progress=False)  # resumes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps_done"] == 4
    assert ToyLearned.trained_protocol({}) == "dev-test"
    assert ToyLearned().shift != 0.0


def test_non_trainable_defenses_are_refused_by_name(toy):
    with pytest.raises(FacebenchError, match="'jpeg' has no training recipe; trainable: "
                       ".*toy-learned"):
        train("jpeg")
    with pytest.raises(FacebenchError, match="no training option 'nope'"):
        train("toy-learned", nope=1)


class TwoPhaseTrainer(ShiftTrainer):
    """Two phases whose lengths are settings, declared as the schedule."""

    schedule_keys = ("a_steps", "b_steps")

    def phases_for(self, cfg):
        return [("a", cfg["a_steps"]), ("b", cfg["b_steps"])]

    phases = Trainer.phases


class ToyTwoPhase(ToyLearned):
    presets = {"quick": {"a_steps": 2, "b_steps": 4, "batch_size": 2, "max_images": None,
                         "checkpoint_every": 1, "log_every": 1}}
    trainer_class = TwoPhaseTrainer


def test_a_run_may_finish_under_a_shorter_schedule_that_ran_the_same_steps(toy, one_thread):
    """A run stopped in phase b may end under a shorter b (its steps so far are the same),
    and says so in the manifest; a schedule that changes a phase already run is refused."""
    DEFENSES.register("toy-two-phase")(ToyTwoPhase)
    try:
        out = train("toy-two-phase", progress=False, max_steps=4)
        shift_at_4 = float(torch.load(out / "checkpoint.pt", weights_only=True)
                           ["trainer"]["shift"])
        with pytest.raises(FacebenchError, match="cfg.a_steps"):
            train("toy-two-phase", progress=False, a_steps=3)  # changes what already ran
        with pytest.raises(FacebenchError, match="cfg.b_steps"):
            train("toy-two-phase", progress=False, b_steps=1)  # below the 2 b steps run
        train("toy-two-phase", progress=False, b_steps=2)  # ends now: 2 + 2 steps
        manifest = json.loads((out / "manifest.json").read_text())
        assert (manifest["status"], manifest["steps_done"], manifest["total_steps"]) == \
            ("complete", 4, 4)
        assert manifest["rescheduled"] == {"at_step": 4, "from": [
            {"name": "a", "steps": 2}, {"name": "b", "steps": 4}]}
        model = load_model_file(out / "model.pt", "toy-two-phase")
        assert float(model["state_dict"]["shift"]) == pytest.approx(shift_at_4)
    finally:
        DEFENSES._entries.pop("toy-two-phase")

"""The README's "Adding a plugin" examples are real files, registered here, and pass the same
contracts as every shipped plugin (tests/test_contracts.py)."""
import importlib
from pathlib import Path

import pytest
import torch

from facebench.registry import ATTACKS, DEFENSES
from test_contracts import GOALS, check_attack, check_defense, toy_inputs

EXAMPLES = Path(__file__).resolve().parent / "plugin_examples"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def registered():
    """Import the example files (their decorators register them), then unregister them so
    the rest of the session sees only the shipped plugins."""
    names = {"attack": "example-noise", "defense": "example-blur",
             "trainable": "example-mean-colour"}
    ATTACKS.names(), DEFENSES.names()  # the shipped plugins first, then the examples
    for module in ("toy_attack", "toy_purifier", "toy_trainable"):
        importlib.import_module(f"plugin_examples.{module}")
    yield names
    ATTACKS._entries.pop(names["attack"], None)
    DEFENSES._entries.pop(names["defense"], None)
    DEFENSES._entries.pop(names["trainable"], None)


@pytest.mark.parametrize("goal", GOALS)
def test_example_attack_passes_the_attack_contract(registered, goal):
    check_attack(toy_inputs(), registered["attack"], goal)


def test_example_purifier_passes_the_defense_contract(registered):
    check_defense(toy_inputs(), registered["defense"])


def test_example_attack_runs_end_to_end_on_real_faces(registered):
    import facebench

    df = facebench.run(attack=registered["attack"], defense=registered["defense"], pairs=4,
                       norm="linf", eps=8, out=None, progress=False)
    assert set(df["attack"]) == {"none", "example-noise"}
    assert set(df["defense"]) == {"example-blur"}


@pytest.fixture
def sample_training_faces(monkeypatch):
    """The sample's faces stand in for the LFW training split (no full LFW needed here)."""
    import facebench.trainer
    from facebench.data import pair_images
    from facebench.data.align import get_aligner
    from facebench.dataset import load_dataset

    pairs = load_dataset("lfw-sample").pairs("dev-test")
    images, _, _ = pair_images(pairs, get_aligner("dlib-chip"), progress=False)
    info = {"protocol": "dev-test", "image_list_sha256": "0" * 64, "n_images": len(images)}
    monkeypatch.setattr(facebench.trainer, "load_training_images",
                        lambda *a, **k: (images, ["lfw-sample"], info))
    return images


def test_example_trainable_trains_by_name_and_passes_the_defense_contract(
        registered, sample_training_faces, tmp_path):
    from facebench.training import train

    name = registered["trainable"]
    out = train(name, preset="quick", progress=False)
    assert (out / "model.pt").is_file() and (out / "manifest.json").is_file()
    defense = DEFENSES.get(name)()
    learned = defense.colour.flatten()
    truth = torch.from_numpy(sample_training_faces.reshape(-1, 3).mean(0) / 255).float()
    assert (learned - truth).abs().max() < 0.05  # it learned the faces' mean colour
    check_defense(toy_inputs(), name)


@pytest.mark.parametrize("module", ["toy_attack", "toy_purifier", "toy_trainable"])
def test_readme_shows_each_example_file_verbatim(module):
    code = (EXAMPLES / f"{module}.py").read_text(encoding="utf-8")
    assert code in README.read_text(encoding="utf-8"), f"README lacks {module}.py as is"

"""The README's "Adding a plugin" examples are real files, registered here, and pass the same
contracts as every shipped plugin (tests/test_contracts.py)."""
import importlib
from pathlib import Path

import pytest

from facebench.registry import ATTACKS, DEFENSES
from test_contracts import GOALS, check_attack, check_defense, toy_inputs

EXAMPLES = Path(__file__).resolve().parent / "plugin_examples"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def registered():
    """Import the example files (their decorators register them), then unregister them so
    the rest of the session sees only the shipped plugins."""
    names = {"attack": "example-noise", "defense": "example-blur"}
    for module in ("toy_attack", "toy_purifier"):
        importlib.import_module(f"plugin_examples.{module}")
    yield names
    ATTACKS._entries.pop(names["attack"], None)
    DEFENSES._entries.pop(names["defense"], None)


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


@pytest.mark.parametrize("module", ["toy_attack", "toy_purifier"])
def test_readme_shows_each_example_file_verbatim(module):
    code = (EXAMPLES / f"{module}.py").read_text(encoding="utf-8")
    assert code in README.read_text(encoding="utf-8"), f"README lacks {module}.py as is"

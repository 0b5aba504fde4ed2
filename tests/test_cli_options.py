"""CLI options that change what an attack does, checked on real pairs (the embedded sample)."""
import pandas as pd
import pytest
import torch

import facebench
from clitools import run_cli
from facebench.registry import ATTACKS


def test_linf_step_size_is_in_255_units(tmp_path):
    """`--norm linf --step-size 2` is one step of 2/255 (BIM starts at the clean probe)."""
    out = tmp_path / "runs.csv"
    proc = run_cli("run", "--pairs", "2", "--attack", "bim", "--norm", "linf", "--eps", "8",
                   "--steps", "1", "--step-size", "2", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    linf = df[(df.attack == "bim[steps=1,step_size=2]") & (df.metric == "mean_linf")]["value"].item()
    assert linf == pytest.approx(2 / 255, abs=1e-6)


def test_grey_box_examples_do_not_depend_on_the_defense(monkeypatch):
    """Grey-box crafting sees only the bare recognizer (gallery embeddings and threshold
    included), so the same probes get the very same adversarial images whatever defense is
    evaluated (compared pixel for pixel, not by summary statistics)."""
    cls = ATTACKS.get("pgd")
    original = cls.perturb
    crafted = []

    def keep(self, *args, **kwargs):
        adv = original(self, *args, **kwargs)
        crafted[-1].append(adv.detach().clone())
        return adv

    monkeypatch.setattr(cls, "perturb", keep)
    for defense in ("none", "bit-depth", "jpeg"):
        crafted.append([])
        facebench.run(pairs=4, attack="pgd", defense=defense,
                      attack_params={"steps": 2, "random_start": False}, adv_cache=False,
                      out=None, progress=False)
    first = torch.cat(crafted[0])
    assert first.shape[0] == 4
    for other in crafted[1:]:
        assert torch.equal(torch.cat(other), first)

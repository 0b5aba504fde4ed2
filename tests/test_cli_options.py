"""CLI options that change what an attack does, checked on real pairs."""
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.lfw


def test_linf_step_size_is_in_255_units(shared_data, tmp_path, monkeypatch):
    """`--norm linf --step-size 2` is one step of 2/255 (BIM starts at the clean probe)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "runs.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "facebench.cli", "run", "--protocol", "dev-test", "--pairs", "2",
         "--attack", "bim", "--norm", "linf", "--eps", "8", "--steps", "1", "--step-size", "2",
         "--dataset", "lfw", "--data-home", str(shared_data), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    linf = df[(df.attack == "bim") & (df.metric == "mean_linf")]["value"].item()
    assert linf == pytest.approx(2 / 255, abs=1e-6)


def test_grey_box_examples_do_not_depend_on_the_defense(shared_data, tmp_path, monkeypatch):
    """Grey-box crafting sees only the bare recognizer (gallery embeddings and threshold
    included), so the same probes get the same perturbation whatever defense is evaluated."""
    import facebench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sizes = {}
    for defense in ("none", "bit-depth"):
        df = facebench.run(protocol="dev-test", pairs=4, attack="pgd", defense=defense,
                           attack_params={"steps": 2, "random_start": False}, adv_cache=False,
                           dataset="lfw", data_home=str(shared_data), out=None, progress=False)
        adv = df[df.attack == "pgd"].set_index("metric")["value"]
        sizes[defense] = (adv["mean_linf"], adv["mean_rel_l2"])
    assert sizes["none"] == pytest.approx(sizes["bit-depth"], rel=1e-9, abs=0)

"""End to end on the shared LFW copy: a few real pairs, a few attack steps."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import facebench
from facebench.report import pivot_table
from facebench.results import COLUMNS, METRICS

pytestmark = pytest.mark.lfw


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_cli_pgd_dev_test(shared_data, env):
    out = env / "runs.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "facebench.cli", "run", "--defense", "none", "--attack", "pgd",
         "--protocol", "dev-test", "--pairs", "8", "--steps", "3", "--dataset", "lfw", "--data-home",
         str(shared_data), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "clean" in proc.stdout and "pgd" in proc.stdout and "eer" in proc.stdout
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert df["run_id"].nunique() == 1 and set(df["metric"]) <= set(METRICS)
    clean = df[df.attack == "none"].set_index("metric")["value"]
    adv = df[df.attack == "pgd"].set_index("metric")["value"]
    assert (df[df.attack == "pgd"]["threat_model"] == "rel-l2").all()
    assert (df[df.attack == "pgd"]["budget"] == 0.04).all()
    assert (df["n_pairs"] == 8).all() and (df["protocol"] == "dev-test").all()
    assert adv["eer"] > clean["eer"]
    assert adv["asr"] >= 0.5
    assert adv["mean_rel_l2"] <= 0.04 + 1e-5
    # the runs CSV regenerates a table
    md = pivot_table(str(out), metric="eer", out=str(env / "t.md"))
    assert "| none |" in md and "pgd" in md


def test_api_zero_budget_gives_clean_metrics(shared_data, env):
    df = facebench.run(protocol="dev-test", pairs=6, attack="pgd", norm="linf", eps=0.0,
                       attack_params={"steps": 2}, dataset="lfw", data_home=str(shared_data), out=None,
                       progress=False)
    wide = df.pivot_table(index="metric", columns="attack", values="value")
    for metric in ("eer", "roc_auc", "acc_at_clean_thr"):
        assert wide.at[metric, "pgd"] == pytest.approx(wide.at[metric, "none"], abs=1e-6)
    assert wide.at["asr", "pgd"] == 0.0


def test_api_objects_compose(shared_data):
    rec = facebench.load_recognizer("dlib-resnet")
    defended = facebench.load_defense("none").wrap(rec)
    attack = facebench.load_attack("fgsm", norm="linf", eps=4)
    import torch
    x = torch.rand(2, 3, 150, 150)
    g = rec(torch.rand(2, 3, 150, 150)).detach()
    adv = attack.perturb(defended, x, g, torch.tensor([True, False]), 0.9)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 4 / 255 + 1e-6


def test_ten_fold_rows_on_subset(shared_data, env):
    df = facebench.run(protocol="10-fold", pairs=40, attack="none", dataset="lfw", data_home=str(shared_data),
                       out=str(env / "r.csv"), progress=False)
    metrics = set(df["metric"])
    assert {"accuracy_10fold", "accuracy_10fold_std", "eer"} <= metrics
    acc = df.set_index("metric").at["accuracy_10fold", "value"]
    assert 0.8 <= acc <= 1.0


def test_pairs_dataset_on_lfw_crops(shared_data, env):
    lfw = shared_data / "lfw_home" / "lfw"
    rows = ["path_a,path_b,same",
            "Aaron_Peirsol/Aaron_Peirsol_0001.jpg,Aaron_Peirsol/Aaron_Peirsol_0002.jpg,1",
            "Aaron_Peirsol/Aaron_Peirsol_0003.jpg,Aaron_Peirsol/Aaron_Peirsol_0004.jpg,1",
            "Aaron_Peirsol/Aaron_Peirsol_0001.jpg,Abdullah_Gul/Abdullah_Gul_0001.jpg,0",
            "Aaron_Peirsol/Aaron_Peirsol_0002.jpg,Abdullah_Gul/Abdullah_Gul_0002.jpg,0"]
    csv = env / "mine.csv"
    csv.write_text("\n".join(rows) + "\n")
    df = facebench.run(dataset="pairs", pairs_file=str(csv), image_root=str(lfw),
                       attack="fgsm", out=None, progress=False)
    assert set(df["attack"]) == {"none", "fgsm"}
    assert (df["dataset"] == "pairs").all() and (df["n_pairs"] == 4).all()
    assert np.isfinite(df["value"].astype(float)).sum() >= len(df) - 1


def test_grey_box_examples_are_crafted_once_across_defenses(shared_data, env, monkeypatch):
    from facebench.registry import ATTACKS

    cls = ATTACKS.get("fgsm")
    calls = []
    original = cls.perturb

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "perturb", spy)
    opts = dict(protocol="dev-test", pairs=6, attack="fgsm", dataset="lfw", data_home=str(shared_data),
                out=None, progress=False)
    first = facebench.run(**opts)
    crafted = len(calls)
    assert crafted >= 1
    again = facebench.run(**opts)
    assert len(calls) == crafted  # served from the cache
    pd.testing.assert_frame_equal(first[["metric", "value"]], again[["metric", "value"]])
    squeezed = facebench.run(defense="bit-depth", **opts)
    assert len(calls) == crafted
    assert set(squeezed["defense"]) == {"bit-depth"}
    facebench.run(adv_cache=False, **opts)
    assert len(calls) > crafted

"""End to end on the shared LFW copy: a few real pairs, a few attack steps."""
import subprocess
from pathlib import Path
import sys

import numpy as np
import pandas as pd
import pytest

import facebench
from facebench.report import pivot_table
from facebench.results import COLUMNS, METRICS



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
    adv = df[df.attack == "pgd[steps=3]"].set_index("metric")["value"]
    assert (df[df.attack == "pgd[steps=3]"]["threat_model"] == "rel-l2").all()
    assert (df[df.attack == "pgd[steps=3]"]["budget"] == 0.04).all()
    assert (df["n_pairs"] == 8).all() and (df["protocol"] == "dev-test").all()
    assert adv["eer"] > clean["eer"]
    assert adv["asr"] >= 0.5
    assert adv["mean_rel_l2"] <= 0.04 + 1e-5
    # the runs CSV regenerates a table
    md = pivot_table(str(out), metric="eer", out=str(env / "t.md"))
    assert "| none |" in md and "pgd" in md


def test_api_zero_budget_gives_clean_metrics(env):
    df = facebench.run(pairs=6, attack="pgd", norm="linf", eps=0.0, attack_params={"steps": 2},
                       out=None, progress=False)
    wide = df.pivot_table(index="metric", columns="attack", values="value")
    for metric in ("eer", "roc_auc", "acc_at_clean_thr"):
        assert wide.at[metric, "pgd[steps=2]"] == pytest.approx(wide.at[metric, "none"],
                                                                 abs=1e-6)
    assert wide.at["asr", "pgd[steps=2]"] == 0.0


def test_api_objects_compose():
    """The README's API snippet on real faces: the objects compose, and the attack moves the
    probes' similarity the way each pair's goal asks (down for dodging, up otherwise)."""
    import torch

    from facebench.data import pair_images
    from facebench.data.align import get_aligner
    from facebench.dataset import load_dataset
    from facebench.embed import to_float

    pairs = load_dataset("lfw-sample").pairs("dev-test").subset(4, 0)
    images, ia, ib = pair_images(pairs, get_aligner("dlib-chip"), progress=False)
    rec = facebench.load_recognizer("dlib-resnet")
    defended = facebench.load_defense("none").wrap(rec)
    attack = facebench.load_attack("fgsm", norm="linf", eps=4)
    x, g = to_float(images[ia]), rec(to_float(images[ib])).detach()
    dodge = torch.from_numpy(pairs.same)
    adv = attack.perturb(defended, x, g, dodge, 0.9)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 4 / 255 + 1e-6
    cos = torch.nn.functional.cosine_similarity
    before, after = cos(rec(x), g), cos(rec(adv), g)
    moved = torch.where(dodge, before - after, after - before)
    assert (moved > 0).all(), moved


def test_ten_fold_rows_on_subset(shared_data, env):
    df = facebench.run(protocol="10-fold", pairs=40, attack="none", dataset="lfw", data_home=str(shared_data),
                       out=str(env / "r.csv"), progress=False)
    metrics = set(df["metric"])
    assert {"accuracy_10fold", "accuracy_10fold_std", "eer"} <= metrics
    acc = df.set_index("metric").at["accuracy_10fold", "value"]
    assert 0.8 <= acc <= 1.0


def test_pairs_dataset_on_real_crops(env):
    """A user CSV over a folder of aligned crops: here the sample's faces, cut with the dlib
    chip box and saved losslessly, so the run must score them exactly as `lfw-sample` does."""
    from PIL import Image

    from facebench.data.align import get_aligner
    from facebench.data.images import load_image
    from facebench.dataset import load_dataset

    sample = load_dataset("lfw-sample").pairs("dev-test").subset(8, 0)
    chip = get_aligner("dlib-chip")
    crops = env / "crops"
    for rel in sample.unique_paths():
        out = crops / Path(rel).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(chip(load_image(sample.resolve(rel)))).save(out)
    rows = ["path_a,path_b,same"] + [
        f"{Path(a).with_suffix('.png')},{Path(b).with_suffix('.png')},{int(s)}"
        for a, b, s in zip(sample.paths_a, sample.paths_b, sample.same)]
    csv = env / "mine.csv"
    csv.write_text("\n".join(rows) + "\n")
    opts = dict(attack="fgsm", out=None, progress=False)
    df = facebench.run(dataset="pairs", pairs_file=str(csv), image_root=str(crops), **opts)
    assert set(df["attack"]) == {"none", "fgsm"}
    assert (df["dataset"] == "pairs").all() and (df["n_pairs"] == 8).all()
    assert (df["protocol"] == "mine.csv").all()
    assert np.isfinite(df["value"].astype(float)).all()
    ref = facebench.run(pairs=8, **opts)
    mine = df.set_index(["attack", "metric"])["value"]
    theirs = ref.set_index(["attack", "metric"])["value"]
    pd.testing.assert_series_equal(mine, theirs, atol=1e-6, rtol=0)
    adv = df[df.attack == "fgsm"].set_index("metric")["value"]
    assert adv["asr"] > 0.5


def test_grey_box_examples_are_crafted_once_across_defenses(env, monkeypatch):
    from facebench.registry import ATTACKS

    cls = ATTACKS.get("fgsm")
    calls = []
    original = cls.perturb

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "perturb", spy)
    opts = dict(pairs=6, attack="fgsm", out=None, progress=False)
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

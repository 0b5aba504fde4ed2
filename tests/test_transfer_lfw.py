"""Transfer on the shared LFW copy: craft on a source recognizer[+defense], evaluate on the target."""
import subprocess
import sys

import pandas as pd
import pytest

import facebench

pytestmark = pytest.mark.lfw

PAIRS = 8
EPS = 0.04


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def wide(df, column="attack"):
    return df.pivot_table(index="metric", columns=column, values="value")


def check_transfer_rows(df, attack, source, defense):
    assert set(df["attack"]) == {"none", attack}
    assert (df["n_pairs"] == PAIRS).all() and (df["defense"] == defense).all()
    assert (df["recognizer"] == "dlib-resnet").all()
    clean, adv = df[df.attack == "none"], df[df.attack == attack]
    assert (clean["adaptive"] == "none").all()
    assert (adv["adaptive"] == f"transfer:{source}").all()
    assert (adv["threat_model"] == "rel-l2").all() and (adv["budget"] == EPS).all()
    w = wide(df)
    assert 0 < w.at["mean_rel_l2", attack] <= EPS + 1e-5  # the budget is respected
    # crafted on the source only, the perturbation still hurts the evaluated system
    assert w.at["acc_at_clean_thr", attack] < w.at["acc_at_clean_thr", "none"]
    assert w.at["eer", attack] > w.at["eer", "none"]
    assert w.at["asr", attack] >= 0.5


def test_dfanet_crafted_on_bare_recognizer_evaluated_through_jpeg(shared_data, env):
    df = facebench.run(protocol="dev-test", pairs=PAIRS, attack="dfanet", source="dlib-resnet",
                       defense="jpeg", eps=EPS, attack_params={"steps": 3},
                       dataset="lfw", data_home=str(shared_data), out=str(env / "runs.csv"), progress=False)
    check_transfer_rows(df, "dfanet[steps=3]", "dlib-resnet", "jpeg")
    assert (env / "runs.csv").is_file()


def test_mi_fgsm_crafted_through_median_source_evaluated_undefended(shared_data, env):
    df = facebench.run(protocol="dev-test", pairs=PAIRS, attack="mi-fgsm",
                       source="dlib-resnet+median", defense="none", eps=EPS,
                       attack_params={"steps": 3}, dataset="lfw", data_home=str(shared_data), out=None,
                       progress=False)
    check_transfer_rows(df, "mi-fgsm[steps=3]", "dlib-resnet+median", "none")


def test_cli_source_with_bpda_defense(shared_data, env):
    out = env / "runs.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "facebench.cli", "run", "--attack", "dfanet", "--source",
         "dlib-resnet+jpeg", "--defense", "none", "--protocol", "dev-test", "--pairs",
         str(PAIRS), "--steps", "2", "--dataset", "lfw", "--data-home", str(shared_data), "--out", str(out),
         "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    check_transfer_rows(pd.read_csv(out), "dfanet[steps=2]", "dlib-resnet+jpeg", "none")

"""The front door on the embedded sample: the headline as typed, checks before heavy work,
where rows go, and the README's numbers guarded."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import facebench
from clitools import run_cli
from facebench.dataset import load_dataset
from facebench.errors import FacebenchError
from facebench.runner import RunConfig, resolve_protocol


def cli(*args, cwd=None):
    return run_cli(*args, cwd=cwd)


def _no_heavy_work(monkeypatch):
    """Fail the test if a run gets as far as building a defense or embedding a face."""
    import facebench.runner as runner

    def boom(*a, **k):
        raise AssertionError("heavy work started before the check")

    monkeypatch.setattr(runner, "build_defense", boom)
    monkeypatch.setattr(runner, "embed_images", boom)


# --- the headline's protocol ---------------------------------------------------------------

def test_learned_defense_picks_its_own_protocol_from_the_manifest(monkeypatch, capsys):
    """`facebench run --defense side` on LFW runs the protocol the shipped SIDE was trained
    for (dev-test), saying so, instead of refusing after building the eigenbasis."""
    _no_heavy_work(monkeypatch)
    protocol = resolve_protocol(load_dataset("lfw"), RunConfig(defense="side", dataset="lfw"))
    assert protocol == "dev-test"
    assert "protocol dev-test: the side model was trained without its people" in \
        capsys.readouterr().err
    # the sample is dev-test pairs: the shipped SIDE is allowed there, with no message
    assert resolve_protocol(load_dataset("lfw-sample"), RunConfig(defense="side")) == "dev-test"
    assert resolve_protocol(load_dataset("lfw"), RunConfig(dataset="lfw")) == "10-fold"


def test_chosen_protocol_with_other_people_is_refused_before_heavy_work(monkeypatch):
    _no_heavy_work(monkeypatch)
    with pytest.raises(FacebenchError, match="trained on people held out of LFW 'dev-test'"):
        facebench.run(dataset="lfw", protocol="10-fold", defense="side", attack="none",
                      out=None, progress=False)


# --- bad input: one line, before any heavy work -------------------------------------------

@pytest.mark.parametrize("overrides,needle", [
    (dict(norm="l2", eps=1e9), "exceeds the largest possible L2 distance"),
    (dict(pairs=999999), "--pairs 999999 but lfw-sample/dev-test has only 100 pairs"),
    (dict(pairs=1), "--pairs must be at least 2"),
    (dict(out="/proc/facebench-test/runs.csv"), "runs.csv"),
    (dict(dataset="lfw-sampel"), "did you mean 'lfw-sample'"),
    (dict(dataset="lfw-sample", protocol="10-fold"), "has no protocol '10-fold'"),
    (dict(source="nope"), "unknown recognizer 'nope'"),
    (dict(source="dlib-resnet+nope"), "unknown defense 'nope'"),
])
def test_impossible_requests_fail_before_heavy_work(monkeypatch, overrides, needle):
    _no_heavy_work(monkeypatch)  # the pair count too: checked against the list, before faces
    with pytest.raises(FacebenchError, match=needle.replace("(", r"\(").replace("+", r"\+")):
        facebench.run(**{"attack": "pgd", "out": None, "progress": False, **overrides})


def test_unwritable_out_is_one_line_on_the_cli(tmp_path):
    proc = cli("run", "--attack", "none", "--out", str(tmp_path), "--quiet")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("facebench: error:")
    assert "Traceback" not in proc.stderr


# --- where rows go -------------------------------------------------------------------------

def test_default_out_is_a_results_folder_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEBENCH_RESULTS")
    proc = cli("run", "--attack", "none", "--pairs", "4", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "facebench-results" / "runs.csv"
    assert f"rows appended to {out.relative_to(tmp_path)}" in proc.stdout
    df = pd.read_csv(out)
    assert set(df["dataset"]) == {"lfw-sample"} and set(df["n_pairs"]) == {4}


# --- the embedded sample -------------------------------------------------------------------

def test_sample_is_verified_and_a_changed_file_is_refused(tmp_path, monkeypatch):
    import facebench.datasets.lfw_sample as sample

    manifest = sample.verify()
    assert manifest["n_pairs"] == 100 and manifest["n_same"] == 50
    assert len(manifest["files"]) == 198
    copy = tmp_path / "sample"
    shutil.copytree(sample.HERE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    victim = copy / next(iter(manifest["files"]))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(FacebenchError, match="expected sha256"):
        sample.verify(copy)


@pytest.mark.timeout(600)
def test_sample_reproduces_the_same_pairs_of_full_lfw(shared_data):
    """The sample is `--protocol dev-test --pairs 100 --seed 0` of LFW, byte for byte."""
    opts = dict(attack="none", out=None, progress=False)
    on_sample = facebench.run(**opts).set_index("metric")["value"]
    on_lfw = facebench.run(dataset="lfw", protocol="dev-test", pairs=100,
                           data_home=str(shared_data), **opts).set_index("metric")["value"]
    pd.testing.assert_series_equal(on_sample, on_lfw)


def test_readme_numbers_on_the_sample(tmp_path):
    """Regression guard for the README's quick-start numbers (clean EER 4.00%, ROC-AUC
    0.9936 on the sample; PGD-3 at rel-l2 0.04 breaks every pair). Tolerances: the clean
    numbers are deterministic (1e-4); the attack must keep ASR 100%."""
    out = tmp_path / "runs.csv"
    df = facebench.run(attack="pgd", attack_params={"steps": 3}, out=str(out),
                       progress=False, batch_size=50)
    clean = df[df.attack == "none"].set_index("metric")["value"]
    adv = df[df.attack == "pgd[steps=3]"].set_index("metric")["value"]
    assert clean["eer"] == pytest.approx(0.04, abs=1e-4)
    assert clean["roc_auc"] == pytest.approx(0.9936, abs=1e-4)
    assert adv["asr"] == 1.0 and adv["eer"] == 1.0
    assert adv["mean_rel_l2"] == pytest.approx(0.04, abs=2e-4)


# --- small items ---------------------------------------------------------------------------

def test_tar_at_far_1e3_from_few_impostors_is_flagged(capfd):
    facebench.run(attack="none", pairs=10, out=None, progress=False)
    assert "tar_at_far_1e-3 rests on 5 impostor pairs" in capfd.readouterr().err


def test_attack_progress_moves_with_every_forward_pass():
    import torch

    from facebench.runner import _attack_progress

    net = torch.nn.Linear(3, 2)
    cfg = RunConfig(attack="pgd", attack_params={"steps": 5})
    attack = facebench.load_attack("pgd", steps=5)
    bar, hook = _attack_progress(cfg, attack, None, net, n_probes=4, cached=False)
    try:
        assert bar.total == 4 * 6
        for _ in range(3):  # three attack steps on a batch of four probes
            net(torch.zeros(4, 3))
        assert bar.n == 12
    finally:
        hook.remove()
        bar.close()


def test_eigenbasis_message_only_when_it_is_computed(tmp_path, capsys):
    from facebench.defenses.eigen.faces import cached_eigenbasis

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    cached_eigenbasis(imgs, ["a"], 3, tmp_path, size=8, announce="computing the basis")
    assert "computing the basis" in capsys.readouterr().err
    cached_eigenbasis(imgs, ["a"], 3, tmp_path, size=8, announce="computing the basis")
    assert "computing the basis" not in capsys.readouterr().err


def test_committed_weights_are_checked_against_their_sha256(tmp_path):
    from facebench.trainable import committed_dir, verify_model_hash

    src = committed_dir("side")
    verify_model_hash(src / "model.pt")  # the shipped file is intact
    copy = tmp_path / "side"
    copy.mkdir()
    shutil.copyfile(src / "manifest.json", copy / "manifest.json")
    data = bytearray((src / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.pt").write_bytes(bytes(data))
    with pytest.raises(FacebenchError, match="committed weights are corrupt"):
        verify_model_hash(copy / "model.pt")
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["export"]["model_sha256"]


def test_run_seed_reaches_library_attacks_and_native_ones_are_untouched():
    pytest.importorskip("art", reason="optional ART backend not installed")
    from facebench.runner import validate

    plan = validate(RunConfig(attack="art:ProjectedGradientDescent", seed=7, out=None))
    assert plan.attack.params["seed"] == 7
    assert "seed" not in validate(RunConfig(attack="pgd", seed=7, out=None)).attack.params

"""What the README promises about `facebench run`, `list` and `table`, exercised end to end on
the embedded sample (few pairs, few steps), each asserting the behaviour the README states."""
import re
from pathlib import Path

import pandas as pd
import pytest

import facebench
from clitools import run_cli
from facebench.cli import build_parser
from facebench.results import read_runs

README = Path(__file__).resolve().parents[1] / "README.md"


def cli(*args, cwd=None):
    return run_cli(*args, cwd=cwd)


def _values(df, attack):
    return df[df.attack == attack].set_index("metric")["value"]


def _run_flags() -> set:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {s for a in sub.choices["run"]._actions for s in a.option_strings
            if s.startswith("--") and s != "--help"}


def test_every_run_flag_is_in_the_readme_and_every_readme_flag_exists():
    text = README.read_text(encoding="utf-8")
    flags = _run_flags()
    missing = sorted(f for f in flags if f"`{f}" not in text)
    assert not missing, f"run flags the README does not document: {missing}"
    options = text[text.index("Main `run` options"):]
    options = options[:options.index("\n\n")]
    documented = set(re.findall(r"`(--[a-z][a-z-]*)", options))
    assert documented - flags == set(), f"README names flags run lacks: {documented - flags}"
    assert flags - documented == set(), f"flags missing from 'Main run options': {flags - documented}"


def test_list_shows_datasets_plugins_and_defaults():
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for title in ("recognizers:", "aligners:", "datasets:", "defenses:", "attacks:",
                  "table layouts:"):
        assert title in out
    # the registered defaults are marked
    assert re.search(r"^  lfw-sample\s+\(default\) 100 LFW dev-test pairs", out, re.M)
    assert re.search(r"^  lfw\s+\(training default\) Labeled Faces", out, re.M)
    assert re.search(r"^  pgd\s+\(default\) .*\[steps=40, step_size=None, random_start=True\]", out, re.M)
    assert re.search(r"^  art:<Name>\s", out, re.M) and re.search(r"^  side\s", out, re.M)


def test_same_seed_same_rows_and_batch_size_changes_nothing():
    opts = dict(attack="pgd", attack_params={"steps": 2}, pairs=6, out=None, progress=False,
                adv_cache=False)
    a = facebench.run(seed=3, **opts)
    b = facebench.run(seed=3, **opts)
    pd.testing.assert_series_equal(_values(a, "pgd"), _values(b, "pgd"))
    fgsm = dict(attack="fgsm", pairs=6, out=None, progress=False, adv_cache=False)
    small = _values(facebench.run(batch_size=2, **fgsm), "fgsm")
    large = _values(facebench.run(batch_size=16, **fgsm), "fgsm")
    pd.testing.assert_series_equal(small, large, atol=1e-6, rtol=0)


@pytest.mark.timeout(600)
def test_adaptive_on_a_randomized_defense_is_bpda_eot_and_no_weaker(tmp_path):
    out = tmp_path / "runs.csv"
    opts = dict(attack="pgd", attack_params={"steps": 3}, defense="tvm", pairs=8,
                out=str(out), progress=False)
    grey = facebench.run(**opts)
    adaptive = facebench.run(adaptive=True, eot_samples=2, **opts)
    pgd = "pgd[steps=3]"  # the rows name the settings that differ from the defaults
    assert set(grey[grey.attack == pgd]["adaptive"]) == {"none"}
    assert set(adaptive[adaptive.attack == pgd]["adaptive"]) == {"bpda+eot[eot_samples=2]"}
    assert _values(adaptive, pgd)["asr"] >= _values(grey, pgd)["asr"]
    rows = read_runs(out)
    assert set(rows["adaptive"]) == {"none", "bpda+eot[eot_samples=2]"}


def test_table_metric_writes_its_own_file_beside_the_runs(tmp_path):
    runs = tmp_path / "runs.csv"
    facebench.run(attack="fgsm", pairs=4, out=str(runs), progress=False)
    eer = cli("table", "--runs", str(runs), "--metric", "eer")
    asr = cli("table", "--runs", str(runs), "--metric", "asr")
    assert eer.returncode == 0 and asr.returncode == 0, eer.stderr + asr.stderr
    assert (tmp_path / "table_eer.md").read_text().startswith("<!-- generated")
    assert "**asr**" in (tmp_path / "table_asr.md").read_text()
    assert "**eer**" in (tmp_path / "table_eer.md").read_text()  # not overwritten by asr
    assert "dataset=lfw-sample" in (tmp_path / "table_asr.md").read_text()


def test_clean_rows_are_written_before_the_attack(tmp_path, monkeypatch):
    from facebench.registry import ATTACKS

    def broken(self, *a, **k):
        raise RuntimeError("attack crashed")

    monkeypatch.setattr(ATTACKS.get("fgsm"), "perturb", broken)
    out = tmp_path / "runs.csv"
    with pytest.raises(RuntimeError, match="attack crashed"):
        facebench.run(attack="fgsm", pairs=4, out=str(out), progress=False)
    rows = read_runs(out)
    assert set(rows["attack"]) == {"none"} and "eer" in set(rows["metric"])


def test_cli_run_flags_parse_end_to_end(tmp_path):
    out = tmp_path / "runs.csv"
    proc = cli("run", "--attack", "fgsm", "--minimal-eps", "--minimal-eps-steps", "2",
               "--norm", "linf", "--eps", "4", "--pairs", "4", "--defense", "jpeg",
               "--defense-param", "quality=50", "--no-adv-cache", "--seed", "1", "--quiet",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = read_runs(out)
    attacked = rows[rows.attack != "none"]
    assert set(attacked["attack"]) == {"fgsm[search_steps=2,min-eps]"}
    assert {"median_min_eps", "min_eps_found"} <= set(attacked["metric"])
    assert set(rows["seed"]) == {1} and set(attacked["threat_model"]) == {"linf"}
    proc = cli("run", "--attack", "pgd", "--attack-param", "random_start=false",
               "--attack-param", "steps=1", "--pairs", "4", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    bad = cli("run", "--attack", "pgd", "--attack-param", "stepz=3", "--quiet", "--out", "")
    assert bad.returncode == 2 and "stepz" in bad.stderr and "Traceback" not in bad.stderr


def test_no_auto_train_fails_in_one_line_without_a_model(tmp_path):
    proc = cli("run", "--defense", "pin", "--attack", "none", "--no-auto-train", "--quiet",
               "--out", str(tmp_path / "runs.csv"))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "no trained pin model found" in err[0]
    assert not (tmp_path / "runs.csv").exists()

"""Bad input gets one clear error line, a non-zero exit, no traceback, and old rows survive."""

import numpy as np
import pytest
from PIL import Image

from facebench.results import append_rows
from clitools import run_cli
from test_results import _row


def facebench(*args, cwd=None):
    return run_cli(*args, cwd=cwd)


@pytest.fixture
def runs_csv(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row(), _row(metric="roc_auc", value=0.99)])
    return out


def assert_clean_failure(proc, out, before, needle):
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert len(err) == 1 and err[0].startswith("facebench: error:"), proc.stderr
    assert needle in err[0], err[0]
    assert out.read_bytes() == before


def _pairs_dir(tmp_path, corrupt: bool):
    root = tmp_path / "faces"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.fromarray(rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)).save(root / name)
    if corrupt:
        (root / "d.png").write_bytes(b"not an image at all")
    csv = tmp_path / "pairs.csv"
    csv.write_text("path_a,path_b,same\na.png,b.png,1\nc.png,d.png,0\n")
    return root, csv


def test_corrupt_image(tmp_path, runs_csv):
    before = runs_csv.read_bytes()
    root, csv = _pairs_dir(tmp_path, corrupt=True)
    proc = facebench("run", "--dataset", "pairs", "--pairs-file", str(csv), "--image-root",
                     str(root), "--attack", "none", "--out", str(runs_csv), "--quiet")
    assert_clean_failure(proc, runs_csv, before, "d.png")


def test_missing_pairs_file(tmp_path, runs_csv):
    before = runs_csv.read_bytes()
    proc = facebench("run", "--dataset", "pairs", "--pairs-file", str(tmp_path / "nope.csv"),
                     "--image-root", str(tmp_path), "--out", str(runs_csv), "--quiet")
    assert_clean_failure(proc, runs_csv, before, "nope.csv")


def test_missing_lfw_offline(tmp_path, runs_csv):
    before = runs_csv.read_bytes()
    proc = facebench("run", "--dataset", "lfw", "--data-home", str(tmp_path / "empty"),
                     "--no-download",
                     "--protocol", "dev-test", "--out", str(runs_csv), "--quiet")
    assert_clean_failure(proc, runs_csv, before, "pairsDevTest.txt")


@pytest.mark.parametrize("flag,value,needle", [
    ("--recognizer", "arcfase", "unknown recognizer 'arcfase'"),
    ("--attack", "pgdd", "unknown attack 'pgdd'"),
    ("--defense", "sidee", "unknown defense 'sidee'"),
    ("--eps", "-1", "threat eps must be a finite number >= 0, got -1.0"),
    ("--goal", "steal", "unknown goal 'steal'"),
])
def test_bad_names_and_budgets(tmp_path, runs_csv, flag, value, needle):
    before = runs_csv.read_bytes()
    proc = facebench("run", flag, value, "--out", str(runs_csv), "--quiet",
                     "--data-home", str(tmp_path))
    assert_clean_failure(proc, runs_csv, before, needle)


def test_help_on_every_command():
    for cmd in ([], ["run"], ["list"], ["table"], ["train"]):
        proc = facebench(*cmd, "--help")
        assert proc.returncode == 0 and "usage: facebench" in proc.stdout

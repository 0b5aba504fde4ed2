"""The runs CSV: exact columns, atomic appends, refusal to clobber foreign files, pivots."""
import csv
import os

import pytest

from facebench.errors import FacebenchError
from facebench.report import pivot_table
from facebench.results import COLUMNS, append_rows, read_runs


def _row(**kw):
    base = dict(run_id="r1", started_at="2026-01-01T00:00:00+00:00", facebench_version="0",
                git_sha="x", dataset="lfw", protocol="dev-test", n_pairs=10,
                recognizer="dlib-resnet", defense="none", attack="none", threat_model="none",
                budget=0.0, goal="none", adaptive="none", seed=0, metric="eer", value=0.1,
                wall_s=1.0)
    base.update(kw)
    return base


def test_append_creates_header_then_appends(tmp_path):
    out = tmp_path / "sub" / "runs.csv"
    append_rows(out, [_row()])
    append_rows(out, [_row(run_id="r2", value=0.2)])
    with open(out) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == COLUMNS
    assert [r[0] for r in rows[1:]] == ["r1", "r2"]
    assert read_runs(out)["value"].tolist() == [0.1, 0.2]


def test_row_with_wrong_columns_is_rejected_and_file_untouched(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row()])
    before = out.read_bytes()
    bad = _row()
    del bad["seed"]
    with pytest.raises(ValueError):
        append_rows(out, [bad])
    assert out.read_bytes() == before


def test_foreign_csv_is_not_overwritten(tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(FacebenchError, match="not a facebench runs CSV"):
        append_rows(out, [_row()])
    assert out.read_text() == "a,b\n1,2\n"


def test_failed_write_leaves_previous_content_and_no_temp_files(tmp_path, monkeypatch):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row()])
    before = out.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        append_rows(out, [_row(run_id="r2")])
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["runs.csv"]


def test_pivot_latest_run_per_cell_in_paper_order(tmp_path):
    out = tmp_path / "runs.csv"
    t1, t2 = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"
    append_rows(out, [
        _row(run_id="a", started_at=t1, attack="none", value=0.01),
        _row(run_id="a", started_at=t1, attack="pgd", threat_model="rel-l2", budget=0.04,
             goal="pair", value=0.5),
        _row(run_id="b", started_at=t2, attack="none", value=0.02),
        _row(run_id="b", started_at=t2, attack="pgd", threat_model="rel-l2", budget=0.04,
             goal="pair", value=0.9),
        _row(run_id="c", started_at=t2, attack="fgsm", threat_model="rel-l2", budget=0.04,
             goal="pair", value=0.3),
        _row(run_id="d", started_at=t2, attack="pgd", threat_model="rel-l2", budget=0.04,
             goal="pair", adaptive="plain", value=0.99),
        _row(run_id="c", started_at=t2, attack="fgsm", metric="asr", value=0.7),
    ])
    md = pivot_table(str(out), metric="eer", out=str(tmp_path / "t.md"),
                     filters={"adaptive": "none"})
    header = [l for l in md.splitlines() if l.startswith("| Defense")][0]
    assert header == "| Defense | Clean | fgsm | pgd |"
    body = [l for l in md.splitlines() if l.startswith("| none")][0]
    assert body == "| none | 2.00% | 30.00% | 90.00% |"
    assert (tmp_path / "t.md").read_text() == md
    adaptive = pivot_table(str(out), metric="eer", filters={"adaptive": "any"})
    assert [l for l in adaptive.splitlines() if l.startswith("| none")] == [
        "| none | 2.00% | 99.00% |"]


def test_pivot_unknown_metric_is_a_clear_error(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row()])
    with pytest.raises(FacebenchError, match="no rows with metric 'nope'"):
        pivot_table(str(out), metric="nope")

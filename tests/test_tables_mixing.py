"""Tables never mix configurations: one declared setup per table, stated in its caption."""
import pytest

from facebench.errors import FacebenchError
from facebench.report import render_table, table_config
from facebench.results import COLUMNS, append_rows, read_runs
from test_results import _row as base_row

PGD = dict(attack="pgd", threat_model="rel-l2", budget=0.04, goal="pair")
LINF = dict(attack="torchattacks:PGD", threat_model="linf", budget=0.5, goal="pair")


def _row(**kw):
    """A runs-CSV row of a 1000-pair run (the shared test row with another default)."""
    row = base_row(**{"n_pairs": 1000, **kw})
    assert set(row) == set(COLUMNS)
    return row


def _run(run_id, day, clean, attacked=None, attack=PGD, **kw):
    """Rows of one run: its clean row, plus an attacked row when ``attacked`` is given."""
    base = dict(run_id=run_id, started_at=f"2026-01-{day:02d}T00:00:00+00:00", **kw)
    rows = [_row(**base, value=clean)] if clean is not None else []
    return rows + ([_row(**base, **attack, value=attacked)] if attacked is not None else [])


def _body(md):
    return [ln for ln in md.splitlines() if ln.startswith("| ") and "Defense" not in ln]


def _header(md):
    return next(ln for ln in md.splitlines() if ln.startswith("| Defense"))


def test_small_clean_run_is_not_shown_beside_larger_attack_cells(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("big", 1, 0.02, 0.6) + _run("small", 2, 0.05, n_pairs=20))
    with pytest.raises(FacebenchError, match=r"n_pairs \(20, 1000\).*--n-pairs"):
        render_table(str(out))
    md = render_table(str(out), filters={"n_pairs": 1000})
    assert _body(md) == ["| none | 2.00% | 60.00% |"]  # the clean cell of the 1000-pair run


def test_newer_smaller_run_does_not_replace_a_cell(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("big", 1, 0.02, 0.6) + _run("small", 2, 0.03, 0.4, n_pairs=100))
    with pytest.raises(FacebenchError, match=r"rows differ in n_pairs \(100, 1000\)"):
        render_table(str(out))
    md = render_table(str(out), filters={"n_pairs": 1000})
    assert _body(md) == ["| none | 2.00% | 60.00% |"]
    assert "n_pairs=1000" in md and "from 1 run" in md and "latest of" not in md


def test_threat_models_and_budgets_are_not_mixed(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("l", 1, 0.02, 0.7, LINF) + _run("r", 2, 0.02, 0.9))
    with pytest.raises(FacebenchError, match=r"threat_model \(linf, rel-l2\) and budget "
                       r"\(0.04, 0.5\); choose with --threat-model / --budget"):
        render_table(str(out))
    md = render_table(str(out), filters={"threat_model": "linf", "budget": 0.5})
    assert _header(md) == "| Defense | Clean | torchattacks:PGD |"
    assert _body(md) == ["| none | 2.00% | 70.00% |"]
    md = render_table(str(out), filters={"threat_model": "rel-l2", "budget": 0.04})
    assert _header(md) == "| Defense | Clean | pgd |"


def test_caption_states_the_configuration_and_reruns(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("a", 1, 0.02, 0.6) + _run("b", 1, 0.03, 0.5, defense="jpeg"))
    md = render_table(str(out), filters={"adaptive": "none"})
    assert ("dataset=lfw, protocol=dev-test, recognizer=dlib-resnet, n_pairs=1000, "
            "threat_model=rel-l2, budget=0.04, goal=pair, adaptive=none; from 2 runs") in md
    assert "latest of" not in md
    append_rows(out, _run("c", 3, 0.01, 0.8))  # a rerun of the none cells
    md = render_table(str(out), filters={"adaptive": "none"})
    assert "from 2 runs (latest of up to 2 runs per cell)" in md
    assert _body(md) == ["| none | 1.00% | 80.00% |", "| jpeg | 3.00% | 50.00% |"]


def test_clean_cell_prefers_the_runs_of_the_attack_cells(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("astar", 1, 0.02, 0.99, dict(PGD, adaptive="a*"))
                + _run("grey", 2, 0.03, 0.9)  # newer, but its attack is not in this table
                + _run("bare", 1, None, 0.7, defense="jpeg") + _run("cj", 2, 0.04, defense="jpeg")
                + _run("jpeg-a*", 1, None, 0.98, dict(PGD, adaptive="a*"), defense="jpeg"))
    md = render_table(str(out), filters={"adaptive": "a*"})
    # none: the clean row of the a* run itself; jpeg: its a* run has no clean row, so the
    # latest clean run of the same configuration
    assert _body(md) == ["| none | 2.00% | 99.00% |", "| jpeg | 4.00% | 98.00% |"]


def test_through_group_is_a_declared_choice_not_a_mix(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("p", 1, 0.02, 0.5, dict(PGD, adaptive="plain"))
                + _run("b", 1, 0.03, 0.6, dict(PGD, adaptive="bpda"), defense="jpeg"))
    md = render_table(str(out), filters={"adaptive": "through"})
    assert "adaptive=through (bpda, plain)" in md and len(_body(md)) == 2
    # another EOT strength is still an attack through the defense
    append_rows(out, _run("e", 2, 0.02, 0.7, dict(PGD, adaptive="bpda+eot[eot_samples=16]"),
                          defense="side[quick]"))
    md = render_table(str(out), filters={"adaptive": "through"})
    assert "bpda+eot[eot_samples=16]" in md and len(_body(md)) == 3


def test_side_tables_refuse_mixed_pair_counts(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("q", 1, 0.3, 0.4, defense="side[quick]", n_pairs=200)
                + _run("q20", 2, 0.1, 0.2, defense="side[quick]", n_pairs=20))
    with pytest.raises(FacebenchError, match=r"n_pairs \(20, 200\)"):
        render_table(str(out), layout="side-ablation")
    md = render_table(str(out), layout="side-ablation", filters={"n_pairs": 200})
    assert _body(md) == ["| SIDE | 30.00% | 40.00% |"] and "n_pairs=200" in md


def _evo(run_id, day, n_pairs, mse):
    attack = dict(attack="evolutionary", threat_model="rel-l2", budget=0.04, goal="pair",
                  adaptive="query", metric="mse_dodging_at_1000")
    return _run(run_id, day, None, mse, attack, n_pairs=n_pairs)


def test_table4_refuses_mixed_pair_counts(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _evo("a", 1, 50, 3e-3) + _evo("b", 2, 8, 1e-3)
                + _run("c", 3, 0.02, n_pairs=1000))  # a clean run: not this table's rows
    with pytest.raises(FacebenchError, match=r"n_pairs \(8, 50\)"):
        render_table(str(out), layout="table4")
    md = render_table(str(out), layout="table4", filters={"n_pairs": 50})
    assert _body(md) == ["| none | 3.00e-3 | – |"] and "n_pairs=50" in md


def _advhat(run_id, day, n_pairs, accuracy):
    attack = dict(attack="advhat", threat_model="sticker:Someone", budget=0.1152,
                  goal="impersonation", metric="accuracy")
    return _run(run_id, day, None, accuracy, attack, n_pairs=n_pairs) + [
        _row(run_id=run_id, started_at=f"2026-01-{day:02d}T00:00:00+00:00", n_pairs=n_pairs,
             metric="threshold", value=0.9)]


def test_table6_refuses_mixed_face_counts(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _advhat("a", 1, 962, 0.8) + _advhat("b", 2, 10, 0.3)
                + _run("c", 3, 0.02, n_pairs=1000))  # a clean run: not this table's rows
    with pytest.raises(FacebenchError, match=r"n_pairs \(10, 962\)"):
        render_table(str(out), layout="table6", filters={"adaptive": "none"})
    md = render_table(str(out), layout="table6", filters={"adaptive": "none", "n_pairs": 962})
    assert _body(md)[0].startswith("| none | 0.9000 | – | – | – | 80.00% |")
    assert "n_pairs=962" in md and "budget=0.1152" in md


def test_table_config_names_the_single_values(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("a", 1, 0.02, 0.6))
    rows, config = table_config(read_runs(out), {"adaptive": "none"})
    assert len(rows) == 2 and config == {
        "dataset": "lfw", "protocol": "dev-test", "recognizer": "dlib-resnet",
        "n_pairs": "1000", "threat_model": "rel-l2", "budget": "0.04", "goal": "pair",
        "adaptive": "none"}


def test_table_batch_renders_each_line_and_checks_all_lines_first(tmp_path):
    """`facebench table --batch FILE`: one table per line in one process; a bad line fails
    before any table is written (so a typo never leaves half the tables regenerated)."""
    from clitools import run_cli

    out = tmp_path / "runs.csv"
    append_rows(out, _run("big", 1, 0.02, 0.6) + _run("small", 2, 0.05, 0.3, n_pairs=20))
    batch = tmp_path / "tables.txt"
    batch.write_text(f"# two tables\n--runs {out} --n-pairs 1000 --out {tmp_path / 'a.md'}\n"
                     f"--runs {out} --n-pairs 20 --metric eer --out {tmp_path / 'b.md'}\n")
    r = run_cli("table", "--batch", str(batch))
    assert r.returncode == 0, r.stderr
    assert _body((tmp_path / "a.md").read_text()) == ["| none | 2.00% | 60.00% |"]
    assert _body((tmp_path / "b.md").read_text()) == ["| none | 5.00% | 30.00% |"]
    (tmp_path / "a.md").unlink()
    batch.write_text(f"--runs {out} --n-pairs 1000 --out {tmp_path / 'a.md'}\n"
                     f"--runs {out} --n-pairz 20\n")
    r = run_cli("table", "--batch", str(batch))
    assert r.returncode == 2 and "line 2: bad table options" in r.stderr
    assert not (tmp_path / "a.md").exists()


# ---------------------------------------------------------------- layouts across recognizers

def _transfer_rows():
    """White-box and transfer rows of two recognizers, PGD asr, plus rows that must stay
    out: a defended source, another budget."""
    rows = []
    for i, (rec, adaptive, value) in enumerate([
            ("a", "none", 1.0), ("b", "none", 0.9), ("b", "transfer:a", 0.3),
            ("a", "transfer:b", 0.2), ("b", "transfer:a+jpeg", 0.05)]):
        rows += _run(f"r{i}", i + 1, 0.02, value, dict(PGD, adaptive=adaptive),
                     recognizer=rec, metric="asr")
    rows += _run("other", 9, 0.02, 0.5, dict(PGD, budget=0.01), recognizer="b", metric="asr")
    return rows


def test_transfer_matrix_puts_white_box_on_the_diagonal_and_bare_sources_elsewhere(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _transfer_rows())
    with pytest.raises(FacebenchError, match=r"budget \(0.01, 0.04\)"):
        render_table(str(out), "transfer-matrix", "asr", filters={"attack": "pgd"})
    md = render_table(str(out), "transfer-matrix", "asr", filters={"attack": "pgd",
                                                                   "budget": 0.04})
    body = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert body == ["| `a` | 100.00% | 30.00% |", "| `b` | 20.00% | 90.00% |"]
    assert "attack=pgd" in md and "budget=0.04" in md


def test_recognizer_attack_layout_is_table_1_per_recognizer(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, _run("a", 1, 0.02, 1.0, recognizer="a")
                + _run("b", 2, 0.01, 0.8, recognizer="b[align=x]")
                + _run("c", 3, 0.04, 0.7, recognizer="c", defense="jpeg"))
    with pytest.raises(FacebenchError, match="several defenses .* --defense"):
        render_table(str(out), "recognizer-attack")
    md = render_table(str(out), "recognizer-attack", filters={"defense": "none"})
    body = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert body == ["| `a` | 2.00% | 100.00% |", "| `b[align=x]` | 1.00% | 80.00% |"]

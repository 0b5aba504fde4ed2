"""Table layouts, SIDE variant names, and registry name families (``lib:<Name>``)."""
import json

import pytest

from facebench.defenses.eigen.purifier import EigenPurifier
from facebench.errors import FacebenchError
from facebench.registry import LAYOUTS, Registry
from facebench.report import render_table
from facebench.results import append_rows

from test_results import _row


def _side_rows(out):
    rows = []
    for i, (defense, clean, pgd) in enumerate([
            ("side[quick]", 0.02, 0.30), ("side[quick,no-ssat]", 0.03, 0.6),
            ("side[quick,no-memory]", 0.04, 0.5), ("side[quick,k=20]", 0.05, 0.28),
            ("none", 0.01, 1.0), ("side[medium]", 0.06, 0.07)]):
        rows += [_row(run_id=f"r{i}", defense=defense, value=clean),
                 _row(run_id=f"r{i}", defense=defense, attack="pgd", threat_model="rel-l2",
                      budget=0.04, goal="pair", value=pgd),
                 _row(run_id=f"a{i}", defense=defense, attack="pgd", threat_model="rel-l2",
                      budget=0.04, goal="pair", adaptive="a*", value=0.99,
                      started_at="2026-02-01T00:00:00+00:00")]
    append_rows(out, rows)


def test_side_ablation_layout_keeps_the_paper_row_order_and_grey_box(tmp_path):
    out = tmp_path / "runs.csv"
    _side_rows(out)
    md = render_table(str(out), layout="side-ablation")
    body = [line for line in md.splitlines() if line.startswith("| ") and "Defense" not in line]
    # one table per training schedule, never mixing them; the a* rows (99%) are not grey-box
    assert body == ["| SIDE | 6.00% | 7.00% |",
                    "| w/o SSAT | 3.00% | 60.00% |", "| w/o Memory | 4.00% | 50.00% |",
                    "| SIDE | 2.00% | 30.00% |"]
    assert md.index("medium training schedule") < md.index("quick training schedule")
    # each block states the one configuration it holds; the a* rows are another one
    assert md.count("n_pairs=10, threat_model=rel-l2, budget=0.04, goal=pair, adaptive=none") == 2
    clones = render_table(str(out), layout="side-clones")
    assert "| k=10 | 2.00% | 30.00% |" in clones and "| k=20 | 5.00% | 28.00% |" in clones
    assert "k=30" not in clones  # no rows, no line


def test_a_star_rows_form_table_7_with_the_default_layout(tmp_path):
    out = tmp_path / "runs.csv"
    _side_rows(out)
    md = render_table(str(out), filters={"adaptive": "a*"})
    assert "| none | 1.00% | 99.00% |" in md and "| side[quick] | 2.00% | 99.00% |" in md
    rows = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ")]
    assert rows.index("| none") < rows.index("| side[medium]")  # base name keeps paper order


def test_unknown_layout_is_a_clear_error(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row()])
    with pytest.raises(FacebenchError, match="unknown table layout 'nope'"):
        render_table(str(out), layout="nope")
    assert "defense-attack" in LAYOUTS.names()


def test_variant_suffix_from_the_training_manifest(tmp_path):
    class Side(EigenPurifier):
        variant_defaults = {"use_memory": True, "ssat": True, "k": 10}

    model = tmp_path / "model.pt"
    assert EigenPurifier.variant_suffix(Side, model) == ""  # no manifest: plain name
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"preset": "full", "config": {"use_memory": False, "ssat": True, "k": 20}}))
    assert EigenPurifier.variant_suffix(Side, model) == "[no-memory,k=20]"
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"preset": "quick", "config": {"use_memory": True, "ssat": False, "k": 10}}))
    assert EigenPurifier.variant_suffix(Side, model) == "[quick,no-ssat]"
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"preset": "medium", "config": {"use_memory": True, "ssat": True, "k": 10}}))
    assert EigenPurifier.variant_suffix(Side, model) == "[medium]"
    assert EigenPurifier.variant_suffix(EigenPurifier, model) == "[medium]"  # PIN: no options
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"preset": "medium", "config": {"lambdas": [8.0, 1.0, 0.0004]}}))

    class SideW(EigenPurifier):
        variant_defaults = {"k": 10, "lambdas": [8.0, 1.0, 0.003]}

    assert EigenPurifier.variant_suffix(SideW, model) == "[medium,lambdas=8/1/0.0004]"

    class SideC(EigenPurifier):  # an option added later: old manifests mean its legacy value
        variant_defaults = {"calibration": "centre"}
        variant_legacy = {"calibration": "none"}

    assert EigenPurifier.variant_suffix(SideC, model) == "[medium,calibration=none]"
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"preset": "cpu", "config": {"calibration": "centre"}}))
    assert EigenPurifier.variant_suffix(SideC, model) == "[cpu]"


def test_list_options_parse_from_the_command_line():
    from facebench.cli import _params
    from facebench.defenses.side.trainer import PRESETS, check_config

    opts = _params(["lambdas=8,1,0.0004", "k=20", "name=a,b"], "--option")
    assert opts == {"lambdas": [8.0, 1.0, 0.0004], "k": 20, "name": "a,b"}
    check_config({**PRESETS["quick"], "lambdas": opts["lambdas"]})
    with pytest.raises(FacebenchError, match="lambdas must be three numbers"):
        check_config({**PRESETS["quick"], "lambdas": "8,1"})


def test_registry_prefix_families(monkeypatch):
    reg = Registry("attack", "facebench.attacks")
    reg._loaded = True  # no plugin package import for this toy registry
    made = []

    def factory(rest):
        if rest != "Good":
            raise FacebenchError(f"lib has no attack {rest!r}")
        made.append(rest)
        return type("LibGood", (), {})

    reg.register_prefix("lib", factory, "attacks of lib")
    assert reg.get("lib:Good").__name__ == "LibGood" and made == ["Good"]
    assert "lib:Good" in reg and "other:Good" not in reg
    assert reg.prefixes() == [("lib", "attacks of lib")]
    with pytest.raises(FacebenchError, match="lib has no attack 'Bad'"):
        reg.get("lib:Bad")
    with pytest.raises(FacebenchError, match=r"lib:<Name>"):
        reg.get("nothing")
    with pytest.raises(ValueError):
        reg.register_prefix("lib", lambda rest: None)


def test_learned_defense_is_refused_on_another_protocol():
    from types import SimpleNamespace

    from facebench.runner import check_training_protocol

    side = SimpleNamespace(meta={"protocol": "dev-test"}, registry_name="side")
    check_training_protocol(side, "lfw", "dev-test")  # its own protocol: fine
    check_training_protocol(SimpleNamespace(), "lfw", "10-fold")  # not learned: fine
    check_training_protocol(side, "pairs", "x.csv")  # your own pairs: your call
    with pytest.raises(FacebenchError, match="trained on people held out of LFW 'dev-test'"):
        check_training_protocol(side, "lfw", "10-fold")


def test_defenses_with_only_clean_rows_are_left_out_of_attack_tables(tmp_path):
    out = tmp_path / "runs.csv"
    append_rows(out, [_row(run_id="a", defense="none"), _row(run_id="b", defense="jpeg"),
                      _row(run_id="a", defense="none", attack="pgd", threat_model="rel-l2",
                           budget=0.04, goal="pair", value=0.9)])
    md = render_table(str(out))
    assert "| none | 10.00% | 90.00% |" in md and "| jpeg |" not in md
    clean_only = render_table(str(out), filters={"adaptive": "none"}, metric="eer")
    assert "| none |" in clean_only
    append_rows(out, [_row(run_id="c", defense="median")])
    assert "| median |" not in render_table(str(out))
    only_clean = tmp_path / "clean.csv"
    append_rows(only_clean, [_row(run_id="a"), _row(run_id="b", defense="jpeg")])
    assert "| jpeg | 10.00% |" in render_table(str(only_clean))  # a clean-only table keeps all


def test_adaptive_through_keeps_only_gradient_through_defense_rows(tmp_path):
    """``through`` tabulates --adaptive runs; a* and transfer rows stay out of that table."""
    out = tmp_path / "runs.csv"
    rows = []
    for i, (kind, value) in enumerate([("bpda+eot", 0.62), ("a*", 0.35),
                                       ("transfer:dlib-resnet", 0.9), ("plain", 0.5)]):
        defense = "none" if kind == "plain" else "side[medium]"
        rows += [_row(run_id=f"t{i}", defense=defense, value=0.1),
                 _row(run_id=f"t{i}", defense=defense, attack="pgd", threat_model="rel-l2",
                      budget=0.04, goal="pair", adaptive=kind, value=value,
                      started_at=f"2026-03-0{i + 1}T00:00:00+00:00")]
    append_rows(out, rows)
    through = render_table(str(out), filters={"adaptive": "through"})
    assert "| side[medium] | 10.00% | 62.00% |" in through and "| none | 10.00% | 50.00% |" in through
    assert "adaptive=through (bpda+eot, plain)" in through  # a declared group, not a mix
    anything = render_table(str(out), filters={"adaptive": "any"})
    assert "| side[medium] | 10.00% | 90.00% |" in anything  # the newest row of any kind

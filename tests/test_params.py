"""The one parameter spec (facebench.params): coercion, checks, messages, listing, the CLI."""
import dataclasses

import pandas as pd
import pytest

from clitools import run_cli
from facebench.attack import Attack, row_tags, tagged
from facebench.minimal_eps import wrap_minimal
from facebench.plan import build_attack
from facebench.cli import _params, build_parser, run_config
from facebench.errors import FacebenchError
from facebench.params import Param, ParamSpec, spec_of
from facebench.registry import ATTACKS, DEFENSES
from facebench.runner import RunConfig, build_defense
from facebench.threat import ThreatModel

SPEC = ParamSpec(
    Param("steps", 40, int, low=1), Param("step_size", None, float, low=0, low_open=True),
    Param("random_start", True, bool), Param("name", "a", str),
    Param("lambdas", [8.0, 1.0], list), Param("mode", "fast", "choice", choices=("fast", "slow")),
    Param("quality", 75, int, low=1, high=100), owner="attack demo")


@pytest.mark.parametrize("key, text, value", [
    ("steps", "10", 10), ("step_size", "0.5", 0.5), ("step_size", "none", None),
    ("random_start", "false", False), ("random_start", "True", True),
    ("random_start", "no", False), ("name", "12", "12"), ("lambdas", "8,1,0.0004", [8.0, 1.0, 0.0004]),
    ("lambdas", "3", [3.0]), ("mode", "slow", "slow"), ("quality", "100", 100)])
def test_coerce_every_kind(key, text, value):
    got = SPEC.coerce(key, text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("key, text, needle", [
    ("steps", "0", "steps must be an integer >= 1, got 0"),
    ("steps", "1.5", "steps must be an integer >= 1, got '1.5'"),
    ("step_size", "0", "step_size must be a number > 0"),
    ("random_start", "maybe", "random_start must be true or false, got 'maybe'"),
    ("lambdas", "a,b", "lambdas must be a comma-separated list of numbers"),
    ("mode", "medium", "mode must be one of fast, slow, got 'medium'"),
    ("quality", "101", "quality must be an integer in [1, 100], got 101")])
def test_range_and_choice_errors_are_one_line_naming_plugin_and_key(key, text, needle):
    with pytest.raises(FacebenchError) as err:
        SPEC.coerce(key, text)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("attack demo: ") and needle in msg


def test_validate_fills_defaults_and_checks_values():
    out = SPEC.validate({"steps": 3.0, "step_size": 2})
    assert out["steps"] == 3 and type(out["steps"]) is int and out["random_start"] is True
    assert list(out) == SPEC.names()
    for bad in ({"steps": True}, {"step_size": float("nan")}, {"random_start": 1},
                {"lambdas": ["x"]}, {"name": 3}):
        with pytest.raises(FacebenchError, match=next(iter(bad))):
            SPEC.validate(bad)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(FacebenchError) as err:
        SPEC.coerce("stepz", "3")
    msg = str(err.value)
    assert "unknown parameter 'stepz' for attack demo" in msg and "did you mean 'steps'" in msg
    assert "accepted: steps, step_size, random_start" in msg
    with pytest.raises(FacebenchError, match="did you mean 'overshoot'"):
        ATTACKS.get("deepfool")(ThreatModel("linf"), overshot=0.1)
    with pytest.raises(FacebenchError, match="accepted: none"):
        ATTACKS.get("fgsm")(ThreatModel("linf"), steps=2)
    with pytest.raises(FacebenchError, match="defense 'jpeg'.*did you mean 'quality'"):
        build_defense("jpeg", {"qualty": 50})


def test_spec_derived_from_a_defaults_dict():
    class Old(Attack):
        defaults = {"steps": 5, "scale": 1.0, "flag": False, "base": "pgd", "taus": (1, 2),
                    "cap": None}

    spec = Old.param_spec()
    assert spec.defaults() == Old.defaults and spec.owner == "attack old"
    assert spec.coerce("steps", "7") == 7 and spec.coerce("scale", "2") == 2.0
    assert spec.coerce("flag", "true") is True and spec.coerce("base", "12") == "12"
    assert spec.coerce("taus", "3,4") == [3.0, 4.0] and spec.coerce("cap", "9") == 9
    assert spec.coerce("steps", "x") == "x"  # loose: the plugin's validate() judges it
    with pytest.raises(FacebenchError, match="did you mean 'steps'"):
        Old(ThreatModel("linf"), stepz=1)
    assert Old(ThreatModel("linf"), steps=9).steps == 9


def test_declared_specs_provide_defaults():
    assert ATTACKS.get("cw").defaults == {"c": 10.0, "kappa": 0.0, "steps": 100,
                                          "search_steps": 5, "lr": 0.01}
    for name, key in (("jpeg", "quality"), ("median", "size"), ("bit-depth", "bits")):
        cls = DEFENSES.get(name)
        assert cls.spec is not None and key in cls.spec
        assert getattr(cls(), key) == cls.defaults[key]
    assert spec_of(ATTACKS.get("pgd")).describe() == "steps=40, step_size=None, random_start=True"
    with pytest.raises(TypeError, match="ParamSpec"):
        type("Bad", (Attack,), {"spec": {"steps": 1}})


def test_list_shows_pgd_parameters_unchanged():
    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.strip().startswith("pgd "))
    assert line.endswith("[steps=40, step_size=None, random_start=True]")
    assert any(l.strip().startswith("jpeg ") and l.endswith("[quality=75]")
               for l in proc.stdout.splitlines())


def test_cli_values_are_coerced_by_the_target_spec():
    args = build_parser().parse_args(
        ["run", "--attack", "cw", "--attack-param", "steps=10", "--attack-param", "lr=1",
         "--defense", "jpeg", "--defense-param", "quality=50", "--out", "", "--no-download"])
    cfg = run_config(args)
    assert cfg.attack_params == {"steps": 10, "lr": 1.0} and type(cfg.attack_params["lr"]) is float
    assert cfg.defense_params == {"quality": 50} and cfg.out is None and cfg.download is False
    with pytest.raises(FacebenchError, match="attack cw: steps must be an integer"):
        run_config(build_parser().parse_args(["run", "--attack", "cw", "--attack-param", "steps=x"]))
    # no spec (an unknown name): the generic guess, as before
    assert _params(["lambdas=8,1,0.0004", "k=20"], "--option") == {"lambdas": [8.0, 1.0, 0.0004],
                                                                   "k": 20}


def test_run_config_is_built_field_by_field():
    cfg = run_config(build_parser().parse_args(["run", "--out", "x.csv"]))
    defaults = RunConfig(out="x.csv")
    for f in dataclasses.fields(RunConfig):
        assert getattr(cfg, f.name) == getattr(defaults, f.name), f.name


def test_cli_run_with_typed_attack_params_writes_rows(tmp_path):
    out = tmp_path / "runs.csv"
    proc = run_cli("run", "--attack", "pgd", "--attack-param", "steps=1",
                   "--attack-param", "random_start=false", "--pairs", "2", "--no-adv-cache",
                   "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(out)
    # the parameters that differ from the defaults name the cell: a 1-step PGD row never
    # shares a table cell with the default 40-step one
    assert set(rows["attack"]) == {"none", "pgd[steps=1,random_start=False]"}
    assert (rows["attack"] != "none").sum() > 0


def test_row_attack_names_non_default_parameters():
    t = ThreatModel("rel-l2", 0.04)
    assert build_attack("pgd", t, {}).row_attack == "pgd"
    assert build_attack("pgd", t, {"steps": 40, "random_start": True}).row_attack == "pgd"
    assert build_attack("pgd", t, {"steps": 100}).row_attack == "pgd[steps=100]"
    assert build_attack("pgd", t, {"step_size": 0.01}).row_attack == "pgd[step_size=0.01]"
    # the seed has a column of its own
    assert build_attack("evolutionary", t, {"seed": 3}).row_attack == "evolutionary"
    # a* rows name the base attack (the adaptive column says a*) with its own settings
    assert build_attack("a-star", t, {"base": "deepfool"}).row_attack == "deepfool"
    assert build_attack("a-star", t, {"base": "pgd", "steps": 7}).row_attack == "pgd[steps=7]"
    assert (build_attack("a-star", t, {"base": "fgsm", "n_components": 300}).row_attack
            == "fgsm[n_components=300]")
    minimal = wrap_minimal(build_attack("pgd", t, {"steps": 5}), search_steps=4)
    assert minimal.row_attack == "pgd[steps=5,search_steps=4,min-eps]"
    assert wrap_minimal(build_attack("fgsm", t, {})).row_attack == "fgsm[min-eps]"


def test_row_tags_values():
    assert row_tags({"a": 2, "b": 0.5, "c": [1.0, 2.5], "d": "x,y"}, {"a": 2.0}) == [
        "b=0.5", "c=1/2.5", "d=x/y"]
    assert row_tags({"flag": True}, {"flag": 1}) == ["flag=True"]  # a bool is not an int
    assert row_tags({"budgets": [1000, 5000]}, {"budgets": (1000, 5000)}) == []
    assert tagged("pgd", []) == "pgd" and tagged("pgd[a=1]", ["b"]) == "pgd[a=1,b]"

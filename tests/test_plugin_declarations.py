"""Table order and metric formats come from the plugins that declare them; the core names none."""
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facebench.registry import ATTACKS, DEFENSES, METRICS, MetricFormats, Registry
from facebench.report import _fmt, attack_sort_key, defense_sort_key

ROOT = Path(__file__).resolve().parents[1]
#: core modules that must not know any attack or defense by name
CORE = ("report.py", "minimal_eps.py", "metrics.py", "registry.py")


def test_core_formats_and_plugin_declared_formats():
    assert _fmt("eer", 0.0123) == "1.23%" and _fmt("tar_at_far_1e-3", 0.5) == "50.00%"
    assert _fmt("roc_auc", 0.98765) == "0.9877" and _fmt("mean_linf", 0.03) == "0.0300"
    assert _fmt("tau_asr_250", 0.5) == "50.00%"  # lots declares tau_asr_<tau>
    assert _fmt("mse_dodging_at_1000", 0.00123) == "1.23e-03"  # evolutionary
    assert _fmt("mse_at_5000", 0.00123) == "1.23e-03"
    assert _fmt("evo_start_failed", 0.25) == "25.00%"
    assert _fmt("budget_exhausted", 0.1) == "10.00%"  # the library backends' base class
    assert _fmt("never_declared", 2.0) == "2.0000" and _fmt("eer", math.nan) == "–"


def test_metric_patterns_exact_names_win_and_conflicts_fail():
    m = MetricFormats()
    m.register("acc_<x>", "percent")
    m.register("acc_raw", "number")
    m.register("acc_<x>_std_<y>", "scientific")
    assert m.format_of("acc_top") == "percent" and m.format_of("acc_raw") == "number"
    assert m.format_of("acc_a_std_b") == "scientific"  # the longer pattern is more specific
    assert m.format_of("acc_") == "number"  # a placeholder stands for at least one character
    m.register("acc_<x>", "percent")  # the same declaration twice is fine (subclasses)
    with pytest.raises(ValueError, match="declared percent and number"):
        m.register("acc_<x>", "number")
    with pytest.raises(ValueError, match="format must be one of"):
        m.register("b", "bold")


def test_class_attribute_metric_formats_are_registered_with_the_class():
    reg = Registry("widget", "facebench.layouts")

    @reg.register("w")
    class Widget:
        """A widget."""
        metric_formats = {"widget_share_<n>": "percent"}

    try:
        assert METRICS.format_of("widget_share_3") == "percent"
        assert ("widget_share_<n>", "percent", "from widget w") in METRICS.items()
    finally:
        METRICS._entries.pop("widget_share_<n>")


def test_paper_order_is_declared_by_the_plugins():
    assert [ATTACKS.declared(n, "table_order") for n in ("fgsm", "deepfool", "pgd", "cw")] == \
        [1.0, 2.0, 3.0, 4.0]
    cols = ["pgd", "bim", "none", "cw", "art:ProjectedGradientDescent", "fgsm", "deepfool",
            "pgd[min-eps]"]
    assert sorted(cols, key=attack_sort_key) == [
        "none", "fgsm", "deepfool", "pgd", "cw", "art:ProjectedGradientDescent", "bim",
        "pgd[min-eps]"]
    rows = ["tvm", "zeta[quick]", "none", "median", "zeta", "alpha[quick,k=2]", "alpha[quick]",
            "quilting", "jpeg", "bit-depth"]
    # defenses that declare no order follow the declared ones, grouped by base name
    assert sorted(rows, key=defense_sort_key) == [
        "none", "jpeg", "bit-depth", "median", "tvm", "quilting", "alpha[quick]",
        "alpha[quick,k=2]", "zeta", "zeta[quick]"]


def test_declared_never_builds_a_family_member():
    assert ATTACKS.declared("art:NoSuchAttack", "table_order", "dflt") == "dflt"
    assert DEFENSES.declared("no-such-defense", "table_order") is None


def test_the_core_names_no_attack_or_defense():
    names = [n for n in ATTACKS.names() + DEFENSES.names() if n != "none"]
    for module in CORE:
        text = (ROOT / "bench" / module).read_text(encoding="utf-8")
        named = [n for n in names if re.search(rf"[\"'`]{re.escape(n)}[\"'`\[]", text)]
        assert not named, f"bench/{module} names plugins {named}"


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["table", "--help"],
                                  ["train", "--help"]])
def test_help_imports_neither_torch_nor_pandas(argv):
    code = ("import sys\nfrom facebench.cli import main\ntry:\n    main(%r)\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'sklearn') if m in sys.modules), "
            "file=sys.stderr)" % argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]"

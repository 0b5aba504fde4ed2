"""SIDE paper Table 4: MSE left by the Evolutionary attack after 1k / 5k / 10k queries.

Rows = defense, columns = (dodging, impersonation) × query budget. Cells read the metrics
``mse_dodging_at_<q>`` / ``mse_impersonation_at_<q>`` of ``evolutionary`` runs: a pair run
fills both halves, a dodging or impersonation run one; the newest run wins per cell. Higher
means a stronger defense. MSE is in [0, 1] pixel units (the paper's [−1, 1] units are ×4).
The ``metric`` argument is not used: the table always shows these MSEs. Attack-side filters
(goal, adaptive, threat model, budget) are ignored too: the goals are the columns, the attack
is always decision-based (adaptive "query") and unbounded (the eps in its rows means nothing).
So the configuration a table must not mix is the run's: dataset, protocol, recognizer, n_pairs.
"""
from __future__ import annotations

import math
import re


from facebench.errors import FacebenchError
from facebench.registry import register_layout

ATTACK = "evolutionary"
MODES = ("dodging", "impersonation")
IGNORED = ("goal", "adaptive", "threat_model", "budget")
_METRIC = re.compile(r"^mse_(dodging|impersonation)_at_(\d+)$")


def fmt_mse(value) -> str:
    """Scientific with a short exponent, as in the paper: 0.00123 -> 1.23e-3."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


@register_layout("table4", "rows = defense, columns = goal × queries: Evolutionary MSE "
                 "(SIDE Table 4)")
def table4_layout(df, metric: str, filters, source: str) -> str:
    import pandas as pd  # lazy: `facebench list` stays fast

    from facebench.report import (RUN_FIELDS, base_attack, caption, defense_sort_key, latest,
                                  markdown, newest, runs_note, table_config)

    filters = {k: v for k, v in (filters or {}).items() if k not in IGNORED}
    df = df[base_attack(df["attack"]) == ATTACK]
    parsed = df["metric"].astype(str).str.extract(_METRIC)
    df = df.assign(mode=parsed[0], queries=pd.to_numeric(parsed[1])).dropna(subset=["mode"])
    df, config = table_config(df, filters, RUN_FIELDS + ("attack",))  # one setting of it
    if df.empty:
        raise FacebenchError(f"no {ATTACK} rows with mse_<goal>_at_<queries> metrics match "
                             f"the filters in {source}; run `facebench run --attack {ATTACK}`")
    df = df.assign(queries=df["queries"].astype(int))
    keys = ["defense", "mode", "queries"]
    cell = latest(df, keys)["value"]
    budgets = sorted(df["queries"].unique())
    cols = [(mode, q) for mode in MODES for q in budgets]
    defenses = sorted(df["defense"].unique(), key=defense_sort_key)
    header = ["Defense"] + [f"{mode.capitalize()} {q}" for mode, q in cols]
    body = [[d] + [fmt_mse(cell.get((d, mode, q), math.nan)) for mode, q in cols]
            for d in defenses]
    title = ("**Evolutionary attack: MSE to the clean probe after N queries** (rows: defense, "
             "columns: goal × queries; [0, 1] pixel units, higher = stronger defense; "
             f"{caption(config, runs_note(df, newest(df, keys), keys))})")
    return markdown(header, body, title, source)

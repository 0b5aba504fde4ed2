"""Tables regenerated from tidy rows: the end-of-run summary and the defense×attack pivot.

A table never mixes setups: :func:`table_config` keeps the rows of one configuration (dataset,
protocol, recognizer, n_pairs, threat model, budget, goal, knowledge) and every layout states
it in its caption.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

import pandas as pd

from .errors import FacebenchError
from .registry import ATTACKS, DEFENSES, METRICS
from .results import read_runs

#: the ``adaptive`` column values of ``--adaptive`` runs (gradients through the defense)
THROUGH_DEFENSE = ("plain", "bpda", "eot", "bpda+eot")


def _fmt(metric: str, value: float) -> str:
    """A cell as the metric's declared format shows it (see :class:`MetricFormats`)."""
    return METRICS.format(metric, value)


def attack_sort_key(name: str):
    """The clean column ("none") first, then the attacks' declared ``table_order`` (their
    place in the paper's table), then the name; attacks that declare none follow by name."""
    name = str(name)
    order = -math.inf if name == "none" else ATTACKS.declared(name, "table_order", math.inf)
    return (order, name)


def summary_table(df: pd.DataFrame) -> str:
    """Clean vs attacked metrics of one run, as a plain-text table."""
    wide = df.pivot_table(index="metric", columns="attack", values="value", aggfunc="last",
                          sort=False)
    cols = sorted(wide.columns, key=lambda a: (a != "none", a))
    head = df.iloc[0]
    title = (f"{head['recognizer']} + defense {head['defense']} on {head['dataset']}/"
             f"{head['protocol']} ({head['n_pairs']} pairs)")
    attacked = df[df["attack"] != "none"]
    if len(attacked):
        a = attacked.iloc[0]
        title += (f"; {a['attack']} {a['threat_model']} {a['budget']:g}, goal {a['goal']}, "
                  f"adaptive {a['adaptive']}")
    names = ["clean" if c == "none" else c for c in cols]
    width = max(len(m) for m in wide.index)
    lines = [title, f"{'metric':<{width}}  " + "  ".join(f"{n:>10}" for n in names)]
    for metric, row in wide.iterrows():
        lines.append(f"{metric:<{width}}  " + "  ".join(
            f"{_fmt(metric, row[c]):>10}" for c in cols))
    return "\n".join(lines)


def defense_sort_key(name: str):
    """The base defense's declared ``table_order`` (a variant ``name[tags]`` sorts with
    ``name``; defenses that declare none follow, grouped by name), then variants with fewer
    tags first (``name[quick]`` before ``name[quick,k=20]``), then the name."""
    base, _, tags = str(name).partition("[")
    return (DEFENSES.declared(base, "table_order", math.inf), base,
            len([t for t in tags.rstrip("]").split(",") if t]), name)


def filter_rows(df: pd.DataFrame, filters: Optional[Dict[str, object]] = None) -> pd.DataFrame:
    """Rows matching ``filters`` (column -> wanted value; None = any).

    Attack-side columns (threat model, budget, goal, adaptive) only filter attacked rows, so
    the clean rows of the same runs stay as the "Clean" column. ``adaptive="through"`` keeps
    the ``--adaptive`` kinds (gradients through the defense: plain, bpda, eot, bpda+eot);
    ``adaptive="any"`` keeps every non-grey-box row (also a*, query, transfer).
    """
    for col, want in (filters or {}).items():
        if want is None:
            continue
        if col == "budget":
            df = df[(df["attack"] == "none") | (df["budget"].astype(float) == float(want))]
        elif col == "adaptive" and want == "any":
            df = df[(df["attack"] == "none") | (df[col].astype(str) != "none")]
        elif col == "adaptive" and want == "through":
            kind = df[col].astype(str).str.partition("[")[0]  # bpda+eot[eot_samples=16] too
            df = df[(df["attack"] == "none") | kind.isin(THROUGH_DEFENSE)]
        elif col == "attack":  # with the clean rows of the same runs
            df = df[(df["attack"] == "none") | (df["attack"].astype(str) == str(want))]
        elif col in ("threat_model", "goal", "adaptive"):
            df = df[(df["attack"] == "none") | (df[col].astype(str) == str(want))]
        else:
            df = df[df[col].astype(str) == str(want)]
    return df


def newest(df: pd.DataFrame, keys, by=("started_at",)) -> pd.DataFrame:
    """One whole row per ``keys``, the last by ``by``: reruns replace older numbers."""
    return df.sort_values(list(by), kind="stable").drop_duplicates(list(keys), keep="last")


def latest(df: pd.DataFrame, keys) -> pd.DataFrame:
    """The newest row per ``keys``, indexed by them (reruns replace older numbers in tables)."""
    return newest(df, keys).set_index(list(keys))


#: fields every row of a run shares, clean and attacked alike
RUN_FIELDS = ("dataset", "protocol", "recognizer", "n_pairs")
#: fields only attacked rows fill (clean rows hold none / 0 there)
ATTACK_FIELDS = ("threat_model", "budget", "goal", "adaptive")
#: what a table declares: a cell is filled only from rows with exactly these values
CONFIG_FIELDS = RUN_FIELDS + ATTACK_FIELDS
#: ``adaptive`` filter values that choose a declared group of kinds, not one kind


def base_attack(attack: pd.Series) -> pd.Series:
    """The registered attack names of an ``attack`` column (``name[steps=100]`` -> ``name``):
    a layout made for one attack selects its rows with it, then lets :func:`table_config`
    refuse a mix of its settings."""
    return attack.astype(str).str.partition("[")[0]


#: ``adaptive`` filter values that choose a declared group of kinds, not one kind
ADAPTIVE_GROUPS = ("through", "any")


def _text(value) -> str:
    """A field value as captions and errors show it (0.04, 1000, rel-l2)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _values(rows: pd.DataFrame, field: str) -> list:
    """Distinct values of ``field`` where it means something: attack fields on attacked rows
    (on clean rows, which hold none / 0 there, only in a table of clean runs)."""
    if field in ATTACK_FIELDS and (rows["attack"] != "none").any():
        rows = rows[rows["attack"] != "none"]
    return [_text(v) for v in sorted(rows[field].dropna().unique())]


def _mixed_error(mixed: Dict[str, list]) -> FacebenchError:
    """One line naming every open field that holds several values, and the flags to pin them."""
    parts = [f"{field} ({', '.join(values)})" for field, values in mixed.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    flags = " / ".join("--" + field.replace("_", "-") for field in mixed)
    return FacebenchError(f"rows differ in {listed}; choose with {flags}")


def _declared(rows: pd.DataFrame, field: str, want, varying) -> str:
    """The caption value of one field: the filter, or the single value the rows hold."""
    values = _values(rows, field)
    if want is None:
        if field in varying and len(values) > 1:
            return "(" + ", ".join(values) + ")"
        return values[0] if values else "none"
    if field == "adaptive" and want in ADAPTIVE_GROUPS and values:
        return f"{want} ({', '.join(values)})"
    return _text(want)


def table_config(df: pd.DataFrame, filters: Optional[Dict[str, object]] = None,
                 fields=CONFIG_FIELDS, varying=()):
    """The rows of one configuration, and that configuration (field -> value as shown).

    A table never mixes setups: ``filters`` pin fields (see :func:`filter_rows`); a field of
    ``fields`` left open must hold one value in the rows, or a FacebenchError lists what
    differs. ``varying`` fields are laid out as rows or columns by the layout, so they may.
    """
    filters = filters or {}
    rows = filter_rows(df, filters)
    mixed = {f: v for f in fields if filters.get(f) is None and f not in varying
             and len(v := _values(rows, f)) > 1}
    if mixed:
        raise _mixed_error(mixed)
    return rows, {f: _declared(rows, f, filters.get(f), varying) for f in fields}


def runs_note(candidates: pd.DataFrame, shown: pd.DataFrame, keys) -> str:
    """'from N runs', plus 'latest of up to M runs per cell' when runs competed for a cell."""
    n = shown["run_id"].nunique()
    most = candidates.groupby(list(keys))["run_id"].nunique().max()
    note = f"from {n} run{'' if n == 1 else 's'}"
    return note + (f" (latest of up to {most} runs per cell)" if most > 1 else "")


def caption(config: Dict[str, str], note: str) -> str:
    """The configuration a table holds, every field, then where its numbers come from."""
    return ", ".join(f"{k}={v}" for k, v in config.items()) + f"; {note}"


def markdown(header, rows, title: str, source: str) -> str:
    """A generated markdown table: provenance comment, bold title, header row, body rows."""
    lines = [f"<!-- generated by `facebench table` from {source}; do not edit -->",
             title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def cell_candidates(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows competing for each (defense, attack) cell: every attacked row of it; for
    "Clean" the clean rows of the runs behind that defense's attack cells (same pairs, same
    draw of a randomized defense) where they have some, else every clean row of the defense."""
    attacked = rows[rows["attack"] != "none"]
    clean = rows[rows["attack"] == "none"]
    if clean.empty or attacked.empty:
        return rows
    shown = newest(attacked, ["defense", "attack"])
    behind = set(zip(shown["defense"], shown["run_id"]))
    own = pd.Series([k in behind for k in zip(clean["defense"], clean["run_id"])],
                    index=clean.index, dtype=bool)
    has_own = own.groupby(clean["defense"]).transform("any")
    return pd.concat([clean[own | ~has_own], attacked])


def defense_attack_layout(df: pd.DataFrame, metric: str, filters: Dict[str, object],
                          source: str, row_order=None, note: str = "") -> str:
    """Rows = defense, columns = clean + attacks (the SIDE paper's Table 1 shape).

    ``row_order`` replaces the default defense order (rows not in it are dropped); ``note``
    is an italic line under the table.
    """
    rows, config = table_config(df[df["metric"] == metric], filters)
    if rows.empty:
        raise FacebenchError(f"no rows with metric {metric!r} match the filters in {source}")
    rows = cell_candidates(rows)
    picked = newest(rows, ["defense", "attack"])
    cell = picked.set_index(["defense", "attack"])["value"].unstack("attack")
    attacked = [c for c in cell.columns if c != "none"]
    if attacked:  # a defense with only clean rows here has nothing to compare: leave it out
        cell = cell[cell[attacked].notna().any(axis=1)]
    cols = sorted(cell.columns, key=attack_sort_key)
    order = (sorted(cell.index, key=defense_sort_key) if row_order is None
             else [r for r in row_order if r in cell.index])
    names = ["Defense"] + ["Clean" if c == "none" else c for c in cols]
    note_runs = runs_note(rows[rows["defense"].isin(order)],
                          picked[picked["defense"].isin(order)], ["defense", "attack"])
    title = f"**{metric}** (rows: defense, columns: attack; {caption(config, note_runs)})"
    body = [[d] + [_fmt(metric, cell.at[d, c]) for c in cols] for d in order]
    text = markdown(names, body, title, source)
    return text + (f"\n_{note}_\n" if note else "")


def render_table(runs: str, layout: str = "defense-attack", metric: str = "eer",
                 out: Optional[str] = None, filters: Optional[Dict[str, object]] = None) -> str:
    """Regenerate a table from the runs CSV with a registered layout; write it to ``out``."""
    from .registry import LAYOUTS

    fn = LAYOUTS.get(layout)
    text = fn(read_runs(runs), metric=metric, filters=dict(filters or {}),
              source=Path(runs).name)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
    return text


def pivot_table(runs: str, metric: str = "eer", out: Optional[str] = None,
                filters: Optional[Dict[str, object]] = None) -> str:
    """Markdown table: rows = defense, columns = clean + attacks, latest run per cell."""
    return render_table(runs, "defense-attack", metric, out, filters)

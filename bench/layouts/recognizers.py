"""Layouts across recognizers: Table 1 per recognizer, and the transfer matrix.

``recognizer-attack``: rows = recognizer, columns = clean + attacks, one defense -- the SIDE
paper's Table 1 shape for every model of the zoo at once.

``transfer-matrix``: rows = the recognizer the attack was crafted on, columns = the one it
was scored on (RobFR's layout), one attack. The diagonal is the white-box run (``adaptive``
none), every other cell a transfer run from that bare source (``adaptive`` =
``transfer:<source>``); so ``--adaptive`` is not a filter here. Both keep one configuration
(dataset, protocol, pairs, threat model, budget, goal) and say it in the caption.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import pandas as pd

from facebench.errors import FacebenchError
from facebench.registry import register_layout
from facebench.report import (_fmt, attack_sort_key, caption, cell_candidates, markdown,
                              newest, runs_note, table_config)


def _one(rows: pd.DataFrame, field: str, flag: str) -> str:
    values = sorted(rows[field].astype(str).unique())
    if len(values) != 1:
        raise FacebenchError(f"rows hold several {field}s ({', '.join(values)}); choose one "
                             f"with {flag}")
    return values[0]


@register_layout("recognizer-attack",
                 "rows = recognizer, columns = clean + attacks, one defense (Table 1 per model)")
def recognizer_attack_layout(df: pd.DataFrame, metric: str, filters: Dict[str, object],
                             source: str) -> str:
    rows, config = table_config(df[df["metric"] == metric], filters, varying=("recognizer",))
    if rows.empty:
        raise FacebenchError(f"no rows with metric {metric!r} match the filters in {source}")
    defense = _one(rows, "defense", "--defense")
    # the clean column of each recognizer comes from the runs behind its attack cells
    rows = cell_candidates(rows.assign(defense=rows["recognizer"])).assign(defense=defense)
    picked = newest(rows, ["recognizer", "attack"])
    cell = picked.set_index(["recognizer", "attack"])["value"].unstack("attack")
    attacked = [c for c in cell.columns if c != "none"]
    if attacked:
        cell = cell[cell[attacked].notna().any(axis=1)]
    cols = sorted(cell.columns, key=attack_sort_key)
    order = sorted(cell.index)
    note = runs_note(rows, picked, ["recognizer", "attack"])
    title = (f"**{metric}** (rows: recognizer, columns: attack; defense={defense}, "
             f"{caption(config, note)})")
    body = [[f"`{r}`"] + ["–" if pd.isna(cell.at[r, c]) else _fmt(metric, cell.at[r, c])
                          for c in cols] for r in order]
    return markdown(["Recognizer"] + ["Clean" if c == "none" else c for c in cols], body,
                    title, source)


def transfer_cells(df: pd.DataFrame, metric: str, filters: Dict[str, object]
                   ) -> Tuple[List[str], List[str], pd.DataFrame, Dict[str, str], str]:
    """(sources, targets, value frame source x target, configuration, runs note) of the
    transfer matrix: what the markdown table and the heatmap both show."""
    filters = {k: v for k, v in filters.items() if k != "adaptive"}
    rows = df[(df["metric"] == metric) & (df["attack"] != "none")]
    source = rows["adaptive"].astype(str)
    crafted = source.where(~source.str.startswith("transfer:"),
                           source.str.slice(len("transfer:")))
    bare = (source == "none") | (source.str.startswith("transfer:")
                                 & ~crafted.str.contains("+", regex=False)
                                 & ~crafted.str.contains("@", regex=False))
    rows = rows[bare].assign(source=crafted[bare].where(source[bare] != "none",
                                                        rows.loc[bare, "recognizer"]))
    rows = rows.assign(adaptive="matrix")  # diagonal and transfers are one table here
    rows, config = table_config(rows, filters, varying=("recognizer",))
    config.pop("adaptive", None)
    if rows.empty:
        raise FacebenchError(f"no white-box or bare-source transfer rows with metric "
                             f"{metric!r} match the filters")
    attack = _one(rows, "attack", "--attack")
    defense = _one(rows, "defense", "--defense")
    picked = newest(rows, ["source", "recognizer"])
    cell = picked.set_index(["source", "recognizer"])["value"].unstack("recognizer")
    names = sorted(set(cell.index) | set(cell.columns))
    cell = cell.reindex(index=names, columns=names)
    config = {"attack": attack, "defense": defense, **config}
    return names, names, cell, config, runs_note(rows, picked, ["source", "recognizer"])


@register_layout("transfer-matrix",
                 "rows = source recognizer (crafted on), columns = target (scored on), one "
                 "attack; diagonal white-box")
def transfer_matrix_layout(df: pd.DataFrame, metric: str, filters: Dict[str, object],
                           source: str) -> str:
    sources, targets, cell, config, note = transfer_cells(df, metric, filters)
    config = {k: v for k, v in config.items() if k != "recognizer"}
    title = (f"**{metric}** (rows: crafted on, columns: scored on; diagonal white-box, "
             f"elsewhere transfer from the bare source; {caption(config, note)})")
    body = [[f"`{s}`"] + ["–" if pd.isna(cell.at[s, t]) else _fmt(metric, cell.at[s, t])
                          for t in targets] for s in sources]
    return markdown(["crafted on \\ scored on"] + [f"`{t}`" for t in targets], body, title,
                    source)

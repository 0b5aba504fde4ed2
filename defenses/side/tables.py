"""The SIDE paper's ablation tables, from rows of the trained variants (grey-box, EER).

Variants are told apart by the defense column the runner writes for them: the training
schedule when it is not the paper's, then the ablation options (``side[quick]``,
``side[quick,no-memory]``, ``side[medium,k=20]``, ``side`` for the full schedule): see
the learned defense's ``variant_suffix``. Variants are only compared
with models of the same schedule, so each schedule present gets its own table.
"""
from __future__ import annotations

import re

from facebench.registry import register_layout

ABLATION = {"no-ssat": "w/o SSAT", "no-memory": "w/o Memory", "": "SIDE"}
CLONES = {"": "k=10", "k=20": "k=20", "k=30": "k=30"}
SCHEDULES = ("full", "medium", "quick")  # table order: the paper's schedule first
_NAME = re.compile(r"side(?:\[(?P<tags>[^\]]*)\])?")


def split_side_name(defense: str):
    """``side[quick,no-memory]`` -> ("quick", "no-memory"); None for other defenses."""
    m = _NAME.fullmatch(str(defense))
    if m is None:
        return None
    tags = [t for t in (m.group("tags") or "").split(",") if t]
    schedule = tags.pop(0) if tags and tags[0] in SCHEDULES else "full"
    return schedule, ",".join(tags)


def _variants(df, names, metric, filters, source, note):
    from facebench.report import defense_attack_layout  # lazy: `facebench list` stays fast

    parsed = df["defense"].map(split_side_name)
    blocks = []
    for schedule in SCHEDULES:
        label = {df.at[i, "defense"]: names[p[1]] for i, p in parsed.dropna().items()
                 if p[0] == schedule and p[1] in names}
        if not label:
            continue
        picked = df[df["defense"].isin(list(label))].copy()
        picked["defense"] = picked["defense"].map(label)
        blocks.append(defense_attack_layout(
            picked, metric, {**filters, "adaptive": filters.get("adaptive") or "none"}, source,
            row_order=list(names.values()), note=f"{note}; {schedule} training schedule"))
    if not blocks:  # the usual "no rows match" error
        return defense_attack_layout(df.iloc[:0], metric, filters, source)
    return "\n".join(blocks)


@register_layout("side-ablation", "SIDE paper Table 8: SIDE w/o SSAT, w/o memory, full")
def side_ablation(df, metric="eer", filters=None, source="runs.csv"):
    return _variants(df, ABLATION, metric, filters or {}, source,
                     "Table 8 layout: trained variants of SIDE, grey-box")


@register_layout("side-clones", "SIDE paper Table 10: number of clones k = 10, 20, 30")
def side_clones(df, metric="eer", filters=None, source="runs.csv"):
    return _variants(df, CLONES, metric, filters or {}, source,
                     "Table 10 layout: SIDE trained with k clones, grey-box")

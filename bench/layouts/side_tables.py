"""The SIDE paper's ablation tables, from rows of the trained variants (grey-box, EER).

Variants are told apart by the defense column the runner writes for them (``side``,
``side[no-memory]``, ``side[no-ssat]``, ``side[k=20]``, ...): see
:meth:`facebench.eigen_purifier.EigenPurifier.variant_suffix`.
"""
from __future__ import annotations

from facebench.registry import register_layout
from facebench.report import defense_attack_layout

ABLATION = {"side[no-ssat]": "w/o SSAT", "side[no-memory]": "w/o Memory", "side": "SIDE"}
CLONES = {"side": "k=10", "side[k=20]": "k=20", "side[k=30]": "k=30"}


def _variants(df, names, metric, filters, source, note):
    picked = df[df["defense"].isin(list(names))].copy()
    picked["defense"] = picked["defense"].map(names)
    return defense_attack_layout(picked, metric, {"adaptive": "none", **filters}, source,
                                 row_order=list(names.values()), note=note)


@register_layout("side-ablation", "SIDE paper Table 8: SIDE w/o SSAT, w/o memory, full")
def side_ablation(df, metric="eer", filters=None, source="runs.csv"):
    return _variants(df, ABLATION, metric, filters or {}, source,
                     "Table 8 layout: trained variants of SIDE, grey-box")


@register_layout("side-clones", "SIDE paper Table 10: number of clones k = 10, 20, 30")
def side_clones(df, metric="eer", filters=None, source="runs.csv"):
    return _variants(df, CLONES, metric, filters or {}, source,
                     "Table 10 layout: SIDE trained with k clones, grey-box")

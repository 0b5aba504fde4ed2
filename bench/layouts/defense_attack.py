"""The default layout: rows = defense, columns = clean + attacks (SIDE paper, Table 1)."""
from facebench.registry import register_layout
from facebench.report import defense_attack_layout

register_layout("defense-attack", "rows = defense, columns = clean + attacks (Table 1 shape)")(
    defense_attack_layout)

"""Table layouts for `facebench table --layout NAME`: one file plus ``@register_layout``.

Generic layouts live here; a paper table that belongs to one plugin lives with it (the
attack's or defense's package registers it), and the layout registry loads those first.

A layout is ``fn(runs, metric, filters, source) -> markdown``: it receives every row of the
runs CSV and decides which it shows, so a paper table is data (rows) plus one small renderer.
"""

"""Table layouts for `facebench table --layout NAME`: one file plus ``@register_layout``.

A layout is ``fn(runs, metric, filters, source) -> markdown``: it receives every row of the
runs CSV and decides which it shows, so a paper table is data (rows) plus one small renderer.
"""

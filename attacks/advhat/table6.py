"""SIDE Table 6: the AdvHat sticker attack, one row per defense (``--layout table6``).

Columns come from the latest ``advhat`` run of each defense (and target): the protocol's clean
threshold and TAR there, then the share of evaluation faces the system still rejects as the
target — without a sticker, with a plain grey sticker (occlusion alone) and with the trained
AdvHat sticker, the paper's "accuracy". The ``metric`` argument is ignored: the columns are
fixed. Every other field of the advhat rows must agree (or be chosen with a filter); the target
(threat model) and the attacker knowledge (adaptive) may differ, they get their own columns.
"""
from __future__ import annotations


from facebench.errors import FacebenchError
from facebench.registry import register_layout

#: fields one table may hold several of: each value gets its own rows
ROW_KEYS = ("threat_model", "adaptive")
#: (header, attack column of the run: "none" = its clean rows, metric, shown as)
COLUMNS = [
    ("Threshold", "none", "threshold", "{:.4f}"),
    ("Clean TAR@thr", "none", "tar_at_thr", "pct"),
    ("No sticker", "none", "accuracy", "pct"),
    ("Grey sticker", "advhat", "accuracy_grey_sticker", "pct"),
    ("AdvHat accuracy", "advhat", "accuracy", "pct"),
    ("Mean cos to target", "advhat", "mean_target_cos", "{:.4f}"),
    ("Steps", "advhat", "train_steps", "{:.0f}"),
]


def _cell(value, fmt: str) -> str:
    if value is None or value != value:  # missing, or NaN
        return "–"
    return f"{100 * value:.2f}%" if fmt == "pct" else fmt.format(value)


@register_layout("table6", "SIDE Table 6: AdvHat sticker accuracy per defense")
def table6_layout(df, metric: str, filters, source: str) -> str:
    from facebench.report import (CONFIG_FIELDS, base_attack, caption, defense_sort_key,
                                  markdown, runs_note, table_config)

    # one setting of the attack: advhat[steps=1000] rows are another table
    attacked, config = table_config(df[base_attack(df["attack"]) == "advhat"], filters,
                                    CONFIG_FIELDS + ("attack",), varying=ROW_KEYS)
    if attacked.empty:
        raise FacebenchError(f"no advhat rows match the filters in {source}; run "
                             "`facebench run --attack advhat` first")
    # the newest advhat run per (defense, target, attacker knowledge); its clean rows share
    # its run_id
    runs = (attacked.sort_values("started_at")
            .groupby(["defense", *ROW_KEYS], sort=False)["run_id"].last())
    order = sorted(runs.index, key=lambda k: (defense_sort_key(k[0]), k))
    targets = sorted({k[1].partition(":")[2] or "?" for k in order})
    knowledge = sorted({k[2] for k in order})
    header = ["Defense"] + (["Target"] if len(targets) > 1 else []) + \
        (["Adaptive"] if len(knowledge) > 1 else []) + [c[0] for c in COLUMNS]
    body = []
    for key in order:
        rows = df[df["run_id"] == runs[key]]
        values = {(a, m): v for a, m, v in zip(rows["attack"], rows["metric"], rows["value"])}
        line = [key[0]] + ([key[1].partition(":")[2]] if len(targets) > 1 else []) + \
            ([key[2]] if len(knowledge) > 1 else [])
        line += [_cell(values.get((a, m)), fmt) for _, a, m, fmt in COLUMNS]
        body.append(line)
    shown = attacked[attacked["run_id"].isin(list(runs))]
    title = ("**AdvHat sticker attack** (SIDE Table 6; accuracy = share of face-vs-target "
             "verifications rejected at the clean threshold, higher is better"
             + (f"; target {targets[0]}" if len(targets) == 1 else "")
             + f"; {config['n_pairs']} faces; "
             + caption(config, runs_note(attacked, shown, ["defense", *ROW_KEYS])) + ")")
    return markdown(header, body, title, source)

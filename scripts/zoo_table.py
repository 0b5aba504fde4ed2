"""Clean verification of every registered recognizer: EER, accuracy, TAR@FAR=1e-2, licence.

    python scripts/zoo_table.py                                         # embedded lfw-sample
    python scripts/zoo_table.py --dataset lfw --protocol dev-test       # all 1000 dev-test pairs

Each recognizer sees its own registered crop of the dataset's photos (``aligner_for``) and
pairs are scored by the cosine of the embeddings, as in every run. Columns:

* **EER** on the scored pairs;
* **accuracy** at a threshold fit on *other* pairs when the dataset has them: LFW's
  dev-train pairs, whose people are disjoint from dev-test's (the project's rule: a threshold
  is never fit on the pairs it is scored on). ``--threshold-protocol`` names another; a
  dataset without one (the embedded sample) gets only the next column;
* **best-threshold accuracy**: the threshold that maximises accuracy *on the scored pairs
  themselves* -- an optimistic, oracle number, labelled as such;
* **TAR@FAR=1e-2** on the scored pairs (with 50 impostor pairs, as in the sample, the
  lowest FAR above 0 is 2%, so this is the TAR with no impostor accepted);
* the **licence** notes each recognizer's registry description gives (``facebench list``).

The table is written from these measurements into ``--out`` (default ``results/zoo_clean.md``)
as one section per (dataset, protocol, pairs) configuration: a run replaces its own section
and keeps the others, so the sample's and the full LFW's tables live in one file.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from facebench import metrics as M
from facebench.data import aligner_for, load_pairs, pair_images
from facebench.dataset import load_dataset
from facebench.embed import embed_images
from facebench.registry import RECOGNIZERS
from facebench.runner import load_recognizer

SCRIPT = "scripts/zoo_table.py"
BEGIN, END = "<!-- zoo_table section: {} -->", "<!-- zoo_table end: {} -->"
#: words that mark the licence part of a registry description
LICENCE_WORDS = re.compile(r"CC0|CC-BY|MIT|Apache|BSD|GPL|licen[cs]e|commercial|research",
                           re.IGNORECASE)


def licence_of(description: str) -> str:
    """The licence notes of a registry description: the ``;``-separated parts of its last
    parenthesis that name a licence or a use restriction."""
    groups = re.findall(r"\(([^()]*)\)", description)
    parts = [p.strip() for p in (groups[-1].split(";") if groups else []) if p.strip()]
    found = [p for p in parts if LICENCE_WORDS.search(p)]
    return "; ".join(found) if found else "see `facebench list`"


def scores_of(rec, aligner, pairs, batch_size: int, progress: bool) -> np.ndarray:
    images, ia, ib = pair_images(pairs, aligner, progress=progress)
    emb = embed_images(rec, images, batch_size, "cpu", "embed", progress)
    return M.cosine_similarity(emb[ia], emb[ib]).numpy()


def measure(name: str, args) -> dict:
    """One recognizer's row: scores on the evaluated pairs (and the threshold pairs)."""
    t0 = time.perf_counter()
    rec = load_recognizer(name)
    aligner = aligner_for(args.dataset, rec)
    pairs = load_pairs(args.dataset, args.protocol, args.data_home)
    if args.pairs is not None:
        pairs = pairs.subset(args.pairs, args.seed)
    same = np.asarray(pairs.same, dtype=bool)
    scores = scores_of(rec, aligner, pairs, args.batch_size, args.progress)
    row = {
        "recognizer": name,
        "input": "x".join(str(v) for v in getattr(rec, "input_size", ())),
        "dim": getattr(rec, "embedding_dim", None),
        "geometry": getattr(aligner, "key", str(aligner)),
        "alignment": getattr(rec, "alignment", "?"),
        "eer": M.eer(scores, same)[0],
        "acc_oracle": M.accuracy_at(scores, same, M.best_threshold(scores, same)),
        "tar_1e-2": M.tar_at_far(scores, same, 1e-2),
        "auc": M.roc_auc(scores, same),
        "licence": licence_of(getattr(RECOGNIZERS.get(name), "registry_description", "")),
        "n_pairs": len(same), "n_impostors": int((~same).sum()),
    }
    if args.threshold_protocol:
        fit = load_pairs(args.dataset, args.threshold_protocol, args.data_home)
        fit_same = np.asarray(fit.same, dtype=bool)
        thr = M.best_threshold(scores_of(rec, aligner, fit, args.batch_size, args.progress),
                               fit_same)
        row.update(acc_fit=M.accuracy_at(scores, same, thr), thr=thr, n_fit=len(fit_same))
    row["wall_s"] = time.perf_counter() - t0
    print(f"{name}: EER {row['eer']:.4f}, acc(oracle) {row['acc_oracle']:.4f}"
          + (f", acc({args.threshold_protocol} thr {row['thr']:.3f}) {row['acc_fit']:.4f}"
             if "acc_fit" in row else "")
          + f", TAR@1e-2 {row['tar_1e-2']:.4f}  ({row['wall_s']:.0f} s)", file=sys.stderr)
    return row


def section(rows, args, tag: str) -> str:
    pct = (lambda v: f"{100 * v:.2f}%")
    n, imp = rows[0]["n_pairs"], rows[0]["n_impostors"]
    what = f"{args.dataset}" + (f" {args.protocol}" if args.protocol else "")
    subset = f" (seeded subset of {args.pairs}, seed {args.seed})" if args.pairs else ""
    fit = args.threshold_protocol
    caption = (f"**Clean verification of the recognizer zoo** on {what}{subset}: {n} pairs "
               f"({n - imp} same, {imp} different), each recognizer on its own registered "
               f"crop of the photos, cosine scores, no defense, no attack. ")
    if fit:
        caption += (f"Accuracy at the threshold fit on {args.dataset} {fit} "
                    f"({rows[0]['n_fit']} pairs, people disjoint from the scored ones); ")
    else:
        caption += "No disjoint pairs to fit a threshold on here; "
    caption += ("best-threshold accuracy fits it on the scored pairs themselves (optimistic). "
                f"TAR@FAR=1e-2 rests on {imp} impostor pairs"
                + (" (the lowest FAR above 0 is " + pct(1 / imp) + ")." if imp < 100 else ".")
                + " Licence: from each recognizer's registry description.")
    head = ["recognizer", "input", "dim", "alignment", "EER"]
    head += [f"accuracy ({fit} threshold)"] if fit else []
    head += ["best-threshold accuracy (oracle)", "TAR@FAR=1e-2", "ROC AUC", "licence"]
    lines = [BEGIN.format(tag),
             f"<!-- generated by {SCRIPT} ({_shown(args.argv) or 'defaults'}); do not "
             f"edit -->", caption, "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['recognizer']}`", r["input"], str(r["dim"]),
                 f"`{r['alignment']}`", pct(r["eer"])]
        cells += [pct(r["acc_fit"])] if fit else []
        cells += [pct(r["acc_oracle"]), pct(r["tar_1e-2"]), f"{r['auc']:.4f}", r["licence"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Geometries (aligner keys, which name the crop cache files): "
              + "; ".join(f"`{r['recognizer']}`: `{r['geometry']}`" for r in rows) + ".",
              END.format(tag)]
    return "\n".join(lines) + "\n"


def _shown(argv) -> str:
    """The command line for the header, without where this machine keeps its data."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--data-home":
            skip = True
            continue
        if not a.startswith("--data-home="):
            out.append(a)
    return " ".join(out)


FILE_HEADER = (f"<!-- generated by {SCRIPT}: one section per configuration, each rewritten "
               f"by its own run; do not edit -->\n")


def write_section(path: Path, tag: str, text: str) -> None:
    """Replace this configuration's section of ``path`` (or add it), keeping the others."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old.startswith(FILE_HEADER):
        old = old[len(FILE_HEADER):].lstrip("\n")
    pattern = re.compile(re.escape(BEGIN.format(tag)) + r".*?" + re.escape(END.format(tag))
                         + r"\n?", re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old)
    else:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FILE_HEADER + "\n" + new, encoding="utf-8")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="lfw-sample")
    ap.add_argument("--protocol", default=None, help="the dataset's protocol (default: its own)")
    ap.add_argument("--threshold-protocol", default=None,
                    help="protocol whose pairs the accuracy threshold is fit on (default: "
                         "dev-train when the dataset has it and it is not the scored one)")
    ap.add_argument("--pairs", type=int, default=None, help="seeded subset of the pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recognizers", default=None,
                    help="comma-separated names (default: every registered recognizer)")
    ap.add_argument("--data-home", default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="results/zoo_clean.md")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.argv, args.progress = argv, not args.quiet
    ds = load_dataset(args.dataset)
    args.protocol = ds.check_protocol(args.protocol)
    if args.threshold_protocol is None and "dev-train" in ds.protocols \
            and args.protocol != "dev-train":
        args.threshold_protocol = "dev-train"
    if args.threshold_protocol is not None:
        ds.check_protocol(args.threshold_protocol)
        if args.threshold_protocol == args.protocol:
            ap.error("--threshold-protocol must differ from the scored protocol")
    names = args.recognizers.split(",") if args.recognizers else RECOGNIZERS.names()
    rows = [measure(name, args) for name in names]
    tag = f"dataset={args.dataset} protocol={args.protocol} pairs={args.pairs or 'all'}"
    write_section(Path(args.out), tag, section(rows, args, tag))
    print(f"wrote {args.out} ({tag})", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The ``facebench`` command line: run, list, table, train.

Every user-facing problem is a :class:`FacebenchError`, printed as one ``facebench: error:``
line with exit code 2; rows already written stay in the CSV.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

from .errors import FacebenchError


def _parse_value(text: str):
    """A value whose plugin declares nothing about it (see :func:`facebench.params.guess`)."""
    from .params import guess

    return guess(text)


def _params(pairs: List[str], flag: str, spec=None) -> Dict[str, object]:
    """``KEY=VALUE`` options; ``spec`` (the target plugin's) coerces the keys it knows."""
    from .params import parse_pairs

    return parse_pairs(pairs, flag, spec)


def _spec(kind: str, name: str):
    """The parameter spec of registered ``name``, or None (unknown names fail in the run,
    with the run's message)."""
    from . import registry
    from .params import spec_of

    reg = {"attack": registry.ATTACKS, "defense": registry.DEFENSES}[kind]
    if name is None and kind == "attack":
        name = reg.default()
    if not name or name == "none":
        return None
    try:
        return spec_of(reg.get(name), f"{kind} {name}")
    except FacebenchError:
        return None


#: RunConfig fields that are the negation of a ``--no-...``/``--quiet`` flag
_NEGATED = {"download": "no_download", "progress": "quiet", "adv_cache": "no_adv_cache",
            "auto_train": "no_auto_train"}


def run_config(args):
    """The :class:`RunConfig` of parsed ``run`` arguments, field by field name."""
    from dataclasses import fields

    from .paths import default_runs_csv
    from .runner import RunConfig

    params = _params(args.attack_param, "--attack-param",
                     _spec("attack", args.attack) if args.attack_param else None)
    if args.steps is not None:
        params["steps"] = args.steps
    if args.step_size is not None:
        params["step_size"] = args.step_size  # eps units: attacks divide linf by 255 themselves
    derived = {
        "out": str(default_runs_csv()) if args.out is None else (args.out or None),
        "attack_params": params,
        "defense_params": _params(args.defense_param, "--defense-param",
                                  _spec("defense", args.defense) if args.defense_param else None),
    }
    values = {}
    for f in fields(RunConfig):
        if f.name in derived:
            values[f.name] = derived[f.name]
        elif f.name in _NEGATED:
            values[f.name] = not getattr(args, _NEGATED[f.name])
        else:
            values[f.name] = getattr(args, f.name)
    return RunConfig(**values)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="measure clean and attacked verification metrics",
                       description="Evaluate recognizer∘defense on a pair protocol, clean and "
                       "under attack; print a table and append tidy rows to a CSV.")
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--recognizer", default=None,
                   help="registered recognizer (default: the one `facebench list` marks)")
    g.add_argument("--dataset", default=None,
                   help="registered dataset (default: the one `facebench list` marks, pairs "
                   "shipped with facebench)")
    g.add_argument("--protocol", default=None,
                   help="the dataset's evaluation protocol (default: the protocol a learned "
                   "defense was trained for, else the dataset's default; see `facebench list`)")
    g.add_argument("--pairs", type=int, default=None, metavar="N",
                   help="seeded, balanced subset of N pairs (default: all)")
    g.add_argument("--pairs-file", help="a dataset of your own crops: CSV path_a,path_b,same")
    g.add_argument("--image-root", help="folder the --pairs-file paths are relative to")
    g.add_argument("--align", default=None, metavar="HOW",
                   help="how images are cut for the recognizer: auto (default: the dataset's "
                        "way), detect (find and align the face: raw photos), fixed (the "
                        "recognizer's fixed LFW geometry) or a registered aligner")
    g.add_argument("--data-home", help="folder holding lfw_home/ (default: $FACEBENCH_DATA, "
                   "then the user cache dir)")
    g.add_argument("--no-download", action="store_true", help="never download missing data")
    g.add_argument("--defense", default="none", help="registered defense (`facebench list`)")
    g.add_argument("--defense-param", action="append", metavar="KEY=VALUE",
                   help="defense option (repeatable)")
    a = p.add_argument_group("attack (defaults: the SIDE paper's rel-l2 0.04, goal pair)")
    a.add_argument("--attack", default=None,
                   help="registered attack (default: the one `facebench list` marks), or none "
                   "for clean only")
    a.add_argument("--norm", default="rel-l2", help="threat model: linf | l2 | rel-l2")
    a.add_argument("--eps", type=float, default=None,
                   help="budget: linf in /255, l2 absolute, rel-l2 as ||d||/||x|| "
                   "(default: 8, 2.0, 0.04)")
    a.add_argument("--goal", default="pair", help="dodging | impersonation | pair")
    a.add_argument("--steps", type=int, help="iterations (iterative attacks)")
    a.add_argument("--step-size", type=float, help="step size in the norm's units (linf: /255)")
    a.add_argument("--adaptive", action="store_true",
                   help="craft through recognizer∘defense instead of the bare recognizer")
    a.add_argument("--eot-samples", type=int, default=None, metavar="N",
                   help="--adaptive on a randomized defense: EOT draws per gradient (default 8)")
    a.add_argument("--source", metavar="RECOGNIZER[+DEFENSE]",
                   help="transfer: craft on this registered recognizer (optionally behind a "
                   "defense), evaluate on --recognizer with --defense")
    a.add_argument("--transfer-mode", default="linear", choices=("linear", "photo"),
                   help="--source of another crop geometry: carry the source crop's "
                        "perturbation through the photo into the target's crop (linear, "
                        "default), or save the adversarial photo and let the target's own "
                        "aligner (detector included) crop it (photo)")
    a.add_argument("--minimal-eps", action="store_true",
                   help="binary-search the smallest successful budget per probe up to --eps; "
                   "adds median_min_eps")
    a.add_argument("--minimal-eps-steps", type=int, default=10, metavar="N",
                   help="--minimal-eps: bisection rounds per probe (default 10)")
    a.add_argument("--attack-param", action="append", metavar="KEY=VALUE",
                   help="any other attack option, e.g. random_start=false (repeatable)")
    o = p.add_argument_group("execution")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--batch-size", type=int, default=32)
    o.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    o.add_argument("--out", default=None,
                   help="runs CSV to append rows to (default: $FACEBENCH_RESULTS, else "
                   "./facebench-results/runs.csv; '' writes none)")
    o.add_argument("--no-auto-train", action="store_true",
                   help="fail instead of training the quick preset of a learned defense "
                   "that has no model yet")
    o.add_argument("--no-adv-cache", action="store_true",
                   help="re-craft grey-box examples instead of reusing cached ones")
    o.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_run(args) -> int:
    from .runner import run
    from .report import summary_table

    cfg = run_config(args)
    df = run(cfg)
    print(summary_table(df))
    if cfg.out:
        print(f"\n{len(df)} rows appended to {cfg.out}")
    return 0


def _list_entries(reg) -> list:
    """(name, description, parameters text) of a registry's entries, then of its families."""
    from .params import ParamSpec, spec_of

    def text(spec) -> str:
        return spec.describe() if spec else ""

    def marked(name, description) -> str:
        roles = reg.roles(name)
        tag = {"run": "default", "train": "training default"}
        return (f"({', '.join(tag.get(r, r + ' default') for r in roles)}) " if roles
                else "") + description

    entries = [(n, marked(n, o.registry_description), text(spec_of(o))) for n, o in reg.items()]
    return entries + [(f"{p}:<Name>", d, text(ParamSpec.from_defaults(reg.prefix_defaults(p))))
                      for p, d in reg.prefixes()]


def cmd_list(args) -> int:
    from .registry import ALIGNERS, ATTACKS, DATASETS, DEFENSES, LAYOUTS, METRICS, RECOGNIZERS

    for title, reg in (("recognizers", RECOGNIZERS), ("aligners", ALIGNERS),
                       ("datasets", DATASETS),
                       ("defenses", DEFENSES), ("attacks", ATTACKS), ("table layouts", LAYOUTS)):
        print(f"{title}:")
        entries = _list_entries(reg)
        width = max((len(n) for n, _, _ in entries), default=0)
        for name, description, params in entries:
            extra = f" [{params}]" if params else ""
            print(f"  {name:<{width}}  {description}{extra}")
    print("metrics (as tables show them; undeclared ones as numbers):")
    metrics = METRICS.items()
    width = max((len(p) for p, _, _ in metrics), default=0)
    for pattern, fmt, description in metrics:
        print(f"  {pattern:<{width}}  {fmt:<10}  {description}")
    return 0


def cmd_table_batch(path: str) -> int:
    """One table per line of ``path``: each line checked first, so a typo on the last line
    fails before any table is written."""
    import contextlib
    import io
    import shlex

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FacebenchError(f"cannot read --batch file {path}: {exc.strerror}") from None
    parser = build_parser()
    jobs = []
    for no, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if "--batch" in words:
            raise FacebenchError(f"--batch {path} line {no}: --batch cannot nest")
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                jobs.append(parser.parse_args(["table"] + words))
        except SystemExit:
            why = (said.getvalue().strip().splitlines() or ["?"])[-1].split("error: ")[-1]
            raise FacebenchError(f"--batch {path} line {no}: bad table options ({why}): "
                                 f"{line.strip()}") from None
    for job in jobs:
        cmd_table(job)
    return 0


def cmd_table(args) -> int:
    if getattr(args, "batch", None):
        return cmd_table_batch(args.batch)
    from .paths import default_runs_csv
    from .report import render_table

    runs = args.runs or str(default_runs_csv())
    out = args.out
    if out is None:  # one file per layout and metric, beside the runs it was made from
        stem = "table" if args.layout == "defense-attack" else f"table_{args.layout}"
        out = str(Path(runs).parent / f"{stem}_{args.metric}.md")
    text = render_table(runs, layout=args.layout, metric=args.metric, out=out or None,
                        filters=dict(
        dataset=args.dataset, protocol=args.protocol, recognizer=args.recognizer,
        threat_model=args.threat_model, budget=args.budget, goal=args.goal,
        adaptive=args.adaptive, n_pairs=args.n_pairs, attack=args.attack,
        defense=args.defense))
    print(text)
    if out:
        print(f"\nwritten to {out}")
    return 0


def _training_spec(defense: str, preset: str):
    """A loose spec of a trainable defense's preset settings and fit options, so ``k=20``
    arrives as an int; None where the defense or preset is unknown (train says so)."""
    from .params import ParamSpec
    from .training import trainable

    try:
        cls = trainable(defense)
    except FacebenchError:
        return None
    settings = (getattr(cls, "presets", None) or {}).get(preset)
    if settings is None:
        return None
    extra = getattr(cls.trainer_class, "fit_options", None) or {}
    return ParamSpec.from_defaults({**settings, **extra}, f"training of {defense}")


def cmd_train(args) -> int:
    from .training import train

    options = _params(args.option, "--option",
                      _training_spec(args.defense, args.preset) if args.option else None)
    out = train(args.defense, preset=args.preset, data_home=args.data_home,
                protocol=args.protocol, out_dir=args.out_dir, seed=args.seed,
                progress=not args.quiet, max_steps=args.max_steps, recognizer=args.recognizer,
                device=args.device, resume=not args.restart, download=not args.no_download,
                dataset=args.dataset, **options)
    print(f"trained {args.defense} ({args.preset}); model, checkpoint and manifest in {out}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a learned defense",
                       description="Train a learned purifier on a dataset's training split (the "
                       "images of people in no pair of the evaluation protocol); checkpoints periodically "
                       "and resumes after an interruption.")
    p.add_argument("defense", help="a registered defense with a training recipe")
    p.add_argument("--preset", default="quick",
                   help="the defense's training preset (default quick: CPU, minutes; full: the "
                   "paper's schedule, for a GPU; a defense may offer others)")
    p.add_argument("--dataset", default=None,
                   help="dataset whose training split is used (default: the one `facebench "
                   "list` marks for training)")
    p.add_argument("--protocol", default="dev-test",
                   help="evaluation protocol whose people are held out of training")
    p.add_argument("--recognizer", default=None,
                   help="registered recognizer F used in training (default: the one "
                   "`facebench list` marks)")
    p.add_argument("--data-home", help="folder holding the dataset (e.g. lfw_home/)")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--out-dir", help="output folder (default: the user data dir)")
    p.add_argument("--max-steps", type=int, help="stop after this many total steps")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="override a preset setting, e.g. use_memory=false, k=20 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="facebench", description="Adversarial robustness benchmark for face recognition.")
    parser.add_argument("--version", action="version", version=f"facebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_run(sub)
    _add_train(sub)
    sub.add_parser("list", help="registered recognizers, datasets, defenses, attacks, layouts",
                   description="Print every registered recognizer, dataset, defense, attack and "
                   "table layout with its parameters, and the metrics tables format.")
    t = sub.add_parser("table", help="regenerate a markdown table from a runs CSV",
                       description="Regenerate a table from tidy rows with a registered layout. "
                       "The default (defense-attack): rows = defense, columns = attack (clean "
                       "first), one metric, like the SIDE paper's Table 1. A table holds one configuration "
                       "(dataset, protocol, recognizer, pairs, threat model, budget, goal, "
                       "knowledge), stated in its caption; newest run per cell.")
    t.add_argument("--runs", default=None, help="runs CSV to read (default: where `facebench "
                   "run` writes: $FACEBENCH_RESULTS, else ./facebench-results/runs.csv)")
    t.add_argument("--layout", default="defense-attack",
                   help="registered table layout (see `facebench list`)")
    t.add_argument("--metric", default="eer", help="metric to tabulate (default eer)")
    t.add_argument("--out", default=None,
                   help="markdown file to write (default: table_<metric>.md, or "
                   "table_<layout>_<metric>.md, beside --runs; '' to only print)")
    for col in ("dataset", "protocol", "recognizer", "defense", "attack", "threat-model",
                "goal"):
        t.add_argument(f"--{col}", help=f"keep rows with this {col}")
    t.add_argument("--adaptive", default="none",
                   help="attacker knowledge to tabulate: none (grey-box, default), through "
                   "(--adaptive gradients through the defense: plain, bpda, eot, bpda+eot), any "
                   "(every non-grey-box row: also a*, query, transfer:...), or one kind")
    t.add_argument("--budget", type=float, help="keep attacked rows with this budget")
    t.add_argument("--n-pairs", type=int, help="keep runs on this many pairs")
    t.add_argument("--batch", metavar="FILE",
                   help="render many tables in one process: FILE ('-' for stdin) holds one "
                   "set of these options per line (# comments); other options are ignored")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"run": cmd_run, "list": cmd_list, "table": cmd_table,
               "train": cmd_train}[args.command]
    try:
        return handler(args)
    except FacebenchError as exc:
        print(f"facebench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facebench: interrupted; rows written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

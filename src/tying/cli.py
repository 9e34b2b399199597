"""The command line: `tying list | run | inspect | report` (also `python -m tying`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_list(args) -> int:
    from .experiments import list_experiments

    for exp in list_experiments():
        needs = f"  [needs {', '.join(exp.needs)}]" if exp.needs else ""
        print(f"{exp.name:12s} {exp.description}{needs}")
    return 0


def _cmd_run(args) -> int:
    from .errors import SystemPackageMissing
    from .experiments import get_experiment, run_all, run_experiment
    from .experiments.report import summary_markdown
    from .experiments.result import atomic_write_text
    from .experiments.runner import RunSettingsError

    try:
        overrides = _parse_sets(args.set)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.name == "all":
        if overrides:
            print("error: --set changes one experiment's settings; name the experiment "
                  "instead of 'all'", file=sys.stderr)
            return 2
        try:
            results, skipped = run_all(args.preset, args.seeds, args.out, threads=args.threads)
        except RunSettingsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for res in results:
            held = sum(c.holds for c in res.claims)
            print(f"{res.experiment:12s} {res.seconds:7.1f} s  claims {held}/{len(res.claims)}")
        if results:
            atomic_write_text(Path(args.out) / "summary.md", summary_markdown(args.out))
            print(f"summary: {Path(args.out) / 'summary.md'}")
        if skipped:
            print("\nSkipped (a system package is missing):")
            for name, reason in skipped:
                print(f"  {name}: {reason}")
        return 0
    try:
        get_experiment(args.name)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    try:
        res = run_experiment(args.name, args.preset, args.seeds, args.out, args.threads,
                             overrides)
    except SystemPackageMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except RunSettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    held = sum(c.holds for c in res.claims)
    print(f"{res.experiment}: {res.seconds:.1f} s, claims {held}/{len(res.claims)}; "
          f"report: {Path(args.out) / res.experiment / 'report.md'}")
    return 0


def _parse_sets(items: list[str] | None) -> dict:
    """``KEY=VALUE`` strings → settings; VALUE is JSON (``3e-3``, ``[1, 2]``,
    ``{"lenet300": 40}``), or a plain string when it does not parse as JSON."""
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r} (e.g. --set lr_w=3e-3)")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _cmd_inspect(args) -> int:
    from .inspection import inspect_file

    try:
        report = inspect_file(args.file, find_duplicates=args.find_duplicates)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report)
    return 0


def _cmd_report(args) -> int:
    from .experiments.report import summary_markdown, update_readme
    from .experiments.result import atomic_write_text

    try:
        if args.readme:
            changed = update_readme(args.readme, args.dir, args.bench)
            print(f"{args.readme}: {'updated' if changed else 'already up to date'}")
        else:
            text = summary_markdown(args.dir)
            atomic_write_text(Path(args.dir) / "summary.md", text)
            print(text)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tying", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments").set_defaults(fn=_cmd_list)
    run = sub.add_parser("run", help="run an experiment (or 'all')")
    run.add_argument("name", help="experiment name, or 'all'")
    run.add_argument("--preset", default="quick", choices=["quick", "full"])
    run.add_argument("--seeds", type=int, default=None,
                     help="number of seeds (default: the preset's)")
    run.add_argument("--out", default="runs", help="output directory (default: runs)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="replace one setting of the preset (VALUE in JSON, e.g. "
                          "--set 'models=[\"lenet300\"]'); repeatable")
    run.add_argument("--threads", type=int, default=1,
                     help="torch intra-op threads (default 1: robust on shared machines)")
    run.set_defaults(fn=_cmd_run)
    ins = sub.add_parser("inspect", help="inspect a .safetensors or .pt checkpoint")
    ins.add_argument("file")
    ins.add_argument("--find-duplicates", action="store_true",
                     help="also list tensors with equal values that could be tied")
    ins.set_defaults(fn=_cmd_inspect)
    rep = sub.add_parser("report", help="summarise the runs under DIR")
    rep.add_argument("dir")
    rep.add_argument("--readme", help="rewrite this README's generated results block")
    rep.add_argument("--bench", help="with --readme: also the benchmarks block, from this "
                                     "directory of benchmark JSON files")
    rep.set_defaults(fn=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m optex run <experiment> [--field value ...]`` and ``python -m optex book ...``.

Every field of an experiment's ``Config`` dataclass becomes an option of the same name, so the CLI
and the notebooks drive the same runner with the same settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from typing import Any, Callable, Sequence

EXPERIMENTS = ("synthetic", "fig2", "fig6", "training")


def _parser_for(hint: str) -> Callable[[str], Any]:
    """A string -> value converter for a Config field's type annotation."""
    def float_or_str(text: str) -> float | str:
        try:
            return float(text)
        except ValueError:
            return text

    def optional_float(text: str) -> float | None:
        return None if text.lower() in ("none", "") else float(text)

    def optional_int(text: str) -> int | None:
        return None if text.lower() in ("none", "") else int(text)

    def int_or_ints(text: str) -> int | tuple[int, ...]:
        return tuple(int(t) for t in text.split(",")) if "," in text else int(text)

    def strs(text: str) -> tuple[str, ...]:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    table = {"int": int, "float": float, "str": str, "float | str": float_or_str, "float | None": optional_float, "int | None": optional_int,
             "int | tuple[int, ...]": int_or_ints, "tuple[str, ...]": strs,
             "tuple[int, ...]": lambda t: tuple(int(v) for v in t.split(",")), "bool": lambda t: t.lower() in ("1", "true", "yes")}
    if hint not in table:
        raise TypeError(f"no command-line parser for Config fields of type {hint}")
    return table[hint]


def _experiment_module(name: str):
    return importlib.import_module(f"optex.experiments.{name}")


def _add_config_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    hints = {f.name: f.type for f in dataclasses.fields(config_class)}
    for field in dataclasses.fields(config_class):
        default = field.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=argparse.SUPPRESS,
                            type=_parser_for(str(hints[field.name])), help=f"default: {shown}")


def _run(args: argparse.Namespace, config_class: type, module: Any) -> int:
    from .analysis import speedup_table

    names = {f.name for f in dataclasses.fields(config_class)}
    try:
        config = config_class(**{k: v for k, v in vars(args).items() if k in names})
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    frame = module.run(config, results_dir=args.out, progress=not args.no_progress, commit=args.commit)
    print(f"{len(frame)} rows; results under {args.out}/{module.FIGURE_ID}")
    if "vanilla" in getattr(config, "methods", ()):
        metric = getattr(module, "SPEEDUP_METRIC", "gap")
        table = speedup_table(frame, metric=metric)
        print(f"Sequential iterations to reach Vanilla's final {metric} (mean over seeds, 95% t-interval of the speedup):")
        print(table.round(3).to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optex", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one experiment runner and cache its results")
    experiments = run.add_subparsers(dest="experiment", required=True)
    for name in EXPERIMENTS:
        module = _experiment_module(name)
        sub = experiments.add_parser(name, help=(module.__doc__ or name).splitlines()[0])
        _add_config_options(sub, module.Config)
        sub.add_argument("--out", default="results", help="results directory (default: results)")
        sub.add_argument("--commit", default=None, help="git commit to record when .git is absent")
        sub.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        sub.set_defaults(handler=lambda a, m=module: _run(a, m.Config, m))
    book = commands.add_parser("book", help="execute the notebooks and build the Jupyter Book")
    try:
        from . import book as book_module
    except ImportError:
        book_module = None
    if book_module is not None:
        book_module.add_commands(book)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.error(f"'{args.command}' needs a sub-command")
    return int(args.handler(args) or 0)


__all__ = ["main", "build_parser"]

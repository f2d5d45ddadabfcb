"""Command line: ``python -m optex run <experiment> [--field value ...]`` and ``python -m optex book ...``.

Every field of an experiment's ``Config`` dataclass becomes an option of the same name, so the CLI
and the notebooks drive the same runner with the same settings. A bad option ends in one line
``error: ...`` and exit status 2, before any work starts: values are parsed by the field's type, the
Config checks them, and the device and the output folder are checked next.

Results go to ``results/_local`` (git-ignored) unless ``--out`` says otherwise. The repository's
committed ``results/`` (what the book shows) is written only with ``--refresh-committed``, from a
clean commit: a maintainer refreshing those files on purpose.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

EXPERIMENTS = ("synthetic", "fig2", "fig6", "training", "rl", "scaling")
DEFAULT_OUT = Path("results") / "_local"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose every error is one line ``error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _bool(text: str) -> bool:
    if text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    raise ValueError(f"expected true or false, got {text!r}")


def _scalar(kind: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        if kind == "None":
            if text.lower() in ("none", ""):
                return None
            raise ValueError(f"expected none, got {text!r}")
        if kind == "bool":
            return _bool(text)
        try:
            return {"int": int, "float": float, "str": str}[kind](text)
        except ValueError:
            raise ValueError(f"expected {'an integer' if kind == 'int' else 'a number'}, got {text!r}") from None
    return convert


def _tuple(kind: str) -> Callable[[str], tuple[Any, ...]]:
    item = _scalar(kind)

    def convert(text: str) -> tuple[Any, ...]:
        return tuple(item(t.strip()) for t in text.split(",") if t.strip())
    return convert


# Alternatives of a union are tried in this order, so that "5" is an int before it is a string and
# "none" is None before it is a string; a tuple alternative takes comma-separated values.
_PRECEDENCE = ("None", "bool", "int", "float", "tuple", "str")
_TUPLE = re.compile(r"^tuple\[(int|float|str), \.\.\.\]$")


def _parser_for(hint: str) -> Callable[[str], Any]:
    """A string -> value converter for a Config field's type annotation: ``int``, ``float``, ``str``,
    ``bool``, ``None``, ``tuple[int|float|str, ...]`` and unions of these (e.g. ``int | tuple[int, ...]``)."""
    parts = [p.strip() for p in hint.split("|")]
    for part in parts:
        if part not in _PRECEDENCE and not _TUPLE.match(part):
            raise TypeError(f"no command-line parser for Config fields of type {hint}")
    ordered = sorted(parts, key=lambda p: _PRECEDENCE.index("tuple" if _TUPLE.match(p) else p))
    single_tuple = len(parts) == 1 and _TUPLE.match(parts[0])

    def convert(text: str) -> Any:
        reasons = []
        for part in ordered:
            match = _TUPLE.match(part)
            if match and not single_tuple and "," not in text:
                continue  # a single value is the scalar alternative's
            try:
                return _tuple(match[1])(text) if match else _scalar(part)(text)
            except ValueError as error:
                reasons.append(str(error))
        raise argparse.ArgumentTypeError(reasons[-1] if len(reasons) == 1 else
                                         f"{text!r} is not a value of type {hint}")
    convert.__name__ = hint
    return convert


def _experiment_module(name: str):
    return importlib.import_module(f"optex.experiments.{name}")


def _add_config_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    for field in dataclasses.fields(config_class):
        default = field.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=argparse.SUPPRESS,
                            type=_parser_for(str(field.type)), help=f"default: {shown}")


def available_devices(backend: str) -> list[str]:
    """The devices ``backend`` can use on this machine (``cpu`` first)."""
    if backend == "jax":
        import jax

        try:
            return ["cpu"] + (["cuda"] if jax.devices("gpu") else [])
        except RuntimeError:  # no GPU platform in this jaxlib
            return ["cpu"]
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + \
        (["mps"] if torch.backends.mps.is_available() else [])


def _check_device(config: Any) -> None:
    device, backend = getattr(config, "device", "cpu"), getattr(config, "backend", "torch")
    adapter = importlib.import_module(f"optex.{backend}.adapter")
    try:
        adapter.resolve_device(device, getattr(config, "dtype", "float32"))
    except ValueError as error:
        raise ValueError(f"{error}; devices available to the {backend} backend here: "
                         f"{', '.join(available_devices(backend))}") from None


def _check_out(out: Path, figure_id: str, refresh: bool) -> None:
    """``out`` is (or can be made) a writable folder, and not the committed results unless ``refresh``."""
    from .results import git_commit, is_committed

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if is_committed(out / figure_id):
        if not refresh:
            raise ValueError(f"--out {out} is the repository's committed results (what the book shows): use the "
                             f"default {DEFAULT_OUT} or another folder, or pass --refresh-committed to refresh "
                             "them on purpose")
        commit = git_commit()
        if commit is None or commit.endswith("+dirty"):
            raise ValueError("--refresh-committed needs a clean commit (optex/ has uncommitted changes or git "
                             "cannot tell): committed results must be reproducible from their commit")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise ValueError(f"--out {out} is not a writable folder ({error.strerror or error})") from None


def _run(args: argparse.Namespace, config_class: type, module: Any) -> int:
    from .analysis import REFERENCE, effective_speedup_table, speedup_table
    from .results import DamagedResultError

    names = {f.name for f in dataclasses.fields(config_class)}
    out = Path(args.out)
    try:
        config = config_class(**{k: v for k, v in vars(args).items() if k in names})
        _check_device(config)
        _check_out(out, module.FIGURE_ID, args.refresh_committed)
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        frame = module.run(config, results_dir=out, progress=not args.no_progress, commit=args.commit)
    except DamagedResultError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(frame)} rows; results under {out / module.FIGURE_ID}")
    if hasattr(module, "summary"):  # a runner with its own metric (RL: episodes to a reward threshold)
        print(module.summary(frame).round(3).to_string(index=False))
    elif "vanilla" in getattr(config, "methods", ()):
        metric = getattr(module, "SPEEDUP_METRIC", "gap")  # a runner's deterministic metric, e.g. a training loss
        print(f"Paper's metric: sequential iterations to reach Vanilla's final {metric} (mean over seeds, 95% "
              "t-interval of the speedup):")
        print(speedup_table(frame, metric=metric).round(3).to_string(index=False))
        reference = frame[frame["method"] == REFERENCE].dropna(subset=[metric])
        if len(reference):
            # Runs evaluated every k > 1 iterations are compared on that grid, interpolated in log(metric).
            grid = bool((reference.groupby("seed")["iteration"].diff().dropna() > 1).any())
            print(f"Effective speedup: Vanilla iterations to reach each method's best {metric} at t, divided by t "
                  "(censored: lower bounds):")
            print(effective_speedup_table(frame, metric=metric, interpolate=grid).round(3).to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m optex", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one experiment runner and cache its results")
    experiments = run.add_subparsers(dest="experiment", required=True)
    for name in EXPERIMENTS:
        module = _experiment_module(name)
        sub = experiments.add_parser(name, help=(module.__doc__ or name).splitlines()[0])
        _add_config_options(sub, module.Config)
        sub.add_argument("--out", default=str(DEFAULT_OUT),
                         help=f"results folder (default: {DEFAULT_OUT}, git-ignored)")
        sub.add_argument("--refresh-committed", action="store_true",
                         help="allow --out to be the repository's committed results/ (maintainers, clean commit)")
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


__all__ = ["DEFAULT_OUT", "available_devices", "build_parser", "main"]

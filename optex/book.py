"""``python -m optex book execute | build | check``: from jupytext sources to a checked HTML book.

- ``execute`` converts each chapter source ``notebooks/<name>.py`` to a notebook, injects the pipeline
  parameters into its ``parameters`` cell and runs it with papermill into ``book/_executed/<name>.ipynb``
  (one process per chapter, with a time limit), then writes the reproduction report's table. A failing
  chapter does not stop the others; all failures are listed at the end with the cell that raised.
- ``build`` runs ``jupyter-book build`` on the executed notebooks, execution off, warnings as errors.
- ``check`` reads the built HTML: every ``_toc.yml`` entry has a page, every figure id has an image,
  every data file a page names is a link to that file in the site, no page or executed notebook holds
  an error.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import _validation as check
from . import verify as _verify
from . import report as _report
from .report import FIGURES_DIR, PROFILES, project_root, write_report

SOURCES = Path("notebooks")
EXECUTED = Path("book") / "_executed"
REPORT_TABLE = EXECUTED / "report-table.md"
ESTIMATOR_TABLE = EXECUTED / "estimator-table.md"  # from the committed results, whatever the profile
STATUS_TABLE = EXECUTED / "status-table.md"
STATUS_RECORD = EXECUTED / "status.json"
LOGS = EXECUTED / "logs"
HTML = Path("_build") / "html"
MATHJAX_ENTRY = Path("node_modules") / "mathjax" / "es5" / "tex-mml-chtml.js"
# Every chapter's parameters cell defines these; `execute` sets all but `seeds`.
PIPELINE_PARAMETERS = ("profile", "device", "backend", "seeds", "recompute", "commit")
DEFAULT_TIMEOUT_S = 1200
QUICK_BUDGET_S = 480  # CI: the quick profile's notebooks together (the whole CI job stays within 20 min)
STATUS_PACKAGES = ("torch", "jax", "numpy", "pandas", "matplotlib", "papermill", "jupyter-book", "myst-nb")


def repository_root() -> Path:
    """The repository being built: the one around the working directory, else the one holding optex."""
    try:
        return project_root()
    except FileNotFoundError:
        return project_root(Path(__file__).resolve().parent)


def toc_files(root: Path) -> list[str]:
    """Every document of ``_toc.yml`` in reading order (without suffix)."""
    import yaml

    def walk(entry: Any) -> Iterable[str]:
        if isinstance(entry, dict):
            if "file" in entry:
                yield str(entry["file"])
            for key in ("parts", "chapters", "sections"):
                for child in entry.get(key, []):
                    yield from walk(child)

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [str(toc["root"]), *walk(toc)]


def chapters(root: Path) -> list[str]:
    """Names of the executed chapters, in reading order; each has a source ``notebooks/<name>.py``."""
    prefix = EXECUTED.as_posix() + "/"
    names = [f[len(prefix):] for f in toc_files(root) if f.startswith(prefix)]
    missing = [n for n in names if not (root / SOURCES / f"{n}.py").is_file()]
    if missing:
        raise FileNotFoundError(f"_toc.yml lists {', '.join(missing)} under {prefix} but "
                                f"{SOURCES}/ has no {', '.join(m + '.py' for m in missing)}")
    return names


# ------------------------------------------------------------------------------------------ execute
@dataclass
class Outcome:
    name: str
    seconds: float
    error: str | None = None  # None: executed without error


def _environment(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silences a debugger warning of ipykernel
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX must not grab 75% of a shared GPU
    return env


def parse_parameter(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``-p``: the value as a Python or JSON literal (``10``, ``0.1``, ``[1, 2]``,
    ``"sphere"``, ``true``, ``None``), or a bare word as a string; never evaluated as code."""
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not name.isidentifier():
        raise ValueError(f"-p expects NAME=VALUE with NAME a parameter name, got {text!r}")
    value = value.strip()
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    try:
        return name, json.loads(value)
    except ValueError:
        pass
    if value and all(c.isalnum() or c in "_-." for c in value):
        return name, value
    raise ValueError(f"-p {name}: {value!r} is not a Python or JSON literal (quote strings, e.g. "
                     f"-p {name}='\"text\"', lists as -p {name}='[1, 2]')")


def chapter_parameters(root: Path, name: str) -> list[str]:
    """The names a chapter's ``parameters`` cell defines (what ``-p`` may set)."""
    from papermill import inspect_notebook

    with tempfile.TemporaryDirectory(prefix=f"optex-{name}-") as folder:
        return list(inspect_notebook(str(_prepare(root, name, Path(folder)))))


def chapter_defaults(root: Path, name: str) -> dict[str, Any]:
    """A chapter's ``parameters`` cell as written: each name with its default value (the cell holds
    literals only, see :func:`parse_parameter`)."""
    from papermill import inspect_notebook

    with tempfile.TemporaryDirectory(prefix=f"optex-{name}-") as folder:
        found = inspect_notebook(str(_prepare(root, name, Path(folder))))
    return {key: ast.literal_eval(value["default"]) for key, value in found.items()}


def check_overrides(root: Path, names: Sequence[str], overrides: dict[str, Any]) -> str | None:
    """Why ``overrides`` cannot be applied to the chapters ``names`` (None: they can): a pipeline
    parameter has its own option, and every other name must be a parameter of every chapter."""
    own = [k for k in overrides if k in PIPELINE_PARAMETERS and k != "seeds"]
    if own:
        return f"-p {own[0]}: use the --{own[0]} option instead"
    for name in names:
        valid = [p for p in chapter_parameters(root, name) if p not in PIPELINE_PARAMETERS or p == "seeds"]
        unknown = [k for k in overrides if k not in valid]
        if unknown:
            return (f"-p {unknown[0]}: chapter {name} has no parameter {unknown[0]!r}; its parameters: "
                    f"{', '.join(valid)}")
    return None


def _prepare(root: Path, name: str, folder: Path) -> Path:
    """The jupytext source as an .ipynb in ``folder``, after checking its parameters cell."""
    import jupytext
    import nbformat
    from papermill import inspect_notebook

    notebook = jupytext.read(root / SOURCES / f"{name}.py")
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{SOURCES}/{name}.py must have exactly one cell tagged 'parameters', found {len(tagged)}")
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path = folder / f"{name}.ipynb"
    nbformat.write(notebook, path)
    missing = [p for p in PIPELINE_PARAMETERS if p not in inspect_notebook(str(path))]
    if missing:
        raise ValueError(f"the parameters cell of {SOURCES}/{name}.py must define {', '.join(missing)}")
    return path


def _failure(output: Path, fallback: str) -> str:
    """The first cell that raised (or was running when stopped) in a papermill output notebook."""
    import nbformat

    if not output.is_file():
        return fallback
    notebook = nbformat.read(output, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    for index, cell in enumerate(code, 1):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        running = cell.get("metadata", {}).get("papermill", {}).get("status") == "running"
        if errors or running:
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            what = f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else fallback
            return f"code cell {index} (`{first[:80]}`): {what}"
    return fallback


INJECTED_TAG = "injected-parameters"  # papermill's tag of the cell it adds under the parameters cell
CAPTION_TAG = "injected-parameters-caption"
INJECTED_CAPTION = ("*The values this page was executed with* (`python -m optex book execute` passed them; the "
                    "cell below overrides the defaults above):")


def _finish(output: Path) -> None:
    """Caption the cell papermill injected under the parameters cell, so that the page shows the
    defaults and, right under them, the values it was executed with."""
    import nbformat

    notebook = nbformat.read(output, as_version=4)
    for index, cell in reversed(list(enumerate(notebook.cells))):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED_TAG in tags:
            tags[:] = [t for t in tags if t != "remove-cell"]
            before = notebook.cells[index - 1] if index else None
            if before is None or CAPTION_TAG not in before.get("metadata", {}).get("tags", []):
                notebook.cells.insert(index, nbformat.v4.new_markdown_cell(INJECTED_CAPTION,
                                                                           metadata={"tags": [CAPTION_TAG]}))
    nbformat.write(notebook, output)


def run_papermill(source: str, output: str, parameters: str, cwd: str) -> int:
    """Body of the papermill process of :func:`execute_chapter`: execute ``source`` into ``output``;
    the exit status is 1 when a cell raised (its error is in the output notebook)."""
    import papermill

    try:
        papermill.execute_notebook(source, output, parameters=json.loads(Path(parameters).read_text()), cwd=cwd,
                                   kernel_name="python3", progress_bar=False, log_output=False)
    except papermill.PapermillExecutionError as error:
        print(f"{error.ename}: {error.evalue}", file=sys.stderr)
        return 1
    return 0


def execute_chapter(root: Path, name: str, parameters: dict[str, Any], timeout: float | None,
                    output_dir: Path | None = None, context: dict[str, str] | None = None) -> Outcome:
    """Execute one chapter into ``<output_dir>/<name>.ipynb`` (default ``book/_executed``) in its own
    papermill process, started in ``root``; what the process prints goes to ``book/_executed/logs/``.
    ``context`` holds environment variables for the chapter's kernel (see ``optex.report.Page``)."""
    output = (root / EXECUTED if output_dir is None else Path(output_dir)) / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"optex-{name}-") as folder:
        try:
            source = _prepare(root, name, Path(folder))
        except (ValueError, OSError) as error:
            return Outcome(name, time.perf_counter() - start, str(error))
        params = Path(folder) / "parameters.json"
        params.write_text(json.dumps(parameters))
        command = [sys.executable, "-c", "import sys; from optex.book import run_papermill; "
                   "sys.exit(run_papermill(*sys.argv[1:]))", str(source), str(output), str(params), str(root)]
        log = root / LOGS / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        # A session of its own, so that a timeout stops papermill and its kernel together; its messages
        # go to the chapter's log, and the user sees the progress and the summary.
        with log.open("w") as sink:
            process = subprocess.Popen(command, cwd=root, env=_environment(root, context), stdout=sink, stderr=sink,
                                       start_new_session=True)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return Outcome(name, time.perf_counter() - start,
                               _failure(output, f"stopped after the {timeout:g} s limit"))
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        reason = f"papermill exited with {process.returncode} (its messages: {LOGS / name}.log)"
        return Outcome(name, seconds, _failure(output, reason))
    _finish(output)
    return Outcome(name, seconds)


def execute(root: Path, profile: str = "paper", device: str = "cpu", backend: str = "torch",
            only: Sequence[str] = (), recompute: bool = False, commit: str | None = None,
            timeout: float | None = DEFAULT_TIMEOUT_S, overrides: dict[str, Any] | None = None,
            out: Path | None = None, refresh: bool = False) -> int:
    """Execute the chapters (all, or ``only`` those) with the reader's ``overrides`` of their parameters,
    write the report and status tables, print a summary with each notebook's time."""
    names = chapters(root)
    unknown = [n for n in only if n not in names]
    if unknown:
        print(f"error: no chapter named {', '.join(unknown)}; chapters: {', '.join(names)}", file=sys.stderr)
        return 2
    selected = [n for n in names if not only or n in only]
    overrides = dict(overrides or {})
    problem = check_overrides(root, selected, overrides) if overrides else None
    if problem is None and refresh and not recompute:
        problem = "--refresh-committed refreshes committed results by recomputing them: add --recompute"
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    parameters = dict(profile=profile, device=device, backend=backend, recompute=recompute, commit=commit, **overrides)
    context = {_report.ENV_OVERRIDES: json.dumps(overrides), _report.ENV_REFRESH: "1" if refresh else "0",
               _report.ENV_OUT: str(out) if out is not None else ""}
    outcomes = []
    for index, name in enumerate(selected, 1):
        print(f"[{index}/{len(selected)}] {name}: executing ({profile} profile, {backend} on {device})", flush=True)
        outcome = execute_chapter(root, name, parameters, timeout, context=context)
        outcomes.append(outcome)
        print(f"[{index}/{len(selected)}] {name}: {'ok' if outcome.error is None else 'FAILED'} "
              f"in {outcome.seconds:.1f} s", flush=True)
    write_report(root / FIGURES_DIR, root / REPORT_TABLE)
    _report.write_estimator_table(root / "results", root / ESTIMATOR_TABLE)
    record = write_status(root, outcomes, profile, device, backend, overrides)
    width = max(len(o.name) for o in outcomes)
    print("\n" + "notebook".ljust(width + 2) + "status      time")
    for outcome in outcomes:
        print(f"{outcome.name.ljust(width + 2)}{'ok' if outcome.error is None else 'FAILED':8}{outcome.seconds:7.1f} s")
    print(f"{'total'.ljust(width + 2)}{'':8}{sum(o.seconds for o in outcomes):7.1f} s")
    if profile == "quick":
        total = quick_total(record)
        print(f"quick profile, all notebooks of this build: {total:.0f} s of the {QUICK_BUDGET_S} s budget"
              + ("" if total <= QUICK_BUDGET_S else " (OVER BUDGET)"))
    failed = [o for o in outcomes if o.error is not None]
    for outcome in failed:
        print(f"\nFAILED {outcome.name} ({EXECUTED / outcome.name}.ipynb): {outcome.error}", file=sys.stderr)
    return 1 if failed else 0


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in STATUS_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _device(device: str) -> str:
    if device == "cpu":
        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    try:
        import torch

        if torch.cuda.is_available():
            return f"{device}: {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return device


def write_status(root: Path, outcomes: Sequence[Outcome], profile: str, device: str, backend: str,
                 overrides: dict[str, Any]) -> dict[str, Any]:
    """Record this build's notebooks (time, status, profile, parameters changed) in ``status.json``,
    merged with the chapters an earlier ``--only`` run executed, and write the status page's table."""
    path = root / STATUS_RECORD
    record = json.loads(path.read_text()) if path.is_file() else {"notebooks": {}}
    for outcome in outcomes:
        record["notebooks"][outcome.name] = dict(status="ok" if outcome.error is None else "failed",
                                                 seconds=round(outcome.seconds, 1), profile=profile,
                                                 error=outcome.error, overrides=overrides,
                                                 date=time.strftime("%Y-%m-%d %H:%M", time.localtime()))
    record.update(versions=_versions(), device=_device(device), backend=backend,
                  platform=f"{platform.system()} {platform.release()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    (root / STATUS_TABLE).write_text(status_markdown(record, chapters(root)))
    return record


def quick_total(record: dict[str, Any]) -> float:
    return sum(n["seconds"] for n in record["notebooks"].values() if n["profile"] == "quick")


def status_markdown(record: dict[str, Any], names: Sequence[str]) -> str:
    """The status page's tables: one row per chapter of this build, then the environment."""
    from .tables import Column, Table, decimals, label

    rows = [dict(chapter=f"{{doc}}`/{EXECUTED.as_posix()}/{name}`", download=f"{{download}}`{name}.ipynb "
                 f"<{EXECUTED.name}/{name}.ipynb>`", **record["notebooks"][name])
            for name in names if name in record["notebooks"]]
    import pandas as pd

    frame = pd.DataFrame(rows).assign(changed=lambda f: [", ".join(f"{k} = {v!r}" for k, v in o.items()) or "—"
                                                         for o in f["overrides"]])
    chapters_table = Table(frame, [label("Chapter", "chapter"), label("Status", "status"),
                                    label("Profile", "profile"), Column("Time (s)", decimals("seconds", 1)),
                                    label("Parameters changed", "changed"), label("Recorded", "date"),
                                    label("Notebook", "download")])
    versions = pd.DataFrame([dict(name=k, version=v) for k, v in record["versions"].items()])
    environment = Table(versions, [label("Package", "name"), label("Version", "version")])
    total = sum(r["seconds"] for r in rows)
    return (chapters_table.myst("status-notebooks", f"The chapters of this build: {total:.0f} s of notebook "
                                "execution in all.")
            + f"\n\nDevice: {record['device']}; backend: {record['backend']}; {record['platform']}.\n\n"
            + environment.myst("status-versions", "Python and the main packages of this build.") + "\n")


# -------------------------------------------------------------------------------------------- build
def pinned_mathjax(root: Path) -> str:
    """The MathJax version ``package.json`` pins (its lockfile, ``package-lock.json``, is committed)."""
    return json.loads((root / "package.json").read_text())["dependencies"]["mathjax"]


def installed_mathjax(root: Path) -> str | None:
    """The MathJax version under ``node_modules/`` (None when it is not installed)."""
    try:
        return json.loads((root / MATHJAX_ENTRY.parents[1] / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def ensure_mathjax(root: Path) -> bool:
    """Install the pinned MathJax into ``node_modules/`` with ``npm ci`` (exactly the committed lockfile)
    when it is not there and npm exists; True when the pinned version is served by the book. Without
    npm or a registry, False: the pages then load MathJax from a CDN."""
    pinned = pinned_mathjax(root)
    if installed_mathjax(root) == pinned and (root / MATHJAX_ENTRY).is_file():
        return True
    npm = shutil.which("npm")
    if npm is None:
        return False
    done = subprocess.run([npm, "ci", "--prefix", str(root), "--ignore-scripts", "--no-audit", "--no-fund",
                           "--loglevel", "error"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"warning: npm ci could not install MathJax {pinned} ({done.stderr.strip()[-300:]})", file=sys.stderr)
    return installed_mathjax(root) == pinned and (root / MATHJAX_ENTRY).is_file()


def build(root: Path, keep_going: bool = True) -> int:
    """``jupyter-book build`` of the executed chapters with ``-W`` (a warning fails the build)."""
    missing = [f"{EXECUTED / n}.ipynb" for n in chapters(root) if not (root / EXECUTED / f"{n}.ipynb").is_file()]
    missing += [str(table) for table in (REPORT_TABLE, ESTIMATOR_TABLE, STATUS_TABLE) if not (root / table).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} missing: run `python -m optex book execute` first", file=sys.stderr)
        return 2
    offline = ensure_mathjax(root)
    print(f"MathJax: {'served by the book (offline)' if offline else 'loaded from a CDN (npm not available)'}",
          flush=True)
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(root),
               "--builder", "html", "--all", "-W", *(["--keep-going"] if keep_going else [])]
    start = time.perf_counter()
    code = subprocess.run(command, cwd=root, env=_environment(root)).returncode
    print(f"book build: {'ok' if code == 0 else 'FAILED'} in {time.perf_counter() - start:.1f} s", flush=True)
    return code


# -------------------------------------------------------------------------------------------- check
def figure_ids(root: Path) -> list[str]:
    """The ids of the figures the chapters saved (file stems under ``book/_executed/figures``)."""
    return sorted(p.stem for p in (root / FIGURES_DIR).glob("*.svg"))


def check_html(root: Path) -> list[str]:
    """Problems with the built book (empty: none)."""
    from bs4 import BeautifulSoup
    import nbformat

    html = root / HTML
    problems = []
    pages = {}
    for doc in toc_files(root):
        page = html / f"{doc}.html"
        if page.is_file():
            pages[doc] = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        else:
            problems.append(f"_toc.yml entry {doc} has no page ({page.relative_to(root)})")
    ids = figure_ids(root)
    for figure_id in ids:
        for suffix in ("png", "csv"):
            if not (root / FIGURES_DIR / f"{figure_id}.{suffix}").is_file():
                problems.append(f"figure {figure_id}: {FIGURES_DIR / figure_id}.{suffix} is missing")
    shown: set[str] = set()
    for doc, soup in pages.items():
        base = (html / doc).parent
        for figure in soup.find_all("figure"):
            if figure.get("id") not in ids:
                continue
            images = [img for img in figure.find_all("img") if (base / img.get("src", "")).is_file()]
            if images:
                shown.add(figure["id"])
            else:
                problems.append(f"{doc}: figure {figure['id']} has no image that loads")
        for link in soup.find_all("a", href=True):
            target, _, fragment = link["href"].partition("#")
            if fragment in ids and target.endswith(".html"):
                linked = pages.get(str((Path(doc).parent / target).with_suffix("")).replace(os.sep, "/"))
                if linked is None or linked.find("figure", id=fragment) is None:
                    problems.append(f"{doc}: link to figure {fragment} points to {target}, which does not show it")
        for error in soup.select("div.output.traceback, div.output.error, .nb-error"):
            problems.append(f"{doc}: shows an error output: {error.get_text()[:120].strip()!r}")
    problems += [f"figure {i} is saved but no page shows it" for i in ids if i not in shown]
    for doc, soup in pages.items():
        problems += [f"{doc}: {p}" for p in page_problems(soup)]
        problems += [f"{doc}: {p}" for p in download_problems(soup, html / doc)]
    problems += figure_file_problems(root, ids) + budget_problems(root)
    for notebook_path in sorted((root / EXECUTED).glob("*.ipynb")):
        notebook = nbformat.read(notebook_path, as_version=4)
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    problems.append(f"{notebook_path.relative_to(root)}: error output {output.get('ename')}")
    return problems


_RAW_FLOAT = re.compile(r"\d\.\d{5,}")
_RAW_TEX = re.compile(r"\\\(|\\\)|\$|\\[a-zA-Z]+")
_RAW_MATH = re.compile(r"\$|\\\(|\\\[")  # a math delimiter MathJax never saw
MAX_TABLE_COLUMNS = 7  # more do not fit the text column at a readable size
_EQUAL_RANGE = re.compile(r"between (−?-?[\d.,\u2009]+)(\S*) and \1\2(?!\d|\.\d)")
_HYPHEN_MINUS = re.compile(r"(?:^|(?<=[\s\[(]))-(?=\.?\d)")  # "-0.62", "[-42.5": a hyphen standing for a minus
_ZERO_DURATION = re.compile(r"(?<![\d.])0(?:\.0+)? ?(?:seconds?|minutes?|min|hours?|h)\b")
_TEXT_BLOCKS = ("p", "li", "td", "th", "caption", "figcaption", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6")
_NOT_PROSE = ("script", "style", "code", "pre", "kbd", "samp", "mjx-container", "math")


def _prose(soup: Any) -> Any:
    """A copy of the page's main content without code, scripts and typeset math: what a reader reads
    as text (Sphinx writes math as ``\\(...\\)`` inside ``.math`` for MathJax, which is not raw)."""
    from bs4 import BeautifulSoup

    main = soup.select_one("main, article") or soup.body or soup
    copy = BeautifulSoup(str(main), "html.parser")
    for element in copy.find_all(_NOT_PROSE):
        element.decompose()
    for element in copy.select(".math, .highlight, .MathJax, .cell_input, dt.sig"):  # dt.sig: an API signature
        element.decompose()
    return copy


def prose_problems(soup: Any) -> list[str]:
    """Markup that did not render and text a reader should not meet, in a page's prose: a literal
    ``$``/``\\(`` math delimiter, a paragraph that is a Markdown list shown as text ("- " lines), an
    interval whose ends are the same ("between 4.00 and 4.00"), a duration of zero units ("0 minutes"), a
    hyphen used as a minus sign ("-0.62": optex.tables writes U+2212)."""
    problems = []
    prose = _prose(soup)
    for paragraph in prose.find_all("p"):
        text = paragraph.get_text()
        if text.lstrip().startswith("- ") or "\n- " in text:
            problems.append(f"a Markdown list shown as text (paragraph starts {text.strip()[:60]!r}): emit it as "
                            "block Markdown (a {glue:md} on its own line)")
    for element in prose.find_all(string=_RAW_MATH):
        block = element.find_parent(_TEXT_BLOCKS) or element
        text = " ".join(block.get_text(" ").split())
        problems.append(f"raw math delimiter in the text {text[:80]!r}: glue it as Markdown read as MyST, or "
                        "write it without markup")
    text = " ".join(prose.get_text(" ").split())
    for match in _EQUAL_RANGE.finditer(text):
        problems.append(f"an interval with equal ends {match.group(0)!r}: use optex.tables.format_range")
    for match in _HYPHEN_MINUS.finditer(text):
        problems.append(f"a hyphen as a minus sign in {text[max(match.start() - 30, 0):match.end() + 10]!r}: format "
                        "the number with optex.tables (fixed, significant, format_interval, compact)")
    for match in _ZERO_DURATION.finditer(text):
        problems.append(f"a duration of zero units {text[max(match.start() - 30, 0):match.end()]!r}: use "
                        "optex.tables.format_duration")
    for table in prose.find_all("table"):
        header = table.find("tr")
        width = len(header.find_all(["th", "td"])) if header is not None else 0
        if width > MAX_TABLE_COLUMNS:
            problems.append(f"a table of {width} columns (more than {MAX_TABLE_COLUMNS} do not fit the text column; "
                            f"starts {table.get_text(' ')[:60].strip()!r})")
    return list(dict.fromkeys(problems))


_DATA_FILE = re.compile(r"(?<![\w./-])[\w-]+\.csv\b")  # a data file named by its file name


def download_problems(soup: Any, page: Path) -> list[str]:
    """Data files a page names (``fig2.csv`` in a caption, outside code cells) that a reader cannot
    download from it: each name must be the text of a link to that file inside the built site
    (``page``: the page's path without suffix; MyST's ``{download}`` role copies the file there)."""
    from bs4 import BeautifulSoup

    main = BeautifulSoup(str(soup.select_one("main, article") or soup.body or soup), "html.parser")
    for element in main.select(".cell_input, .highlight, pre, script, style"):
        element.decompose()
    linked: dict[str, bool] = {}
    for link in main.find_all("a", href=True):
        target = link["href"].partition("#")[0]
        for name in _DATA_FILE.findall(link.get_text()):
            local = bool(target) and "://" not in target and Path(target).name == name
            linked[name] = linked.get(name, False) or (local and (page.parent / target).is_file())
    problems = []
    for name in dict.fromkeys(_DATA_FILE.findall(main.get_text(" "))):
        if name not in linked:
            problems.append(f"names the data file {name} without a link to it: write it as {{download}}`{name} "
                            f"<figures/{name}>`")
        elif not linked[name]:
            problems.append(f"links the data file {name} to a file the built site does not hold")
    return problems


def page_problems(soup: Any) -> list[str]:
    """Defects a reader meets on one built page: a table shown as a figure, a table without a
    numbered caption, code names or raw floats in a table, a button to a placeholder or nowhere, raw
    TeX in the page's title or in the navigation, and :func:`prose_problems`."""
    problems = []
    for figure in soup.find_all("figure"):
        if figure.find("table") is not None:
            problems.append(f"table in figure {figure.get('id')!r}: publish tables with optex.tables.publish")
    for table in soup.select("article table, main table"):
        caption = table.find("caption")
        number = caption.find(class_="caption-number") if caption is not None else None
        if number is None or not table.get("id"):
            problems.append(f"a table without a numbered caption and label (starts {table.get_text(' ')[:60].strip()!r})")
        for header in table.find_all("th"):
            if re.search(r"[a-z]_[a-z]", header.get_text()):
                problems.append(f"table column named like code: {header.get_text().strip()!r}")
        raw = [cell.get_text().strip() for cell in table.find_all("td") if _RAW_FLOAT.search(cell.get_text())]
        if raw:
            problems.append(f"table cells with unrounded numbers, e.g. {raw[0]!r}")
    for link in soup.find_all("a", href=True):
        if "OWNER" in link["href"] or (link.get("class") and "btn" in link["class"] and link["href"] in ("", "#")):
            problems.append(f"dead button or link {link['href']!r}")
    title = soup.find("title")
    if title is not None and _RAW_TEX.search(title.get_text()):
        problems.append(f"raw TeX in <title>: {title.get_text().strip()!r}")
    typeset = any("mathjax" in (script.get("src") or "").lower() for script in soup.find_all("script"))
    for link in soup.select("nav a, .bd-sidebar a") if not typeset else []:
        if _RAW_TEX.search(link.get_text()):
            problems.append(f"raw TeX in the navigation of a page without MathJax: {link.get_text().strip()!r}")
    problems += prose_problems(soup)
    return sorted(set(problems))


def figure_file_problems(root: Path, ids: Sequence[str]) -> list[str]:
    """Published figures wider than the text (PNG at 150 dpi, bbox tight) or taller than a screen."""
    from PIL import Image

    from .plotting import MAX_HEIGHT_IN, TEXT_WIDTH_IN

    problems = []
    for figure_id in ids:
        path = root / FIGURES_DIR / f"{figure_id}.png"
        if path.is_file():
            with Image.open(path) as image:
                width, height = (size / 150 for size in image.size)
            if width > TEXT_WIDTH_IN + 0.5 or height > MAX_HEIGHT_IN + 0.5:
                problems.append(f"figure {figure_id} is {width:.1f} x {height:.1f} in; the text width is "
                                f"{TEXT_WIDTH_IN} in (optex.plotting.figure_problems)")
    return problems


def budget_problems(root: Path) -> list[str]:
    """The quick profile's notebooks of this build over the CI budget (QUICK_BUDGET_S)."""
    path = root / STATUS_RECORD
    if not path.is_file():
        return []
    total = quick_total(json.loads(path.read_text()))
    return [] if total <= QUICK_BUDGET_S else [f"quick-profile notebooks took {total:.0f} s, over the "
                                              f"{QUICK_BUDGET_S} s budget"]


def check_book(root: Path) -> int:
    if not (root / HTML / "index.html").is_file():
        print(f"error: no built book under {HTML}: run `python -m optex book build` first", file=sys.stderr)
        return 2
    problems = check_html(root) + _verify.verification_problems(root)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    docs, ids = toc_files(root), figure_ids(root)
    print(f"book check: {len(docs)} pages, {len(ids)} figures ({', '.join(ids)}): "
          f"{'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------------- CLI
def _timeout(text: str) -> float | None:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"timeout must be >= 0 seconds (0: no limit), got {text}")
    return value or None


def _parameter(text: str) -> tuple[str, Any]:
    try:
        return parse_parameter(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add ``execute``, ``build``, ``check`` and ``verify`` under ``python -m optex book``."""
    commands = parser.add_subparsers(dest="book_command", required=True)
    run = commands.add_parser("execute", help="execute the chapter notebooks with papermill into book/_executed/")
    run.add_argument("--profile", choices=PROFILES, default="paper",
                     help="paper: committed paper-scale results; quick: small runs recomputed on CPU (default: paper)")
    run.add_argument("--device", choices=check.DEVICES, default="cpu", help="where missing results are computed")
    run.add_argument("--backend", choices=check.BACKENDS, default="torch")
    run.add_argument("--only", action="append", default=[], metavar="NAME",
                     help="execute this chapter only (repeatable); names are the files in notebooks/")
    run.add_argument("--recompute", action="store_true",
                     help="compute missing paper-scale results (can take long) into --out")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help=f"where --recompute writes paper-scale results (default: results/{_report.LOCAL_DIR}, "
                          "git-ignored)")
    run.add_argument("--refresh-committed", action="store_true",
                     help="with --recompute: write into the committed results/ (maintainers refreshing them)")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE", type=_parameter,
                     help="set a chapter parameter (repeatable), e.g. -p parallelism=10 -p panels='[\"sphere\"]'")
    run.add_argument("--commit", default=None, help="git commit recorded with new results where .git is absent")
    run.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT_S,
                     help=f"seconds per chapter, 0 for no limit (default: {DEFAULT_TIMEOUT_S})")
    run.set_defaults(handler=lambda a: execute(repository_root(), a.profile, a.device, a.backend, a.only,
                                               a.recompute, a.commit, a.timeout, dict(a.parameter), a.out,
                                               a.refresh_committed))
    make = commands.add_parser("build", help="build the HTML book from the executed notebooks (warnings fail it)")
    make.add_argument("--stop-early", action="store_true", help="stop at the first warning instead of listing all")
    make.set_defaults(handler=lambda a: build(repository_root(), keep_going=not a.stop_early))
    verify = commands.add_parser("check", help="check the built HTML: pages, figures, error outputs")
    verify.set_defaults(handler=lambda a: check_book(repository_root()))
    results = commands.add_parser("verify", help="recompute a short prefix of every committed result with today's "
                                                 "code and compare (record: book/_executed/verification.json)")
    results.add_argument("--only", action="append", default=[], metavar="FIGURE_ID",
                         help="verify this figure's results only (repeatable), e.g. fig2")
    results.add_argument("--strict", action="store_true",
                         help="exit 1 unless every result passed and none came from uncommitted code")
    results.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    results.set_defaults(handler=lambda a: _verify.run(repository_root(), a.only, a.strict, not a.no_progress))


__all__ = ["add_commands", "build", "chapters", "check_book", "check_html", "download_problems", "execute",
           "execute_chapter",
           "figure_ids", "page_problems", "prose_problems", "toc_files"]

"""The book pipeline: layout, notebook contract, execution with papermill, HTML checks."""
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import json

import nbformat
import pytest
import yaml
from PIL import Image

from optex import book, report
from optex.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]

TINY = '''# %% [markdown]
# # Tiny

# %% tags=["parameters"]
profile = "paper"
device = "cpu"
backend = "torch"
seeds = None
recompute = False
commit = None

# %%
if profile not in ("paper", "quick"):
    raise ValueError(f"profile must be 'paper' or 'quick', got {profile!r}")

# %%
import time

time.sleep(120 if recompute else 0)
print("ran with", profile)
'''


def test_toc_follows_the_paper_and_every_entry_has_a_source():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book"
    captions = [part["caption"] for part in toc["parts"]]
    for expected in ("Method (Sec. 4)", "Theory (Sec. 5)", "Experiments (Sec. 6.1–6.3)", "Scaling",
                     "Reproduction report"):
        assert expected in captions
    names = book.chapters(ROOT)
    assert "synthetic" in names
    for doc in book.toc_files(ROOT):
        if not doc.startswith("book/_executed/"):
            assert (ROOT / f"{doc}.md").is_file(), doc


def test_notebooks_are_jupytext_sources_only():
    files = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    assert files and all(name.endswith(".py") for name in files), files
    assert set(book.chapters(ROOT)) == {name[:-3] for name in files}


@pytest.mark.parametrize("name", book.chapters(ROOT))
def test_every_chapter_has_one_parameters_cell_with_the_pipeline_parameters(tmp_path, name):
    path = book._prepare(ROOT, name, tmp_path)
    notebook = nbformat.read(path, as_version=4)
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert "parameters" in first_code.metadata["tags"]


def test_config_keeps_sphinx_away_from_code_and_never_executes():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True
    assert {"optex", "tests", "_build", "notebooks"} <= set(config["exclude_patterns"])
    assert ".*" in config["exclude_patterns"]  # .venv, .git, caches
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["bibtex_bibfiles"] == ["book/references.bib"]


def _requirements(text_lines):
    return {line.replace(" ", "") for line in text_lines}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = list(project["dependencies"])
    for extra, packages in project["optional-dependencies"].items():
        if extra != "test":
            expected += packages
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert _requirements(pip) == _requirements(expected)
    assert (ROOT / "binder" / "environment.yml").resolve() == (ROOT / "environment.yml").resolve()


def test_cli_exposes_execute_build_and_check():
    parser = build_parser()
    args = parser.parse_args(["book", "execute", "--profile", "quick", "--only", "synthetic", "--recompute"])
    assert (args.profile, args.only, args.recompute, args.timeout) == ("quick", ["synthetic"], True, 1200)
    assert parser.parse_args(["book", "execute", "--timeout", "0"]).timeout is None
    for command in ("build", "check"):
        assert callable(parser.parse_args(["book", command]).handler)
    with pytest.raises(SystemExit):
        parser.parse_args(["book", "execute", "--profile", "fast"])


def test_execute_rejects_an_unknown_chapter(capsys):
    assert book.execute(ROOT, only=["no-such-chapter"]) == 2
    assert "no-such-chapter" in capsys.readouterr().err


# ----------------------------------------------------------------------------- execution (papermill)
@pytest.fixture
def tiny_project(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "tiny.py").write_text(TINY)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/_executed/tiny\n")
    return tmp_path


def _parameters(**changes):
    return dict(dict(profile="quick", device="cpu", backend="torch", recompute=False, commit=None), **changes)


def test_execution_shows_the_injected_values_captioned_right_under_the_defaults(tiny_project):
    outcome = book.execute_chapter(tiny_project, "tiny", _parameters(), timeout=300)
    assert outcome.error is None
    path = tiny_project / "book" / "_executed" / "tiny.ipynb"
    notebook = nbformat.read(path, as_version=4)
    tags = [c.metadata.get("tags", []) for c in notebook.cells]
    defaults = next(i for i, t in enumerate(tags) if "parameters" in t)
    assert book.CAPTION_TAG in tags[defaults + 1] and book.INJECTED_TAG in tags[defaults + 2]
    injected = notebook.cells[defaults + 2]
    assert "remove-cell" not in injected.metadata.tags and 'profile = "quick"' in injected.source
    assert "executed with" in notebook.cells[defaults + 1].source
    book._finish(path)  # a second pass adds no second caption
    assert len(nbformat.read(path, as_version=4).cells) == len(notebook.cells)
    assert "ran with quick" in notebook.cells[-1].outputs[0]["text"]


def test_a_bad_parameter_fails_in_the_first_cell_and_is_reported(tiny_project):
    outcome = book.execute_chapter(tiny_project, "tiny", _parameters(profile="fast"), timeout=300)
    assert outcome.error.startswith("code cell 3 (`if profile not in")
    assert "ValueError: profile must be" in outcome.error


def test_a_chapter_over_its_time_limit_is_stopped_and_reported(tiny_project):
    outcome = book.execute_chapter(tiny_project, "tiny", _parameters(recompute=True), timeout=20)
    assert "20 s limit" in outcome.error and "code cell 4" in outcome.error
    assert outcome.seconds < 60


def test_a_source_without_the_pipeline_parameters_is_refused(tiny_project):
    source = tiny_project / "notebooks" / "tiny.py"
    source.write_text(TINY.replace("commit = None\n", ""))
    outcome = book.execute_chapter(tiny_project, "tiny", _parameters(), timeout=300)
    assert "must define commit" in outcome.error


def test_the_synthetic_chapter_names_a_bad_knob_in_its_first_cell(tmp_path):
    outcome = book.execute_chapter(ROOT, "synthetic", _parameters(dim=-5), timeout=300, output_dir=tmp_path)
    assert outcome.error.startswith("code cell 3 ")
    assert "dim must be a positive integer" in outcome.error


# ------------------------------------------------------------------------------------------ HTML checks
FIGURE_PAGE = '<html><body><figure id="fig-a"><img src="../../_images/a.png"></figure>{extra}</body></html>'


@pytest.fixture
def built(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/_executed/ch\n")
    html = tmp_path / "_build" / "html"
    (html / "book" / "_executed").mkdir(parents=True)
    (html / "_images").mkdir()
    (html / "_images" / "a.png").write_bytes(b"\x89PNG")
    (html / "index.html").write_text("<html></html>")
    (html / "book" / "intro.html").write_text('<html><a href="_executed/ch.html#fig-a">Fig. 1</a></html>')
    (html / "book" / "_executed" / "ch.html").write_text(FIGURE_PAGE.format(extra=""))
    figures = tmp_path / "book" / "_executed" / "figures"
    figures.mkdir(parents=True)
    for suffix in ("svg", "csv"):
        (figures / f"fig-a.{suffix}").write_text("x")
    Image.new("RGB", (600, 300)).save(figures / "fig-a.png")
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "book" / "_executed" / "ch.ipynb")
    return tmp_path


def test_check_passes_a_complete_book(built):
    assert book.check_html(built) == []


def test_check_reports_a_figure_whose_image_does_not_load(built):
    (built / "_build" / "html" / "_images" / "a.png").unlink()
    assert any("figure fig-a has no image that loads" in p for p in book.check_html(built))


def test_check_reports_a_missing_page_and_a_broken_figure_link(built):
    (built / "_build" / "html" / "book" / "_executed" / "ch.html").unlink()
    problems = book.check_html(built)
    assert any("book/_executed/ch has no page" in p for p in problems)
    assert any("link to figure fig-a" in p for p in problems)
    assert any("saved but no page shows it" in p for p in problems)


def test_check_reports_error_outputs(built):
    page = built / "_build" / "html" / "book" / "_executed" / "ch.html"
    page.write_text(FIGURE_PAGE.format(extra='<div class="output traceback">ValueError</div>'))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[])])])
    nbformat.write(notebook, built / "book" / "_executed" / "ch.ipynb")
    problems = book.check_html(built)
    assert any("shows an error output" in p for p in problems)
    assert any("error output ValueError" in p for p in problems)


def test_check_reports_missing_figure_files(built):
    (built / "book" / "_executed" / "figures" / "fig-a.csv").unlink()
    assert any("fig-a.csv is missing" in p for p in book.check_html(built))


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_no_notebook_outputs_are_committed():
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked.split() == []


def test_python_m_optex_book_help_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "optex", "book", "--help"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0
    for command in ("execute", "build", "check"):
        assert command in done.stdout


# ------------------------------------------------------------------------------------- reader's parameters
@pytest.mark.parametrize("text, expected", [("parallelism=10", ("parallelism", 10)), ("lr=1e-3", ("lr", 0.001)),
                                            ('panels=["sphere"]', ("panels", ["sphere"])),
                                            ("function=ackley", ("function", "ackley")),
                                            ("animate=false", ("animate", False)), ("dim=None", ("dim", None))])
def test_parameters_are_literals_never_code(text, expected):
    assert book.parse_parameter(text) == expected


@pytest.mark.parametrize("text", ["parallelism", "=3", "x=__import__('os').system('true')", "x=1+"])
def test_a_parameter_that_is_not_a_literal_is_refused(text):
    with pytest.raises(ValueError, match="-p"):
        book.parse_parameter(text)


def test_unknown_or_pipeline_parameters_are_refused_with_the_valid_names(tiny_project):
    problem = book.check_overrides(tiny_project, ["tiny"], {"parallelism": 3})
    assert "no parameter 'parallelism'" in problem and "its parameters: seeds" in problem
    assert "--profile" in book.check_overrides(tiny_project, ["tiny"], {"profile": "quick"})
    assert book.check_overrides(tiny_project, ["tiny"], {"seeds": 2}) is None


def test_a_changed_parameter_reaches_the_page_and_its_prose(tmp_path):
    changes = dict(parallelism=3, functions=["sphere"], dim=50, iterations=6)
    context = {report.ENV_OVERRIDES: json.dumps(changes)}
    outcome = book.execute_chapter(ROOT, "synthetic", _parameters(**changes), timeout=600, output_dir=tmp_path,
                                   context=context)
    assert outcome.error is None
    notebook = nbformat.read(tmp_path / "synthetic.ipynb", as_version=4)
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    markdown = " ".join("".join(o["data"].get("text/markdown", "")) for o in outputs if "data" in o)
    assert "`parallelism = 3`" in markdown and "`dim = 50`" in markdown
    glued = {o["metadata"]["scrapbook"]["name"]: o["data"] for o in outputs
             if o.get("metadata", {}).get("scrapbook")}
    assert glued["synthetic-n"]["application/papermill.record/text/plain"] == "3"
    assert float(glued["synthetic-sqrt-n"]["application/papermill.record/text/plain"]) == pytest.approx(3 ** 0.5)


def _glued(notebook):
    """Glue key -> the text a page's prose pastes for it."""
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    return {o["metadata"]["scrapbook"]["name"]: o["data"] for o in outputs if o.get("metadata", {}).get("scrapbook")}


def test_a_changed_parameter_reaches_the_rl_page_and_its_prose(tmp_path):
    changes = dict(parallelism=3)
    context = {report.ENV_OVERRIDES: json.dumps(changes)}
    outcome = book.execute_chapter(ROOT, "fig3", _parameters(**changes), timeout=600, output_dir=tmp_path,
                                   context=context)
    assert outcome.error is None
    notebook = nbformat.read(tmp_path / "fig3.ipynb", as_version=4)
    markdown = " ".join("".join(o["data"].get("text/markdown", "")) for c in notebook.cells
                        for o in c.get("outputs", []) if "data" in o)
    assert "`parallelism = 3`" in markdown
    glued = {k: v["application/papermill.record/text/plain"] for k, v in _glued(notebook).items()
             if "application/papermill.record/text/plain" in v}
    assert glued["rl-N"] == "3" and glued["rl-history-updates"] == str(-(-50 // 3))
    assert glued["rl-seeds"] == "2" and glued["rl-t-quantile"] == "'12.71'"  # the quick profile's two seeds
    assert glued["rl-profile"] == "'quick'" and not glued["rl-compute"].startswith("'0 ")  # never "0 min"


# ----------------------------------------------------------------------------------------- page defects
def _soup(html):
    from bs4 import BeautifulSoup

    return BeautifulSoup(html, "html.parser")


def test_page_checks_find_each_class_of_defect():
    page = _soup("""<html><head><title>Acceleration against \\(N\\)</title></head><body>
      <nav><a href="x.html">Speedup with $N$</a></nav>
      <a class="btn" href="https://github.com/OWNER/optex">repo</a>
      <main><figure id="t1"><table><tr><td>1</td></tr></table></figure>
      <table><tr><th>speedup_low</th></tr><tr><td>14.400000</td></tr></table></main></body></html>""")
    problems = " | ".join(book.page_problems(page))
    for expected in ("table in figure 't1'", "without a numbered caption", "named like code: 'speedup_low'",
                     "unrounded numbers, e.g. '14.400000'", "dead button", "raw TeX in <title>",
                     "raw TeX in the navigation"):
        assert expected in problems
    good = _soup("""<html><head><title>Acceleration against N</title></head><body><main>
      <table id="tab-a"><caption><span class="caption-number">Table 1 </span>Speedups</caption>
      <tr><th>Speedup (95% interval)</th></tr><tr><td>4.86 [4.81, 4.90]</td></tr></table></main></body></html>""")
    assert book.page_problems(good) == []


def test_prose_checks_find_raw_markup_equal_ranges_zero_durations_and_wide_tables():
    row = "<tr>" + "".join(f"<th>c{i}</th>" for i in range(8)) + "</tr>"
    page = _soup(f"""<html><body><main>
      <p>- <strong>MNIST</strong>: OptEx 2.1× effective speedup at $T$</p>
      <p>The error falls as \\(T^{{-1}}\\) here.</p>
      <p>Across the functions $a$ lies between 4.00 and 4.00.</p>
      <p>The runs took 0 minutes in all, or 0.0 hours.</p>
      <table id="r"><caption><span class="caption-number">Table 2 </span>x</caption><tr><td>21.0 [-42.5, 84.5]</td></tr>
      </table><p>MountainCar returns -200 on every episode.</p>
      <table id="t"><caption><span class="caption-number">Table 1 </span>x</caption>{row}</table>
      </main></body></html>""")
    problems = " | ".join(book.prose_problems(page))
    for expected in ("a Markdown list shown as text", "raw math delimiter in the text '- MNIST",
                     "raw math delimiter in the text 'The error falls", "equal ends 'between 4.00 and 4.00'",
                     "took 0 minutes'", "0.0 hours'", "a table of 8 columns", "[-42.5, 84.5",
                     "MountainCar returns -200 on"):
        assert expected in problems, expected
    assert problems.count("a hyphen as a minus sign") == 2
    good = _soup("""<html><body><main>
      <p>OptEx at <span class="math notranslate nohighlight">\\(T\\)</span> costs <code>$HOME</code>.</p>
      <ul><li><p><strong>MNIST</strong>: OptEx 2.1×</p></li></ul>
      <p>Across the functions a lies between 4 and 4.5, in 12 s, or 10 minutes (0.2 h is not zero).</p>
      <p>MountainCar-v0 returns −200 [−200, −198] in 2026-12-02's run, <code>-p seeds=-1</code>.</p>
      <dl><dt class="sig sig-object py">Config(init_low = -1.0)</dt><dd><p>A config.</p></dd></dl>
      <div class="cell_input"><pre>x = "$T$"</pre></div></main></body></html>""")
    assert book.prose_problems(good) == []


def test_every_data_file_a_page_names_is_a_link_to_it_in_the_site(tmp_path):
    page = tmp_path / "book" / "_executed" / "fig2"
    page.parent.mkdir(parents=True)
    (tmp_path / "_downloads" / "ab12").mkdir(parents=True)
    (tmp_path / "_downloads" / "ab12" / "fig2.csv").write_text("iteration,gap\n0,1.0\n")
    linked = ('<a class="reference download internal" download="" href="../../_downloads/ab12/fig2.csv">'
              '<code class="xref download docutils literal notranslate"><span class="pre">fig2.csv</span></code></a>')
    good = _soup(f"""<html><body><main><figcaption>Data: {linked}.</figcaption>
      <div class="cell_input"><pre>frame.to_csv("scratch.csv")</pre></div></main></body></html>""")
    assert book.download_problems(good, page) == []
    named = _soup("<html><body><main><figcaption>Data: <code>fig6.csv</code>.</figcaption></main></body></html>")
    assert book.download_problems(named, page) == ["names the data file fig6.csv without a link to it: write it as "
                                                   "{download}`fig6.csv <figures/fig6.csv>`"]
    dead = _soup(f"<html><body><main><p>{linked.replace('ab12', 'cd34')}</p></main></body></html>")
    assert book.download_problems(dead, page) == ["links the data file fig2.csv to a file the built site does not hold"]


def test_every_caption_that_names_a_data_file_links_it_with_the_download_role():
    import re

    for source in sorted((ROOT / "notebooks").glob("*.py")):
        text = re.sub(r"\n# ?", " ", source.read_text())  # the jupytext comment markers of Markdown lines
        for name in re.findall(r"(?<![\w./<-])[\w-]+\.csv\b", text):
            assert f"{{download}}`{name} <figures/{name}>`" in text, f"{source.name} names {name} without a link"


def test_check_reports_figures_wider_than_the_text(built):
    Image.new("RGB", (1600, 300)).save(built / "book" / "_executed" / "figures" / "fig-a.png")
    assert any("text width" in p for p in book.check_html(built))


def test_check_reports_a_quick_build_over_budget(built):
    record = {"notebooks": {"ch": dict(status="ok", seconds=book.QUICK_BUDGET_S + 1, profile="quick")}}
    (built / book.STATUS_RECORD).write_text(json.dumps(record))
    assert any("over the" in p for p in book.check_html(built))


def _book_extension():
    import importlib.util

    spec = importlib.util.spec_from_file_location("optex_book", ROOT / "book" / "_ext" / "optex_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_block_markdown_glued_alone_in_a_paragraph_becomes_blocks():
    from docutils import nodes
    from docutils.frontend import get_default_settings
    from docutils.utils import new_document

    extension = _book_extension()
    assert extension.is_block_markdown("- **MNIST**: 2.1×\n- **CIFAR-10**: 1.2×")
    assert extension.is_block_markdown("One reading.\n\nAnother.")
    assert not extension.is_block_markdown("OptEx − Vanilla at $T$ is 4.2 (2 of 3 seeds)")
    document = new_document("page", get_default_settings())

    def pasted():
        holder = nodes.container(classes=[extension.BLOCK_PASTE], glue_key="reading")
        holder += nodes.bullet_list("", nodes.list_item("", nodes.paragraph(text="MNIST")))
        return holder

    document += nodes.paragraph("", "", pasted())
    document += nodes.paragraph("", "", nodes.Text("In short: "), pasted())
    warnings = []
    extension.logger.warning = lambda message, *args, **kwargs: warnings.append(message % args)
    extension._lift_block_pastes(None, document)
    assert [type(n).__name__ for n in document.children] == ["bullet_list", "paragraph", "bullet_list"]
    assert len(warnings) == 1 and "reading" in warnings[0] and "inside a sentence" in warnings[0]

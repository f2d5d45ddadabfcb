"""Chapter notebooks narrate in short cells: the code that builds configs, figures and tables lives in the
library, so a chapter holds at most MAX_CODE_LINES lines of code (comments and blank lines not counted)."""
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_CODE_LINES = 40
# Every chapter but own_loop, the tutorial whose code is its content (a user's loop, plain and with OptEx,
# checkpoint and resume, the JAX version): its code lines are what the page teaches.
THIN = ["mnist", "fig4a", "fig4b", "fig3", "thm1", "estimator", "fig1", "scaling", "synthetic", "fig2", "fig6",
        "cor2"]


def code_lines(text: str) -> int:
    """Lines of code in the code cells of a jupytext percent-format notebook ``text``: neither blank nor
    a comment."""
    notebook = jupytext.reads(text, fmt="py:percent")
    return sum(1 for cell in notebook.cells if cell.cell_type == "code" for line in cell.source.splitlines()
               if line.strip() and not line.lstrip().startswith("#"))


def test_code_lines_count_code_cells_only_without_comments_or_blank_lines():
    text = ('# %% [markdown]\n# Prose\n# x = 1\n\n'
            '# %% tags=["parameters"]\nprofile = "paper"  # a comment after code\n\n# a comment\n'
            '# %%\nfigure = make(\n    1)\n')
    assert code_lines(text) == 3


@pytest.mark.parametrize("name", THIN)
def test_a_chapter_notebook_holds_few_lines_of_code(name):
    count = code_lines((ROOT / "notebooks" / f"{name}.py").read_text())
    assert count <= MAX_CODE_LINES, f"notebooks/{name}.py holds {count} lines of code (at most {MAX_CODE_LINES})"


@pytest.mark.parametrize("name", THIN)
def test_readings_are_pasted_as_blocks_not_inline(name):
    # The {glue:md} role renders its Markdown inline: a list runs together and a fenced block becomes inline
    # code. Readings (lists, paragraphs, code blocks) are pasted with the ```{glue:md} directive instead.
    text = (ROOT / "notebooks" / f"{name}.py").read_text()
    assert "{glue:md}`" not in text


def test_every_chapter_but_the_tutorial_is_held_to_the_limit():
    chapters = {p.stem for p in (ROOT / "notebooks").glob("*.py")}
    assert chapters - set(THIN) == {"own_loop"}

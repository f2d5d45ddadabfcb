"""Sphinx extension of the optex book.

- MathJax 3 is served from the built book when npm has installed it under ``node_modules/`` (done by
  ``python -m optex book build``), so the book typesets math offline; otherwise pages load it from
  Sphinx's default CDN address.
- The repository URL has one source: ``repository.url`` in ``_config.yml``, overridden by the
  environment (``OPTEX_REPOSITORY_URL``, or the repository being built in GitHub Actions). Without one,
  the repository and Binder buttons are hidden: never a link to a placeholder.
- ``<title>`` is plain text (a heading's ``$N$`` becomes ``N``), and MathJax is loaded on every page, so
  that math in the navigation (a chapter titled with ``$N$``) is typeset on pages without math of their own.
- Glued Markdown (``{glue:md}`` role and directive) is read as MyST, not CommonMark, so that ``$T$`` in a
  reading text is math; a ``{glue:md}`key``` that stands alone in a paragraph and holds block Markdown
  (a list, several paragraphs, a fenced block) is rendered as blocks in place of that paragraph, and one
  inside a sentence is a warning (the build fails): a list never shows as literal "- " lines.
- ``book/_static/optex.css``: display math and wide tables scroll sideways inside the text column
  instead of being clipped, code cells wrap.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)
STYLESHEET = "optex.css"  # in book/_static/
BLOCK_PASTE = "optex-block-paste"  # class of the container a block {glue:md} leaves until _lift_block_pastes
_BLOCK_MARKDOWN = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s|\n\s*\n|^\s*(?:```|:::|#+\s)", re.MULTILINE)

MATHJAX = Path("node_modules") / "mathjax" / "es5"
ENTRY = "tex-mml-chtml.js"
STATIC = "mathjax"  # under _static/ in the built HTML
# What the CommonHTML component may load lazily (fonts, TeX extensions, menu, accessibility).
LAZY = ("a11y", "adaptors", "input", "output", "sre", "ui")


def _configure(app: Sphinx, config: Config) -> None:
    config.html_static_path = [*config.html_static_path, str(Path(__file__).resolve().parents[1] / "_static")]
    source = Path(app.confdir) / MATHJAX
    if (source / ENTRY).is_file():
        config.mathjax_path = f"{STATIC}/{ENTRY}"
        app.connect("build-finished", _copy_mathjax)
    else:
        logger.info("optex_book: no MathJax under %s; pages load it from %s", MATHJAX, config.mathjax_path)
    options = dict(config.html_theme_options or {})
    url = repository_url(options.get("repository_url"))
    if url:
        options.update(repository_url=url, use_repository_button=True)
    else:
        options.update(use_repository_button=False, use_issues_button=False, use_edit_page_button=False,
                       repository_url="")
        options["launch_buttons"] = {}
    config.html_theme_options = options


def repository_url(configured: str | None) -> str | None:
    """The repository's URL: ``OPTEX_REPOSITORY_URL``, else GitHub Actions' repository, else the
    configured one; None when none is set (or it is the placeholder ``OWNER``)."""
    server, repository = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    url = os.environ.get("OPTEX_REPOSITORY_URL") or (f"{server}/{repository}" if server and repository else configured)
    return url if url and "OWNER" not in url else None


def _plain_titles(app: Sphinx, doctree) -> None:
    """Math in a page title becomes its plain text in the navigation and ``<title>``."""
    from docutils import nodes

    docname = app.env.docname
    title = app.env.titles.get(docname)
    if title is not None and title.next_node(nodes.math) is not None:
        app.env.titles[docname] = nodes.title(text=_tex_to_text(title.astext()))
        app.env.longtitles[docname] = app.env.titles[docname]


def _tex_to_text(text: str) -> str:
    import re

    text = re.sub(r"\\(?:mathrm|mathbf|text|operatorname)\{([^}]*)\}", r"\1", text)
    replacements = {r"\sqrt": "√", r"\theta": "θ", r"\mu": "μ", r"\Sigma": "Σ", r"\eta": "η", r"\,": " ",
                    "{": "", "}": "", "\\": ""}
    for tex, plain in replacements.items():
        text = text.replace(tex, plain)
    return text


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source, target = Path(app.confdir) / MATHJAX, Path(app.outdir) / "_static" / STATIC
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / ENTRY, target / ENTRY)
    for folder in LAZY:
        if (source / folder).is_dir():
            shutil.copytree(source / folder, target / folder, dirs_exist_ok=True)


def is_block_markdown(text: str) -> bool:
    """Whether Markdown ``text`` needs block parsing: a list item, a blank line between paragraphs, a
    fenced block, a directive or a heading."""
    return bool(_BLOCK_MARKDOWN.search(text))


def _glue_roles():
    """The ``{glue:md}`` role and directive with MyST as the default format, the role block-aware."""
    from docutils import nodes
    from myst_nb.core.render import MimeData
    from myst_nb.core.variables import RetrievalError
    from myst_nb.ext.glue.directives import PasteMarkdownDirective
    from myst_nb.ext.glue.roles import PasteMarkdownRole
    from myst_nb.ext.glue.utils import glue_warning, retrieve_glue_data

    class MarkdownRole(PasteMarkdownRole):
        def run(self):
            key, _, fmt = self.text.rpartition(":") if ":" in self.text else (self.text, "", "")
            fmt = fmt or "myst"
            try:
                result = retrieve_glue_data(self.document, key)
            except RetrievalError as exc:
                return [], [glue_warning(str(exc), self.document, self.line)]
            text = result.data.get("text/markdown")
            if text is None:
                return [], [glue_warning(f"No text/markdown found in {key!r} data", self.document, self.line)]
            cell_key = result.nb_renderer.renderer.nb_config.cell_metadata_key
            mime = MimeData("text/markdown", text, cell_metadata={cell_key: {"markdown_format": fmt}},
                            output_metadata=result.metadata, line=self.line)
            if not is_block_markdown(text):
                pasted = result.nb_renderer.render_markdown_inline(mime)
                for node in pasted:
                    self.set_source_info(node)
                return pasted, []
            holder = nodes.container(classes=[BLOCK_PASTE], glue_key=key)
            holder += result.nb_renderer.render_markdown(mime)
            self.set_source_info(holder)
            return [holder], []

    class MarkdownDirective(PasteMarkdownDirective):
        def run(self):
            self.options.setdefault("format", "myst")
            return super().run()

    return MarkdownRole(), MarkdownDirective


def _lift_block_pastes(app: Sphinx, doctree) -> None:
    """A paragraph that is only a block ``{glue:md}`` becomes those blocks; one that also holds text is
    a warning (block Markdown cannot sit inside a sentence), its blocks left after the paragraph."""
    from docutils import nodes

    for holder in list(doctree.findall(lambda n: isinstance(n, nodes.container) and BLOCK_PASTE in n["classes"])):
        paragraph = holder.parent
        if not isinstance(paragraph, nodes.paragraph):
            holder.replace_self(holder.children)
            continue
        others = [c for c in paragraph.children if c is not holder]
        if any(c.astext().strip() for c in others):
            logger.warning("{glue:md}`%s` holds a list or several paragraphs but sits inside a sentence: give it a "
                           "paragraph of its own", holder["glue_key"], location=paragraph)
            paragraph.remove(holder)
            paragraph.parent.insert(paragraph.parent.index(paragraph) + 1, holder.children)
        else:
            paragraph.replace_self(holder.children)


def _register_glue(app: Sphinx, config: Config) -> None:
    """After every extension's setup (myst_nb adds the glue domain), before the domains are made."""
    role, directive = _glue_roles()
    app.add_role_to_domain("glue", "md", role, override=True)
    app.add_directive_to_domain("glue", "md", directive, override=True)


def setup(app: Sphinx) -> dict[str, object]:
    app.set_html_assets_policy("always")
    app.connect("config-inited", _configure)
    app.connect("config-inited", _register_glue)
    app.connect("doctree-read", _plain_titles)
    app.connect("doctree-read", _lift_block_pastes)
    app.add_css_file(STYLESHEET)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""Sphinx extension of the optex book.

- MathJax 3 is served from the built book when npm has installed it under ``node_modules/`` (done by
  ``python -m optex book build``), so the book typesets math offline; otherwise pages load it from
  Sphinx's default CDN address.
- The repository URL has one source: ``repository.url`` in ``_config.yml``, overridden by the
  environment (``OPTEX_REPOSITORY_URL``, or the repository being built in GitHub Actions). Without one,
  the repository and Binder buttons are hidden: never a link to a placeholder.
- ``<title>`` is plain text (a heading's ``$N$`` becomes ``N``), and MathJax is loaded on every page, so
  that math in the navigation (a chapter titled with ``$N$``) is typeset on pages without math of their own.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)

MATHJAX = Path("node_modules") / "mathjax" / "es5"
ENTRY = "tex-mml-chtml.js"
STATIC = "mathjax"  # under _static/ in the built HTML
# What the CommonHTML component may load lazily (fonts, TeX extensions, menu, accessibility).
LAZY = ("a11y", "adaptors", "input", "output", "sre", "ui")


def _configure(app: Sphinx, config: Config) -> None:
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


def setup(app: Sphinx) -> dict[str, object]:
    app.set_html_assets_policy("always")
    app.connect("config-inited", _configure)
    app.connect("doctree-read", _plain_titles)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

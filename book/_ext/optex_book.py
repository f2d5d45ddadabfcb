"""Sphinx extension of the optex book.

- MathJax 3 is served from the built book when npm has installed it under ``node_modules/`` (done by
  ``python -m optex book build``), so the book typesets math offline; otherwise pages load it from
  Sphinx's default CDN address.
- Built in GitHub Actions, the repository and launch buttons point at the repository being built.
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
    server, repository = os.environ.get("GITHUB_SERVER_URL"), os.environ.get("GITHUB_REPOSITORY")
    if server and repository:
        options = dict(config.html_theme_options or {})
        options["repository_url"] = f"{server}/{repository}"
        config.html_theme_options = options


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
    app.connect("config-inited", _configure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

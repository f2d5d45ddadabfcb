"""A reader's check: one chapter of the built book, opened in headless Chromium, shows its figures
and typesets its math.

Runs after ``python -m optex book build`` (``make test`` does this last); skips with a message when the
book is not built or no Chromium is installed (``.ci/run`` installs Debian's ``chromium``).
"""
import functools
import os
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
from bs4 import BeautifulSoup

from optex import book

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "book/_executed/synthetic.html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser():
    candidates = [os.environ.get("OPTEX_CHROMIUM")] + [shutil.which(name) for name in BROWSERS]
    return next((c for c in candidates if c and Path(c).is_file()), None)


class RecordingHandler(SimpleHTTPRequestHandler):
    """Serves the built book and records every request's path and status."""

    def __init__(self, *args, log, **kwargs):
        self.log = log
        super().__init__(*args, **kwargs)

    def log_request(self, code="-", size="-"):
        self.log.append((urlparse(self.path).path, int(code)))

    def log_message(self, format, *args):
        pass


@pytest.fixture
def server():
    log = []
    handler = functools.partial(RecordingHandler, directory=str(ROOT / book.HTML), log=log)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", log
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_a_chapter_shows_its_figures_and_typesets_its_math(server, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no Chromium found ({', '.join(BROWSERS)} on PATH, or OPTEX_CHROMIUM): "
                    "install Debian's chromium to run the reader's check")
    if not (ROOT / book.HTML / CHAPTER).is_file():
        pytest.skip(f"the book is not built ({book.HTML / CHAPTER} missing): run `python -m optex book build`")
    base, log = server
    url = urljoin(base, CHAPTER)
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=30000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = BeautifulSoup(done.stdout, "html.parser")
    served = dict(log)

    ids = set(book.figure_ids(ROOT))
    figures = [f for f in dom.find_all("figure") if f.get("id") in ids]
    assert figures, f"{CHAPTER} shows none of the saved figures {sorted(ids)}"
    for figure in figures:
        images = figure.find_all("img")
        assert images, f"figure {figure['id']} has no image"
        for image in images:
            path = urlparse(urljoin(url, image["src"])).path
            assert served.get(path) == 200, f"figure {figure['id']}: the browser did not load {path}"
            assert (ROOT / book.HTML / path.lstrip("/")).read_bytes()[:4] in (b"\x89PNG", b"<?xm", b"<svg")

    maths = dom.select(".math")
    assert maths, f"{CHAPTER} has no math to typeset"
    raw = [m.get_text()[:60] for m in maths if m.find("mjx-container") is None]
    assert not raw, f"MathJax did not typeset {len(raw)} of {len(maths)} formulas, e.g. {raw[0]!r}"
    if (ROOT / book.MATHJAX_ENTRY).is_file():
        assert served.get("/_static/mathjax/tex-mml-chtml.js") == 200, "MathJax was not served by the book"

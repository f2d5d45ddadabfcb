"""The book's MathJax: one exact version, locked, installed with `npm ci`, and a CDN fallback offline."""
import json
import os
import stat
from pathlib import Path

from optex import book

ROOT = Path(__file__).resolve().parent.parent


def test_mathjax_is_pinned_exactly_and_locked():
    assert book.pinned_mathjax(ROOT) == "3.2.2"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/mathjax"]
    assert locked["version"] == "3.2.2" and locked["integrity"].startswith("sha512-")
    assert lock["packages"][""]["dependencies"] == {"mathjax": "3.2.2"}


def _project(tmp_path):
    for name in ("package.json", "package-lock.json"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    return tmp_path


def _fake_npm(tmp_path, version, fail=False):
    """An `npm` that records its arguments and 'installs' MathJax ``version`` (no network), or fails
    as npm does offline."""
    script = tmp_path / "bin" / "npm"
    script.parent.mkdir()
    entry = tmp_path / book.MATHJAX_ENTRY
    failure = "echo 'npm error network request failed' >&2; exit 1" if fail else ""
    script.write_text(f"""#!/bin/sh
echo "$@" > {tmp_path / 'npm-args'}
{failure}
mkdir -p {entry.parent}
touch {entry}
echo '{{"version": "{version}"}}' > {entry.parents[1] / 'package.json'}
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script.parent


def test_npm_ci_installs_the_locked_version(tmp_path, monkeypatch):
    root = _project(tmp_path)
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, '3.2.2')}{os.pathsep}{os.environ['PATH']}")
    assert book.ensure_mathjax(root)
    assert (tmp_path / "npm-args").read_text().split()[0] == "ci"
    (tmp_path / "npm-args").unlink()
    assert book.ensure_mathjax(root) and not (tmp_path / "npm-args").exists()  # installed: npm not run again


def test_another_version_is_never_served(tmp_path, monkeypatch):
    root = _project(tmp_path)
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, '3.0.0')}{os.pathsep}{os.environ['PATH']}")
    assert not book.ensure_mathjax(root)  # npm ran, but what it left is not the pinned version


def test_offline_npm_falls_back_to_the_cdn_with_a_warning(tmp_path, monkeypatch, capsys):
    root = _project(tmp_path)
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, '3.2.2', fail=True)}{os.pathsep}{os.environ['PATH']}")
    assert not book.ensure_mathjax(root)
    assert "npm ci could not install MathJax 3.2.2 (npm error network request failed)" in capsys.readouterr().err


def test_without_npm_the_book_uses_the_cdn(tmp_path, monkeypatch):
    root = _project(tmp_path)
    monkeypatch.setattr(book.shutil, "which", lambda name: None)
    assert not book.ensure_mathjax(root)

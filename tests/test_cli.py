"""The command line: every bad option is one line ``error: ...`` and exit status 2, before any work;
results go to a git-ignored folder unless a maintainer refreshes the committed ones on purpose."""
import argparse
from pathlib import Path

import pytest
import torch

from optex import cli, results
from optex.experiments import synthetic

TINY = ["--function", "sphere", "--dim", "20", "--iterations", "4", "--seeds", "2", "--history", "10",
        "--methods", "vanilla,optex", "--no-progress"]


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if any unit of work starts."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a unit was computed although the options were bad")

    monkeypatch.setattr(synthetic, "run_unit", forbidden)


def _exit_code(argv):
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code


def _one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("device, named", [("cuda", "CUDA"), ("mps", "MPS")])
def test_an_absent_device_is_refused_naming_the_devices_there(tmp_path, capsys, no_work, device, named):
    if device == "cuda" and torch.cuda.is_available() or device == "mps" and torch.backends.mps.is_available():
        pytest.skip(f"this machine has {device}")
    assert _exit_code(["run", "synthetic", *TINY, "--device", device, "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys)
    assert named in line and "available to the torch backend here: cpu" in line
    assert not any(tmp_path.rglob("*.csv"))


@pytest.mark.parametrize("options, named", [
    (["--optimizer", "lbfgs"], "optimizer"),
    (["--momentum", "0.9"], "momentum"),  # with the default optimizer, adam
    (["--parallelism", "0"], "parallelism"),
    (["--dim", "abc"], "--dim: expected an integer, got 'abc'"),
    (["--lr", "fast"], "--lr: expected a number, got 'fast'"),
    (["--seeds", "1,a"], "--seeds"),
    (["--clip", "maybe"], "--clip: 'maybe' is not a value of type float | None"),
    (["--methods", "vanilla,magic"], "methods"),
    (["--methods", ""], "methods"),
    (["--warmup-pairs", "3"], "warmup_pairs"),
    (["--select", "best"], "select"),
    (["--no-such-option", "1"], "unrecognized arguments: --no-such-option"),
])
def test_a_bad_value_is_one_error_line_naming_the_option(tmp_path, capsys, no_work, options, named):
    assert _exit_code(["run", "synthetic", *TINY, *options, "--out", str(tmp_path)]) == 2
    assert named in _one_error_line(capsys)


def test_bad_figure_options_are_caught_the_same_way(tmp_path, capsys, no_work):
    assert _exit_code(["run", "fig2", "--panels", "sphere,himmelblau", "--out", str(tmp_path)]) == 2
    assert "panels" in _one_error_line(capsys)
    assert _exit_code(["run", "fig6", "--histories", "5,0", "--out", str(tmp_path)]) == 2
    assert "histories" in _one_error_line(capsys)


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys, no_work):
    target = tmp_path / "results.csv"
    target.write_text("x\n")
    assert _exit_code(["run", "synthetic", *TINY, "--out", str(target)]) == 2
    assert "is a file" in _one_error_line(capsys)
    assert _exit_code(["run", "synthetic", *TINY, "--out", str(target / "sub")]) == 2
    assert "not a writable folder" in _one_error_line(capsys)


def test_an_out_that_cannot_be_written_is_refused(capsys, no_work):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, where no one can create a folder")
    assert _exit_code(["run", "synthetic", *TINY, "--out", "/proc/optex-results"]) == 2
    assert "/proc/optex-results is not a writable folder" in _one_error_line(capsys)


def test_results_default_to_the_git_ignored_local_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "synthetic", *TINY]) == 0
    assert any((tmp_path / "results" / "_local" / "synthetic").glob("*/optex-seed1.csv"))
    gitignore = (Path(__file__).resolve().parent.parent / ".gitignore").read_text().splitlines()
    assert "/results/_*/" in gitignore


def test_the_committed_results_need_an_explicit_refresh_from_a_clean_commit(tmp_path, monkeypatch, capsys):
    committed = tmp_path / "results"
    monkeypatch.setattr(results, "COMMITTED_DIR", committed)
    assert _exit_code(["run", "synthetic", *TINY, "--out", str(committed)]) == 2
    assert "--refresh-committed" in _one_error_line(capsys)
    monkeypatch.setattr(results, "git_commit", lambda cwd=None: "abc123+dirty")
    assert _exit_code(["run", "synthetic", *TINY, "--out", str(committed), "--refresh-committed"]) == 2
    assert "clean commit" in _one_error_line(capsys)
    assert not committed.exists()
    monkeypatch.setattr(results, "git_commit", lambda cwd=None: "abc123")
    assert cli.main(["run", "synthetic", *TINY, "--out", str(committed), "--refresh-committed"]) == 0
    assert any(committed.glob("synthetic/*/optex-seed0.csv"))
    # A git-ignored folder under results/ is not the committed results.
    assert cli.main(["run", "synthetic", *TINY, "--out", str(committed / "_mine")]) == 0


def test_a_run_reports_the_paper_metric_and_the_effective_speedup(tmp_path, capsys):
    assert cli.main(["run", "synthetic", *TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Paper's metric" in out and "Effective speedup" in out and "effective_speedup" in out
    assert any(tmp_path.glob("synthetic/*/vanilla_long-seed1.csv"))


@pytest.mark.parametrize("hint, text, value", [
    ("int | tuple[int, ...]", "3", 3), ("int | tuple[int, ...]", "1,2", (1, 2)), ("float | None", "none", None),
    ("float | None", "1e-3", 1e-3), ("float | str", "auto", "auto"), ("float | str", "0.5", 0.5),
    ("tuple[str, ...]", "vanilla", ("vanilla",)), ("bool", "yes", True), ("bool", "false", False),
    ("tuple[float, ...]", "0.1,0.2", (0.1, 0.2)), ("str | None", "none", None),
])
def test_field_types_parse_by_their_annotation(hint, text, value):
    assert cli._parser_for(hint)(text) == value


def test_a_bad_boolean_and_an_unknown_type_are_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false"):
        cli._parser_for("bool")("maybe")
    with pytest.raises(TypeError, match="dict"):
        cli._parser_for("dict[str, int]")

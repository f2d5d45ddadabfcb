"""`python -m optex book verify`: committed results recomputed (a prefix) with today's code, the
record the book reads, and what `book check` enforces for the paper profile."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from optex import book, report, results, verify
from optex.cli import main
from optex.experiments import synthetic, thm1

CONFIG = synthetic.Config(function="sphere", dim=40, iterations=8, seeds=2, history=10,
                          methods=("vanilla", "linesearch", "optex"))


@pytest.fixture
def committed(tmp_path):
    """A repository root whose committed results/ holds one configuration made by today's code."""
    synthetic.run(CONFIG, results_dir=tmp_path / "results", figure_id="demo", progress=False, commit="c0ffee")
    store = results.ResultStore(tmp_path / "results", "demo", CONFIG)
    return tmp_path, store


def _entry(root, store):
    return verify.verify_configuration(store.dir, root)


def test_results_made_by_todays_code_pass(committed):
    root, store = committed
    entry = _entry(root, store)
    assert entry["status"] == "passed", entry["reason"]
    assert (entry["figure_id"], entry["hash"], entry["path"]) == ("demo", store.key, f"results/demo/{store.key}")
    # One seed per method, the cold start and two proxy iterations, and the long reference's start.
    assert entry["checked"] == [dict(unit=f"{m}-seed0", rows=4) for m in (*CONFIG.methods, "vanilla_long")]
    assert not entry["dirty"] and entry["commits"] == ["c0ffee"]


def test_the_prefix_includes_proxy_iterations():
    prefixes = {p.unit: p for p in synthetic.verification(CONFIG)}
    optex = prefixes["optex-seed0"].compute()
    assert optex["evaluations"].diff().tolist()[1:] == [1, CONFIG.parallelism, CONFIG.parallelism]
    old_rule = synthetic.verification(replace(CONFIG, warmup_pairs=2))
    assert len(old_rule[0].compute()) == 5  # two cold iterations, then two proxy iterations


def test_a_change_of_the_computation_fails_naming_the_column_and_iteration(committed, monkeypatch):
    root, store = committed
    original = synthetic.run_unit

    def changed(config, method, seed, *args):
        frame = original(config, method, seed, *args)
        if method == "linesearch":
            frame.loc[frame.iteration == 2, "gap"] *= 1.01  # what a changed proxy rule would do
        return frame

    monkeypatch.setattr(synthetic, "run_unit", changed)
    entry = _entry(root, store)
    assert entry["status"] == "failed"
    assert entry["reason"].startswith("linesearch-seed0: column gap, iteration 2: committed ")


def test_rounding_differences_between_cpus_are_within_the_tolerance(committed, monkeypatch):
    root, store = committed
    original = synthetic.run_unit
    monkeypatch.setattr(synthetic, "run_unit", lambda c, m, s, *a: original(c, m, s, *a).assign(
        gap=lambda f: f["gap"] * (1 + 3e-6), wall_time=0.0))
    assert _entry(root, store)["status"] == "passed"


def _record_instructions(store, value):
    """Rewrite the manifest as if every unit had been made on a CPU with instructions ``value``."""
    manifest = store.manifest()
    for record in manifest["units"].values():
        record["instructions"] = value
    store._manifest_path().write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def test_units_record_the_cpu_instructions_and_the_same_cpu_is_held_to_the_strict_tolerance(committed, monkeypatch):
    root, store = committed
    assert {r["instructions"] for r in store.manifest()["units"].values()} == {results.cpu_instructions()}
    original = synthetic.run_unit
    monkeypatch.setattr(synthetic, "run_unit", lambda c, m, s, *a: original(c, m, s, *a).assign(
        lengthscale=lambda f: f["lengthscale"] * (1 + 5e-4)))
    entry = _entry(root, store)
    assert entry["instructions"]["same"] and entry["status"] == "failed"
    assert "column lengthscale" in entry["reason"]


def test_on_other_cpu_instructions_diagnostics_are_measured_and_the_rest_held_to_the_cross_tolerance(
        committed, monkeypatch):
    root, store = committed
    _record_instructions(store, "GenuineIntel AVX512")
    original = synthetic.run_unit
    # What another instruction set did to the committed text runs: a neighbouring lengthscale candidate
    # (0.29 relative) and the loss 1.7e-4 off.
    monkeypatch.setattr(synthetic, "run_unit", lambda c, m, s, *a: original(c, m, s, *a).assign(
        lengthscale=lambda f: f["lengthscale"] * 1.29, gap=lambda f: f["gap"] * (1 + 1.7e-4)))
    entry = _entry(root, store)
    assert entry["status"] == "passed", entry["reason"]
    assert entry["instructions"] == {"recorded": ["GenuineIntel AVX512"], "here": results.cpu_instructions(),
                                     "same": False}
    assert entry["spread"]["lengthscale"] == pytest.approx(0.29)
    monkeypatch.setattr(synthetic, "run_unit", lambda c, m, s, *a: original(c, m, s, *a).assign(
        gap=lambda f: f["gap"] * (1 + 5e-3)))  # beyond rounding: a changed computation still fails
    entry = _entry(root, store)
    assert entry["status"] == "failed" and "column gap" in entry["reason"]


def test_units_made_before_instructions_were_recorded_count_as_another_cpu(committed):
    root, store = committed
    _record_instructions(store, None)
    entry = _entry(root, store)
    assert entry["status"] == "passed" and entry["instructions"]["recorded"] == ["unrecorded"]
    assert not entry["instructions"]["same"]


def test_cpu_instructions_name_the_vendor_and_the_widest_vector_set():
    assert results.cpu_instructions("vendor_id\t: GenuineIntel\nflags\t\t: fpu sse4_2 avx avx2 avx512f\n"
                                    "vendor_id\t: GenuineIntel\n") == "GenuineIntel AVX512"
    assert results.cpu_instructions("vendor_id : AuthenticAMD\nflags : fpu avx avx2 fma\n") == "AuthenticAMD AVX2"


def test_a_damaged_committed_file_is_reported_as_such(committed):
    root, store = committed
    path = store.dir / "optex-seed1.csv"
    path.write_text(path.read_text().replace("sphere", "spher", 1))
    entry = _entry(root, store)
    assert entry["status"] == "damaged" and entry["reason"].startswith("optex-seed1.csv does not match the checksum")


def test_gpu_made_results_are_verified_only_where_the_device_is(committed, monkeypatch):
    root, store = committed
    manifest = json.loads((store.dir / "manifest.json").read_text())
    for record in manifest["units"].values():
        record["device"] = "cuda"
    (store.dir / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(verify, "_available", lambda device, backend: device == "cpu")
    entry = _entry(root, store)
    assert (entry["status"], entry["devices"]) == ("skipped", ["cuda"])
    assert entry["reason"] == "made on cuda; no cuda device here"


def test_results_that_cannot_be_rebuilt_are_unverifiable(committed):
    root, store = committed
    manifest = json.loads((store.dir / "manifest.json").read_text())
    (store.dir / "manifest.json").write_text(json.dumps(dict(manifest, runner=None)))
    assert "records no runner" in _entry(root, store)["reason"]
    # Made before the Config gained a field: its hash did not include it, today's Config does.
    settings = {k: v for k, v in manifest["settings"].items() if k != "warmup_pairs"}
    legacy = dict(manifest, settings=settings, hash=results.config_hash(settings))
    (store.dir / "manifest.json").write_text(json.dumps(legacy))
    entry = _entry(root, store)
    assert entry["status"] == "unverifiable" and "hashes to" in entry["reason"]


def test_thm1_prefix_rows_equal_the_full_runs():
    config = thm1.Config(profile="quick", sources=("sphere", "gp-rbf"), seeds=1, queries=32)
    for prefix in thm1.verification(config):
        source = prefix.unit.removesuffix("-seed0")
        full = thm1.run_unit(config, source, 0)
        pd.testing.assert_frame_equal(prefix.compute(), full.iloc[:3])


def _publish(root, figure_id, hashes, profile="paper"):
    folder = root / verify.FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{figure_id}.json").write_text(json.dumps(dict(figure_id=figure_id, profile=profile, hashes=hashes)))


def test_book_verify_writes_the_record_and_strict_fails_on_a_failure(committed, monkeypatch, capsys):
    root, store = committed
    monkeypatch.setattr(book, "repository_root", lambda: root)
    assert main(["book", "verify", "--no-progress"]) == 0
    record = json.loads((root / verify.RECORD).read_text())
    assert [e["status"] for e in record["entries"]] == ["passed"] and record["tolerance"]["rtol"] == verify.RTOL
    assert "1 passed" in capsys.readouterr().out
    assert main(["book", "verify", "--no-progress", "--strict"]) == 0
    path = store.dir / "vanilla-seed0.csv"
    path.write_text(path.read_text() + "\n")
    assert main(["book", "verify", "--no-progress"]) == 0  # reports
    assert main(["book", "verify", "--no-progress", "--strict"]) == 1  # enforces
    assert "DAMAGED results/demo/" in capsys.readouterr().err


def test_book_check_enforces_verification_for_paper_results_only(committed, monkeypatch):
    root, store = committed
    _publish(root, "demo", [store.key], profile="quick")
    assert verify.verification_problems(root) == []  # quick results are recomputed by every build
    _publish(root, "demo", [store.key])
    assert "no verification record" in verify.verification_problems(root)[0]
    verify.run(root, progress=False)
    assert verify.verification_problems(root) == []
    monkeypatch.setattr(results, "git_commit", lambda cwd=None: "feed")
    assert "not the current feed" in verify.verification_problems(root)[0]
    monkeypatch.undo()
    record = json.loads((root / verify.RECORD).read_text())
    record["entries"][0].update(status="failed", reason="optex-seed0: column gap, iteration 2: ...")
    (root / verify.RECORD).write_text(json.dumps(record))
    assert verify.verification_problems(root) == [f"demo/{store.key}: verification failed: optex-seed0: column gap, "
                                                  "iteration 2: ..."]
    record["entries"][0].update(status="passed", dirty=True, commits=["abc+dirty"])
    (root / verify.RECORD).write_text(json.dumps(record))
    assert verify.verification_problems(root) == [f"demo/{store.key}: computed from uncommitted code (abc+dirty)"]
    _publish(root, "other", ["0123456789ab"])
    assert f"other/0123456789ab: shown by the book but not verified" in verify.verification_problems(root)


def test_a_second_figure_of_verified_results_is_verified_too(committed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, store = committed
    shown = report.Results("demo", pd.DataFrame(dict(iteration=[0, 1], gap=[1.0, 0.5])), "paper", "paper", [store])
    verify.run(root, progress=False)
    for name in (None, "demo-wallclock"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [1.0, 0.5])
        report.publish(fig, shown, directory=root / verify.FIGURES, name=name)
        plt.close(fig)
    assert sorted(p.name for p in (root / verify.FIGURES).glob("*.json")) == ["demo-wallclock.json", "demo.json"]
    assert verify.verification_problems(root) == []
    # The defect this replaces: a record under a figure id no committed result has.
    with pytest.raises(ValueError, match="publish\\(name=...\\)"):
        replace(shown, figure_id="demo-wallclock")


def test_the_page_says_verified_or_names_what_changed(committed):
    root, store = committed
    shown = report.Results("demo", pd.DataFrame(), "paper", "paper", [store])
    verify.run(root, progress=False)
    note = report.provenance_note(shown, root)
    assert "Verified against commit" in note and "changed since" not in note
    record = json.loads((root / verify.RECORD).read_text())
    record["entries"][0].update(status="failed", reason="optex-seed0: column gap, iteration 2: committed 1.0, "
                                                       "recomputed 1.5")
    (root / verify.RECORD).write_text(json.dumps(record))
    note = report.provenance_note(shown, root)
    assert "These results do not match today's code" in note
    assert f"`{store.key}` (failed): optex-seed0: column gap, iteration 2: committed 1.0, recomputed 1.5" in note
    assert "Verified against" not in note


def test_compare_treats_nan_alike_and_needs_every_row_and_column():
    prefix = verify.Prefix("u", lambda: None)
    committed = pd.DataFrame(dict(iteration=[0, 1, 2], gap=[1.0, np.nan, 0.5], method="optex"))
    assert verify.compare(committed, committed.iloc[:2], prefix) is None
    assert "rows" in verify.compare(committed.iloc[:1], committed.iloc[:2], prefix)
    assert "lacks column(s) loss" in verify.compare(committed, committed.assign(loss=1.0), prefix)
    assert "column method, iteration 0" in verify.compare(committed, committed.assign(method="target"), prefix)


def test_compare_treats_missing_text_alike_whatever_the_column_type():
    # a language model's sample: read back from CSV as object with NaN, recomputed as strings with NaN
    committed = pd.DataFrame({"iteration": [0, 1], "sample": pd.Series([np.nan, np.nan], dtype=object)})
    recomputed = pd.DataFrame({"iteration": [0, 1], "sample": pd.Series([np.nan, np.nan], dtype="str")})
    prefix = verify.Prefix("vanilla-seed0", lambda: recomputed)
    assert verify.compare(committed, recomputed, prefix) is None
    changed = committed.assign(sample=pd.Series([np.nan, "ROMEO:"], dtype=object))
    assert "column sample, iteration 1" in verify.compare(changed, recomputed, prefix)

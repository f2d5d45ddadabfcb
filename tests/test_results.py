"""optex.results: the result cache never uses a damaged file, never loses a finished unit, and
records enough to recompute a result from its manifest alone."""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optex import results
from optex.experiments import synthetic

SMALL = dict(function="sphere", dim=30, iterations=6, seeds=2, history=10, methods=("vanilla", "optex"))
ROOT = Path(__file__).resolve().parent.parent


def _counting(monkeypatch):
    calls = []
    original = synthetic.run_unit
    monkeypatch.setattr(synthetic, "run_unit", lambda c, m, s, *a: calls.append((m, s)) or original(c, m, s, *a))
    return calls


@pytest.fixture
def cached(tmp_path):
    """A computed configuration: (config, its store, the table)."""
    config = synthetic.Config(**SMALL)
    frame = synthetic.run(config, results_dir=tmp_path, progress=False)
    return config, results.ResultStore(tmp_path, synthetic.FIGURE_ID, config), frame


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _html(path):
    path.write_text("<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body></html>\n")


def _drop_column(path):
    pd.read_csv(path).drop(columns="gap").to_csv(path, index=False)


def _edit_one_gap(path):
    # The edit that once turned a 1.67x speedup into 3.33x: one value, file otherwise intact.
    frame = pd.read_csv(path)
    frame.loc[3, "gap"] = frame.loc[3, "gap"] / 2
    frame.to_csv(path, index=False)


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(2000))


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _html, _drop_column, _edit_one_gap, _random_bytes, _empty],
                         ids=["truncated", "html", "deleted-column", "edited-value", "random-bytes", "empty"])
def test_a_damaged_unit_is_reported_once_and_recomputed(cached, monkeypatch, damage):
    config, store, first = cached
    path = store.dir / "optex-seed1.csv"
    damage(path)
    calls = _counting(monkeypatch)
    with pytest.warns(results.DamagedResultWarning) as caught:
        second = synthetic.run(config, results_dir=store.dir.parent.parent, progress=False)
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert calls == [("optex", 1)]
    pd.testing.assert_frame_equal(first.drop(columns="wall_time"), second.drop(columns="wall_time"), check_dtype=False)
    assert store.load("optex-seed1") is not None  # the recomputed file is recorded and verifies


def test_a_unit_of_another_seed_or_method_is_not_used(cached, monkeypatch):
    # A file whose record matches it but which holds another unit's rows (a careless copy of both).
    config, store, _ = cached
    manifest = json.loads((store.dir / "manifest.json").read_text())
    (store.dir / "optex-seed1.csv").write_bytes((store.dir / "optex-seed0.csv").read_bytes())
    manifest["units"]["optex-seed1"] = dict(manifest["units"]["optex-seed0"], file="optex-seed1.csv")
    (store.dir / "manifest.json").write_text(json.dumps(manifest))
    calls = _counting(monkeypatch)
    with pytest.warns(results.DamagedResultWarning, match="seed is not 1"):
        frame = synthetic.run(config, results_dir=store.dir.parent.parent, progress=False)
    assert calls == [("optex", 1)]
    assert set(frame[frame.method == "optex"].seed) == {0, 1}


def test_a_deleted_unit_is_reported_and_recomputed(cached, monkeypatch):
    config, store, _ = cached
    (store.dir / "vanilla-seed0.csv").unlink()
    calls = _counting(monkeypatch)
    with pytest.warns(results.DamagedResultWarning, match="vanilla-seed0.csv: missing"):
        synthetic.run(config, results_dir=store.dir.parent.parent, progress=False)
    assert calls == [("vanilla", 0)]


def test_the_manifest_records_checksum_rows_columns_and_the_runner(cached):
    config, store, _ = cached
    manifest = json.loads((store.dir / "manifest.json").read_text())
    assert manifest["runner"] == {"module": "optex.experiments.synthetic", "config": "Config"}
    unit = manifest["units"]["optex-seed1"]
    data = (store.dir / "optex-seed1.csv").read_bytes()
    assert unit["sha256"] == hashlib.sha256(data).hexdigest()
    assert unit["rows"] == len(pd.read_csv(store.dir / "optex-seed1.csv")) == SMALL["iterations"] + 1
    assert unit["columns"][:4] == ["function", "method", "seed", "iteration"]
    assert {"commit", "device", "backend", "versions", "date", "wall_time_s"} <= set(unit)
    assert not list(store.dir.glob("*.record.json"))  # every pending record was merged


def test_a_result_is_recomputable_from_its_manifest_alone(cached):
    config, store, _ = cached
    manifest = json.loads((store.dir / "manifest.json").read_text())
    rebuilt = results.config_from_manifest(manifest, device="cpu", backend="torch")
    assert rebuilt == config
    with pytest.raises(ValueError, match="hashes to"):
        results.config_from_manifest(dict(manifest, hash="0" * 12))
    with pytest.raises(ValueError, match="no runner"):
        results.config_from_manifest({k: v for k, v in manifest.items() if k != "runner"})


def test_a_kill_between_the_unit_and_the_manifest_loses_nothing(tmp_path, monkeypatch):
    config = synthetic.Config(**SMALL)
    store = results.ResultStore(tmp_path, synthetic.FIGURE_ID, config)
    frame = synthetic.run_unit(config, "vanilla", 0)

    def killed(*args):
        raise KeyboardInterrupt  # the process dies after the CSV and its record, before the manifest

    monkeypatch.setattr(results.ResultStore, "_merge", killed)
    with pytest.raises(KeyboardInterrupt):
        store.save("vanilla-seed0", frame, results.provenance("cpu", "torch", "abc"))
    monkeypatch.undo()
    assert not (store.dir / "manifest.json").exists()  # the first unit's manifest update never happened
    fresh = results.ResultStore(tmp_path, synthetic.FIGURE_ID, config)
    pd.testing.assert_frame_equal(fresh.load("vanilla-seed0", {"seed": 0}), frame, check_dtype=False)
    fresh.save("vanilla-seed1", synthetic.run_unit(config, "vanilla", 1), results.provenance("cpu", "torch", "abc"))
    assert set(json.loads((store.dir / "manifest.json").read_text())["units"]) == {"vanilla-seed0", "vanilla-seed1"}
    assert not list(store.dir.glob("*.record.json"))


def test_a_process_killed_before_its_manifest_update_keeps_its_unit(tmp_path):
    # A real kill (os._exit, no clean-up) right after the unit's files are written.
    code = textwrap.dedent(f"""
        import os, pandas as pd
        from optex import results
        results.ResultStore._merge = lambda self, own: os._exit(9)
        store = results.ResultStore({str(tmp_path)!r}, "toy", {{"a": 1}})
        store.save("u", pd.DataFrame({{"x": [1.0, 2.0]}}), {{"commit": "abc"}})
    """)
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 9
    store = results.ResultStore(tmp_path, "toy", {"a": 1})
    assert store.load("u")["x"].tolist() == [1.0, 2.0]


def test_processes_writing_one_configuration_at_once_keep_every_entry(tmp_path):
    code = textwrap.dedent(f"""
        import sys, pandas as pd
        from optex import results
        store = results.ResultStore({str(tmp_path)!r}, "toy", {{"a": 1}})
        worker = int(sys.argv[1])
        for i in range(15):
            store.save(f"w{{worker}}-{{i}}", pd.DataFrame({{"x": [worker, i]}}), {{"commit": "abc"}})
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    workers = [subprocess.Popen([sys.executable, "-c", code, str(w)], env=env) for w in range(4)]
    assert [w.wait() for w in workers] == [0] * 4
    store = results.ResultStore(tmp_path, "toy", {"a": 1})
    manifest = json.loads((store.dir / "manifest.json").read_text())
    assert set(manifest["units"]) == {f"w{w}-{i}" for w in range(4) for i in range(15)}
    assert store.load("w3-14")["x"].tolist() == [3, 14]
    assert not list(store.dir.glob("*.record.json")) and not list(store.dir.glob(".*.tmp"))


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_stale_temporary_files_are_removed(cached):
    _, store, _ = cached
    host = results._HOST
    stale = store.dir / f".optex-seed0.csv.{host}.{_dead_pid()}.k3j2h1.tmp"
    running = store.dir / f".optex-seed1.csv.{host}.{os.getpid()}.a8b7c6.tmp"  # a write still in progress
    elsewhere = store.dir / ".optex-seed1.csv.otherhost.12.zz.tmp"  # another machine's, recent
    for path in (stale, running, elsewhere):
        path.write_text("partial")
    fresh = results.ResultStore(store.dir.parent.parent, synthetic.FIGURE_ID, store.config)
    fresh.load("optex-seed0")
    assert not stale.exists() and running.exists() and elsewhere.exists()
    old = os.path.getmtime(elsewhere) - results.STALE_AFTER_S - 10
    os.utime(elsewhere, (old, old))
    assert results.remove_stale_temporaries(store.dir) == [elsewhere]


def test_a_damaged_committed_result_fails_loudly_instead_of_being_recomputed(tmp_path, monkeypatch):
    committed = tmp_path / "results"
    monkeypatch.setattr(results, "COMMITTED_DIR", committed)
    config = synthetic.Config(**SMALL)
    synthetic.run(config, results_dir=committed, progress=False)
    store = results.ResultStore(committed, synthetic.FIGURE_ID, config)
    assert store.committed and not results.ResultStore(committed / "_local", "x", config).committed
    _edit_one_gap(store.dir / "optex-seed0.csv")
    calls = _counting(monkeypatch)
    with pytest.raises(results.DamagedResultError, match="optex-seed0.csv: does not match the checksum"):
        synthetic.run(config, results_dir=committed, progress=False)
    assert calls == []


def _git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_units_recorded_before_checksums_are_trusted_only_where_git_vouches(tmp_path, monkeypatch):
    committed = tmp_path / "results"
    monkeypatch.setattr(results, "COMMITTED_DIR", committed)
    config = synthetic.Config(**SMALL)
    store = results.ResultStore(committed, synthetic.FIGURE_ID, config)
    frame = pd.DataFrame({"method": ["vanilla"] * 2, "seed": [0, 0], "gap": [2.0, 1.0]})
    store.dir.mkdir(parents=True)
    frame.to_csv(store.dir / "vanilla-seed0.csv", index=False)
    legacy = {"figure_id": "synthetic", "hash": store.key, "settings": {}, "units": {"vanilla-seed0": {"commit": "x"}}}
    (store.dir / "manifest.json").write_text(json.dumps(legacy))
    with pytest.raises(results.DamagedResultError, match="no checksum"):
        store.load("vanilla-seed0")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "legacy results")
    trusted = results.ResultStore(committed, synthetic.FIGURE_ID, config)
    assert trusted.load("vanilla-seed0", {"seed": 0})["gap"].tolist() == [2.0, 1.0]
    unit = store.dir / "vanilla-seed0.csv"
    unit.write_text(unit.read_text().replace("2.0", "4.0"))
    with pytest.raises(results.DamagedResultError, match="no checksum"):
        results.ResultStore(committed, synthetic.FIGURE_ID, config).load("vanilla-seed0")


def test_resume_recomputes_only_missing_units(cached, monkeypatch):
    config, store, first = cached
    (store.dir / "optex-seed1.csv").unlink()
    (store.dir / "vanilla_long-seed0.csv").unlink()
    calls = _counting(monkeypatch)
    with pytest.warns(results.DamagedResultWarning):
        second = synthetic.run(config, results_dir=store.dir.parent.parent, progress=False)
    assert calls == [("optex", 1), ("vanilla_long", 0)]
    pd.testing.assert_frame_equal(first.drop(columns="wall_time"), second.drop(columns="wall_time"), check_dtype=False)


def test_compute_false_refuses_to_start_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        synthetic.run(synthetic.Config(**SMALL), results_dir=tmp_path, compute=False, progress=False)


def test_cache_key_ignores_execution_options():
    base = synthetic.Config(**SMALL)
    assert results.config_hash(base) == results.config_hash(dataclasses.replace(base, device="auto", backend="jax"))
    assert {"device", "backend", "data_dir", "parallel"} <= set(results.EXECUTION_FIELDS)
    assert results.config_hash(base) != results.config_hash(dataclasses.replace(base, lr=0.02))


def test_new_execution_fields_leave_the_hash_of_configs_unchanged():
    # The committed results are keyed by hashes made before `parallel` became a field of synthetic.Config
    # (and before data_dir / parallel / workers joined EXECUTION_FIELDS): the default config's hash then.
    assert results.config_hash(synthetic.Config()) == "2673459291eb"
    assert results.config_hash(synthetic.Config(parallel="loop")) == "2673459291eb"


def test_a_checkpointing_unit_gets_a_file_in_the_store_removed_after_saving(tmp_path):
    store = results.ResultStore(tmp_path, "demo", synthetic.Config(**SMALL))
    seen = []

    def compute(path):
        seen.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("state")  # what a long unit leaves behind while it runs
        return pd.DataFrame({"method": ["a"], "value": [1.0]})

    frames = results.run_units(store, [results.Unit("a-seed0", compute, {"method": "a"}, checkpoint=True),
                                       results.Unit("b-seed0", lambda: pd.DataFrame({"method": ["b"]}))],
                               device="cpu", backend="torch", details=lambda: {"data": "ten rows"})
    assert seen == [store.dir / "a-seed0.checkpoint"] and not seen[0].exists()
    assert [f["method"].iloc[0] for f in frames] == ["a", "b"]
    assert store.manifest()["units"]["a-seed0"]["data"] == "ten rows"
    without_store = []
    results.run_units(None, [results.Unit("a", lambda path: without_store.append(path) or pd.DataFrame({"x": [1]}),
                                          checkpoint=True)], device="cpu", backend="torch")
    assert without_store == [None]


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    results.atomic_write(path, "old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "fsync", crash)
    with pytest.raises(OSError):
        results.atomic_write(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]

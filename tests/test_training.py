"""The supervised-training runner against independent references: plain torch.optim loops, the documented
minibatch mapping, Target = Vanilla run N times longer, the cache, checkpoints, the JAX backend, the CLI."""
import dataclasses
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from optex import data, models, results
from optex.cli import main
from optex.experiments import training

STAGED = Path(os.environ.get("OPTEX_DATA_DIR", Path(__file__).resolve().parents[1] / "../shared/data")).resolve()
pytestmark = [pytest.mark.skipif(not (STAGED / "MNIST").is_dir(), reason=f"no staged datasets in {STAGED}"),
              pytest.mark.usefixtures("one_torch_thread")]
# warmup_pairs=2: two cold iterations (the older behaviour); test_last_gradient_and_one_warmup_pair_run takes 1.
QUICK = dict(dataset="mnist", model="mlp", width=24, depth=3, batch_size=16, parallelism=3, iterations=6, eval_every=2,
             eval_size=150, train_subset=600, history=8, seeds=1, warmup_pairs=2, data_dir=str(STAGED))


def _config(**overrides):
    return training.Config(**{**QUICK, **overrides})


def _reference_batches(config, seed, k):
    task = training.task_for(config)
    index = np.random.default_rng([seed, 1, k]).choice(task.n_train, config.batch_size, replace=False)
    return task.train_x[index], task.train_y[index]


def _train_loss(model, config):
    x, y = zip(*training.task_for(config).eval_sets["train"])
    with torch.no_grad():
        return F.cross_entropy(model(torch.cat(x)), torch.as_tensor(np.concatenate(y), dtype=torch.int64)).item()


def test_config_errors_name_the_field():
    for overrides, field in ((dict(heads=2), "heads"), (dict(model="transformer"), "model"), (dict(lr=-1.0), "lr"),
                             (dict(train_subset=8), "train_subset"), (dict(methods=("vanilla", "sgd")), "methods"),
                             (dict(validation=1.5), "validation"), (dict(backend="jax", model="cnn", depth=None), "backend"),
                             (dict(warmup_pairs=3), "warmup_pairs"), (dict(dataset="imagenet"), "dataset")):
        with pytest.raises(ValueError, match=field):
            _config(**overrides)
    config = training.Config(dataset="shakespeare", model="transformer")
    assert (config.width, config.depth, config.heads, config.block_size) == (128, 4, 4, 64)
    assert training.Config().width == 512 and training.Config().heads is None


def test_every_field_type_has_a_command_line_parser():
    from optex.cli import _parser_for

    for field in dataclasses.fields(training.Config):
        _parser_for(str(field.type))


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 1e-3)])
def test_vanilla_equals_a_plain_torch_optim_loop(optimizer, lr):
    config = _config(optimizer=optimizer, lr=lr, methods=("vanilla",), dtype="float64")
    frame = training.run_unit(config, "vanilla", 0)
    model = training.build_model(config, 0).double()
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer](model.parameters(), lr=lr)
    losses, train_losses = [], {0: _train_loss(model, config)}
    for t in range(1, config.iterations + 1):
        x, y = _reference_batches(config, 0, t - 1)  # Vanilla's iteration t reads minibatch t - 1
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if t % config.eval_every == 0:
            train_losses[t] = _train_loss(model, config)
    # float64; Adam's single-tensor and multi-tensor updates round differently.
    np.testing.assert_allclose(frame["loss"].to_numpy()[1:], losses, rtol=1e-9)
    evaluated = frame.dropna(subset=["train_loss"])
    assert evaluated["iteration"].tolist() == sorted(train_losses)
    np.testing.assert_allclose(evaluated["train_loss"], list(train_losses.values()), rtol=1e-9)


def test_large_batch_equals_one_step_on_the_n_minibatches_together():
    config = _config(methods=("large_batch", "large_batch_scaled"), dtype="float64", lr=0.02)
    n = config.parallelism
    for method, lr in (("large_batch", 0.02), ("large_batch_scaled", 0.02 * n)):
        frame = training.run_unit(config, method, 0)
        model = training.build_model(config, 0).double()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for t in range(1, config.iterations + 1):
            x, y = zip(*(_reference_batches(config, 0, (t - 1) * n + p) for p in range(n)))
            opt.zero_grad()
            F.cross_entropy(model(torch.cat(x)), torch.cat(y)).backward()  # equal sizes: mean of the N means
            opt.step()
        np.testing.assert_allclose(frame["train_loss"].iloc[-1], _train_loss(model, config), rtol=1e-9)
    assert training.METHODS["large_batch_scaled"].lr("adam", 1e-3, 4) == pytest.approx(2e-3)
    assert training.METHODS["large_batch_scaled"].lr("sgd", 0.01, 4) == pytest.approx(0.04)


def test_target_at_t_is_vanilla_long_at_t_times_n():
    config = _config(methods=("target", "vanilla_long"), optimizer="adam", lr=3e-3, dtype="float64")
    target = training.run_unit(config, "target", 1).set_index("iteration")
    long = training.run_unit(config, "vanilla_long", 1).set_index("iteration")
    n = config.parallelism
    assert long.index.max() == n * config.iterations and target.index.max() == config.iterations
    t = np.arange(1, config.iterations + 1)
    np.testing.assert_allclose(target.loc[t, "loss"], long.loc[t * n, "loss"], rtol=1e-9)
    evaluated = target.dropna(subset=["train_loss"]).index
    for column in ("train_loss", "val_error", "test_loss"):
        np.testing.assert_allclose(target.loc[evaluated, column], long.loc[evaluated * n, column], rtol=1e-9)
    np.testing.assert_array_equal(target.loc[t, "evaluations"], long.loc[t * n, "evaluations"])


def test_each_process_reads_the_documented_minibatch(monkeypatch):
    config = _config(methods=("vanilla", "optex", "large_batch"))
    seen = []
    original = training.make_optex

    def recording(*args, **kwargs):
        opt = original(*args, **kwargs)
        step = opt.step

        def step_and_record(loss_fn, batches):
            seen[-1].append(batches)
            return step(loss_fn, batches)

        opt.step = step_and_record
        return opt

    monkeypatch.setattr(training, "make_optex", recording)
    for method in config.methods:
        seen.append([])
        training.run_unit(config, method, 2)
        n = 1 if method == "vanilla" else config.parallelism
        for t, batches in enumerate(seen[-1], start=1):
            assert len(batches) == n
            for p, (x, y) in enumerate(batches):
                rx, ry = _reference_batches(config, 2, (t - 1) * n + p)
                assert torch.equal(x, rx) and torch.equal(y, ry), (method, t, p)


def test_tidy_table_every_method_on_the_evaluation_grid(tmp_path):
    config = _config(methods=tuple(training.METHODS), iterations=5, eval_every=2, seeds=(0, 3))
    frame = training.run(config, results_dir=tmp_path, progress=False)
    n = config.parallelism
    # Cold iterations evaluate once: LineSearch's and last_gradient's first (no last gradient yet), OptEx's
    # first two (warmup_pairs=2: the history needs two pairs).
    evaluations = {"vanilla": 5, "vanilla_long": 5 * n, "target": 5 * n, "large_batch": 5 * n, "large_batch_scaled": 5 * n,
                   "linesearch": 1 + 4 * n, "last_gradient": 1 + 4 * n, "optex": 2 + 3 * n}
    columns = {"dataset", "method", "seed", "iteration", "evaluations", "loss", "grad_norm", "selected", "wall_time",
               "time_proxy", "time_eval", "time_update", "lengthscale", "train_loss", "train_error", "val_loss",
               "val_error", "test_loss", "test_error"}
    columns |= {f"proxy_{kind}_{s}" for kind in ("cosine", "rel_error") for s in range(1, n)}
    assert columns <= set(frame.columns)
    for (method, seed), group in frame.groupby(["method", "seed"]):
        last = n * 5 if method == "vanilla_long" else 5
        assert group["iteration"].tolist() == list(range(last + 1)), method
        assert group.dropna(subset=["val_error"])["iteration"].tolist() == sorted({*range(0, last + 1, 2), last})
        assert (np.diff(group["wall_time"]) >= 0).all() and (np.diff(group["evaluations"]) >= 0).all()
        assert group["evaluations"].iloc[-1] == evaluations[method], method
    optex_rows = frame[(frame.method == "optex") & (frame.iteration > 2)]
    assert optex_rows["proxy_cosine_1"].between(-1, 1).all() and optex_rows["proxy_rel_error_2"].notna().all()
    assert frame[frame.method == "target"]["proxy_cosine_1"].isna().all()
    assert frame.groupby("seed")["train_loss"].apply(lambda s: s.iloc[0]).nunique() == 2  # θ_0 differs by seed only
    first = frame[frame.iteration == 0].groupby("seed")["test_loss"].nunique()
    assert (first == 1).all()  # ... and is shared by every method


def test_cache_resumes_missing_units_and_ignores_execution_options(tmp_path, monkeypatch):
    config = _config(methods=("vanilla", "large_batch"))
    assert results.config_hash(config) == results.config_hash(
        dataclasses.replace(config, data_dir="/elsewhere", device="auto", backend="jax", parallel="loop"))
    assert results.config_hash(config) != results.config_hash(dataclasses.replace(config, lr=0.02))
    first = training.run(config, results_dir=tmp_path, progress=False)
    store = results.ResultStore(tmp_path, training.FIGURE_ID, config)
    (store.dir / "large_batch-seed0.csv").unlink()
    calls = []
    original = training.run_unit
    monkeypatch.setattr(training, "run_unit", lambda c, m, s, **kw: calls.append((m, s)) or original(c, m, s, **kw))
    again = training.run(config, results_dir=tmp_path, progress=False)
    assert calls == [("large_batch", 0)]
    pd.testing.assert_frame_equal(first.drop(columns=[c for c in first if c.startswith("time") or c == "wall_time"]),
                                  again.drop(columns=[c for c in again if c.startswith("time") or c == "wall_time"]),
                                  check_dtype=False)
    manifest = store.manifest()
    assert "training examples" in manifest["units"]["vanilla-seed0"]["data"]
    with pytest.raises(FileNotFoundError):
        training.run(dataclasses.replace(config, lr=0.5), results_dir=tmp_path, progress=False, compute=False)


def test_book_verify_recomputes_a_prefix_of_committed_training_results(tmp_path, monkeypatch):
    from optex import verify

    config = _config(methods=("vanilla", "vanilla_long", "optex", "large_batch"), iterations=7, eval_every=3,
                     warmup_pairs=1, parallel="loop")
    training.run(config, results_dir=tmp_path / "results", progress=False, commit="c0ffee")
    store = results.ResultStore(tmp_path / "results", training.FIGURE_ID, config)
    assert store.manifest()["settings"].keys().isdisjoint(results.EXECUTION_FIELDS)
    assert {u["parallel"] for u in store.manifest()["units"].values()} == {"loop"}
    monkeypatch.setenv("OPTEX_DATA_DIR", str(STAGED))  # the manifest does not record where the data was
    rebuilt = []
    original = training.verification
    monkeypatch.setattr(training, "verification", lambda c: rebuilt.append(c) or original(c))
    entry = verify.verify_configuration(store.dir, tmp_path)
    assert entry["status"] == "passed", entry["reason"]
    assert [c.parallel for c in rebuilt] == ["loop"]  # recomputed the way the committed run evaluated
    # warmup_pairs + 2 = 3 iterations: one cold, two proxy; metrics only on the run's grid (0 and 3).
    assert entry["checked"] == [dict(unit=f"{m}-seed0", rows=4) for m in config.methods]
    optex = {p.unit: p for p in training.verification(config)}["optex-seed0"].compute()
    assert optex["evaluations"].diff().tolist()[1:] == [1, config.parallelism, config.parallelism]
    assert optex.dropna(subset=["train_loss"])["iteration"].tolist() == [0, 3]
    settings = training._optex_settings
    monkeypatch.setattr(training, "_optex_settings", lambda c: {**settings(c), "lr": 2 * c.lr})  # a changed update
    changed = verify.verify_configuration(store.dir, tmp_path)
    assert changed["status"] == "failed" and changed["reason"].startswith("vanilla-seed0: column loss, iteration 2")


def test_damaged_or_foreign_checkpoints_are_ignored(tmp_path):
    path = tmp_path / "unit.checkpoint"
    payload = {"format": 1, "unit": "optex-seed0", "config": "abc", "iteration": 3, "rows": [{"iteration": 0}],
               "optex": {"theta": torch.arange(3.0)}}
    training._save_checkpoint(path, payload)
    loaded = training._load_checkpoint(path, "optex-seed0", "abc")
    assert loaded["iteration"] == 3 and torch.equal(loaded["optex"]["theta"], torch.arange(3.0))
    with pytest.warns(RuntimeWarning, match="another unit"):
        assert training._load_checkpoint(path, "optex-seed1", "abc") is None
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="sha256"):
        assert training._load_checkpoint(path, "optex-seed0", "abc") is None
    assert training._load_checkpoint(tmp_path / "absent", "optex-seed0", "abc") is None


def test_a_killed_unit_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    config = _config(methods=("optex",), iterations=9, eval_every=3)
    whole = training.run_unit(config, "optex", 0)
    original, calls = training.make_optex, []

    def dies_at_seven(*args, **kwargs):
        opt = original(*args, **kwargs)
        step = opt.step

        def step_or_die(loss_fn, batches):
            calls.append(1)
            if len(calls) == 7:
                raise KeyboardInterrupt
            return step(loss_fn, batches)

        opt.step = step_or_die
        return opt

    monkeypatch.setattr(training, "make_optex", dies_at_seven)
    path = tmp_path / "optex-seed0.checkpoint"
    with pytest.raises(KeyboardInterrupt):
        training.run_unit(config, "optex", 0, checkpoint=path, checkpoint_every=0.0)
    key = results.config_hash(config)
    assert training._load_checkpoint(path, "optex-seed0", key)["iteration"] == 6
    monkeypatch.setattr(training, "make_optex", original)
    resumed = training.run_unit(config, "optex", 0, checkpoint=path, checkpoint_every=0.0)
    timing = [c for c in whole if c.startswith("time") or c == "wall_time"]
    # Warm-up iterations report no lengthscale, except that a checkpoint (state_dict) may fit the surrogate
    # on the one pair there is and report its limit, inf: a reported value, not a step, differs there.
    warm = whole["evaluations"].diff() == config.parallelism
    pd.testing.assert_frame_equal(whole.drop(columns=timing + ["lengthscale"]), resumed.drop(columns=timing + ["lengthscale"]))
    pd.testing.assert_series_equal(whole["lengthscale"][warm], resumed["lengthscale"][warm])


def test_last_gradient_and_one_warmup_pair_run():
    config = _config(methods=("optex", "last_gradient"), warmup_pairs=1)
    for method in config.methods:
        frame = training.run_unit(config, method, 0)
        assert frame["evaluations"].iloc[-1] == 1 + config.parallelism * (config.iterations - 1)


def test_jax_backend_agrees_with_torch_on_one_seed():
    pytest.importorskip("jax")
    # N = 2 and the median lengthscale keep JAX's compilation short; the backends' parity suite covers the rest.
    config = _config(methods=("vanilla", "optex"), iterations=6, parallelism=2, lengthscale="median")
    for method in config.methods:
        ours = training.run_unit(config, method, 0)
        theirs = training.run_unit(dataclasses.replace(config, backend="jax"), method, 0)
        # float32 on both sides; the surrogate's linear algebra differs in rounding only.
        for column in ("loss", "train_loss", "val_loss", "test_loss"):
            np.testing.assert_allclose(theirs[column], ours[column], rtol=2e-4, err_msg=f"{method} {column}")


def test_language_model_unit_records_losses_and_a_sample():
    config = training.Config(dataset="shakespeare", model="transformer", width=16, depth=1, heads=2, block_size=8,
                             batch_size=4, parallelism=2, iterations=4, eval_every=2, eval_size=10, train_subset=5000,
                             history=6, seeds=1, warmup_pairs=2, methods=("vanilla", "optex"), data_dir=str(STAGED))
    assert training.dimension(config) == models.transformer_dim(65, 16, 1, 8)
    task = training.task_for(config)
    x, y = task.batch(0, 5)
    offsets = data.window_offsets(0, 5, 5000, 8, 4)
    tokens = data.load_shakespeare(STAGED).tokens
    np.testing.assert_array_equal(x.numpy(), tokens[offsets[:, None] + np.arange(8)])
    np.testing.assert_array_equal(y.numpy(), tokens[offsets[:, None] + np.arange(1, 9)])
    frame = training.run(config, results_dir=None, progress=False)
    assert {"train_loss", "val_loss"} <= set(frame.columns) and "test_loss" not in frame and "val_error" not in frame
    assert frame.loc[frame.iteration == 0, "train_loss"].iloc[0] == pytest.approx(math.log(65), rel=0.05)
    samples = frame.dropna(subset=["sample"])
    assert len(samples) == 2 and (samples["iteration"] == 4).all()
    assert all(len(s) == training.SAMPLE_LENGTH and set(s) <= set(task.dataset.vocabulary) for s in samples["sample"])


def test_command_line_runs_the_training_runner(tmp_path, capsys):
    assert main(["run", "training", "--dataset", "mnist", "--width", "16", "--depth", "2", "--iterations", "4",
                 "--eval-every", "2", "--eval-size", "100", "--train-subset", "500", "--batch-size", "16",
                 "--methods", "vanilla,large_batch", "--seeds", "1", "--warmup-pairs", "2", "--data-dir", str(STAGED),
                 "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "final train_loss" in out and "large_batch" in out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", "training", "--model", "transformer", "--out", str(tmp_path)]) == 2


def test_jax_runs_the_mnist_chapter_methods_like_torch():
    """The mnist chapter's backend="jax" on one seed, Adam and lengthscale "auto" (the test above covers SGD
    with Vanilla and OptEx): every other method the JAX backend has today agrees with torch. JAX lacks
    warmup_pairs and last_gradient, so OptEx waits for two pairs and the ablation is left out."""
    pytest.importorskip("jax")
    methods = ("linesearch", "target", "optex", "large_batch_scaled")
    config = _config(methods=methods, optimizer="adam", lr=1e-3, iterations=6, parallelism=3, warmup_pairs=2)
    for method in methods:
        ours = training.run_unit(config, method, 0)
        theirs = training.run_unit(dataclasses.replace(config, backend="jax"), method, 0)
        np.testing.assert_array_equal(theirs["evaluations"], ours["evaluations"])
        for column in ("loss", "train_loss", "val_error", "test_loss"):
            np.testing.assert_allclose(theirs[column], ours[column], rtol=5e-4, atol=1e-6, err_msg=f"{method} {column}")

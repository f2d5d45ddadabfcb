"""The DQN pieces and the RL runner against independent references: hand computations of the replay
buffer, ε schedule, TD targets and Huber loss; a plain torch.optim DQN loop; checkpoint and resume;
seeding; the cache, parallel workers, the CLI and the episodes-to-threshold table."""
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from optex import dqn, models, results
from optex.cli import main
from optex.experiments import rl, training

gymnasium = pytest.importorskip("gymnasium")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = dict(task="cartpole", episodes=3, warmup_episodes=2, width=16, seeds=1, batch_size=16, buffer_size=2000,
            train_every=4, target_every=5, epsilon_decay_episodes=2, history=8)
TIMING = ["wall_time", "time_update"]


def _config(**overrides):
    return rl.Config(**{**TINY, **overrides})


# ---------------------------------------------------------------------------------------------- pieces
def test_replay_buffer_keeps_the_last_transitions_and_samples_its_rows_uniformly():
    buffer = dqn.ReplayBuffer(capacity=5, state_size=2)
    for i in range(7):  # rows 0 and 1 are overwritten by transitions 5 and 6
        buffer.add(np.array([i, -i], np.float32), i % 3, float(10 * i), np.array([i + 1, 0], np.float32), i == 6)
    assert len(buffer) == 5 and buffer.added == 7
    np.testing.assert_array_equal(buffer.states[:, 0], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(buffer.terminated, [0, 1, 0, 0, 0])
    states, actions, rewards, next_states, terminated = buffer.sample(np.random.default_rng(3), 8)
    rows = np.random.default_rng(3).integers(0, 5, 8)  # the documented draw
    stored = buffer.states[rows, 0]
    np.testing.assert_array_equal(states[:, 0], stored)
    np.testing.assert_array_equal(states[:, 1], -stored)
    np.testing.assert_array_equal(actions, stored.astype(int) % 3)
    np.testing.assert_array_equal(rewards, 10 * stored)
    np.testing.assert_array_equal(next_states[:, 0], stored + 1)
    np.testing.assert_array_equal(terminated, stored == 6)
    drawn = buffer.sample(np.random.default_rng(0), 50_000)[0][:, 0].astype(int)
    frequency = np.bincount(drawn, minlength=7)[[2, 3, 4, 5, 6]] / 50_000
    assert np.abs(frequency - 0.2).max() < 0.01  # uniform over the stored transitions, none of the overwritten
    assert not np.isin(drawn, [0, 1]).any()
    with pytest.raises(ValueError, match="empty"):
        dqn.ReplayBuffer(4, 2).sample(np.random.default_rng(0), 1)


def test_replay_buffer_state_round_trips_through_torch_save(tmp_path):
    buffer = dqn.ReplayBuffer(capacity=4, state_size=3)
    for i in range(6):
        buffer.add(np.full(3, i, np.float32), i, i / 2, np.full(3, i + 1, np.float32), i % 2 == 0)
    torch.save(buffer.state_dict(), tmp_path / "buffer.pt")
    copy = dqn.ReplayBuffer(capacity=4, state_size=3)
    copy.load_state_dict(torch.load(tmp_path / "buffer.pt", weights_only=True))
    assert copy.added == 6
    for name in dqn.FIELDS:
        np.testing.assert_array_equal(getattr(copy, name), getattr(buffer, name))
    with pytest.raises(ValueError, match="states"):
        dqn.ReplayBuffer(capacity=4, state_size=2).load_state_dict(buffer.state_dict())


def test_epsilon_is_one_in_the_warmup_then_falls_linearly_to_its_floor():
    values = [dqn.epsilon(e, warmup=3, decay_episodes=4, epsilon_min=0.2) for e in range(1, 10)]
    np.testing.assert_allclose(values, [1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.2, 0.2])


def _numpy_q(network, states):
    """The Q-network's forward pass in numpy float64 from its weights (two ReLU hidden layers)."""
    layers = [(layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy())
              for layer in network.layers]
    x = np.asarray(states, np.float64)
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def test_td_targets_and_huber_loss_match_a_hand_computation():
    target = dqn.q_network(3, 2, 8, seed=1)
    network = dqn.q_network(3, 2, 8, seed=2)
    rng = np.random.default_rng(0)
    states, next_states = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    rewards = rng.normal(size=6).astype(np.float32)
    terminated = np.array([0, 1, 0, 0, 1, 0], np.float32)
    actions = np.array([0, 1, 1, 0, 0, 1])
    y = dqn.td_targets(target, rewards, next_states, terminated, gamma=0.9)
    expected = rewards + 0.9 * (1 - terminated) * _numpy_q(target, next_states).max(1)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6)
    # The loss at targets placed so that some errors are below 1 (squared) and some above (linear).
    q = _numpy_q(network, states)[np.arange(6), actions]
    targets = q + np.array([0.3, -0.5, 2.0, -3.0, 0.9, 1.5])
    error = np.abs(q - targets)
    huber = np.where(error < 1, 0.5 * error ** 2, error - 0.5).mean()
    loss = dqn.td_loss(network)({k: v.detach() for k, v in network.named_parameters()},
                                (torch.as_tensor(states), torch.as_tensor(actions), torch.as_tensor(targets,
                                                                                                   dtype=torch.float32)))
    assert loss.item() == pytest.approx(huber, rel=1e-5)


# ---------------------------------------------------------------------------------------------- N = 1 vs torch.optim
def _seed(*key):
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def _plain_dqn(config, seed):
    """A DQN written out with torch.optim.Adam and loss.backward(), following the runner's documented
    protocol and random keys; returns (return, mean TD loss) per episode."""
    env = gymnasium.make("CartPole-v1")
    network = models.build("mlp", seed, in_features=4, width=config.width, depth=3, classes=2)
    target = models.build("mlp", seed, in_features=4, width=config.width, depth=3, classes=2)
    adam = torch.optim.Adam(network.parameters(), lr=config.lr)
    memory, out, updates, train_steps = [], [], 0, 0
    for episode in range(1, config.total_episodes + 1):
        trained = episode - config.warmup_episodes
        eps = 1.0 if trained <= 0 else max(config.epsilon_min,
                                           1 - (1 - config.epsilon_min) * trained / config.epsilon_decay_episodes)
        state, _ = env.reset(seed=_seed(seed, 1, episode))
        env.action_space.seed(_seed(seed, 2, episode))
        coin = np.random.default_rng([seed, 3, episode])
        total, losses, done = 0.0, [], False
        while not done:
            if coin.random() < eps:
                action = int(env.action_space.sample())
            else:
                with torch.no_grad():
                    action = int(network(torch.tensor(state)[None]).argmax())
            nxt, reward, terminated, truncated, _ = env.step(action)
            memory.append((state, action, reward, nxt, float(terminated)))
            state, total, done = nxt, total + reward, terminated or truncated
            if trained > 0:
                train_steps += 1
                if train_steps % config.train_every == 0:
                    rows = np.random.default_rng([seed, 4, updates, 0]).integers(0, len(memory), config.batch_size)
                    s, a, r, s2, d = (torch.tensor(np.array([memory[i][k] for i in rows]), dtype=dtype)
                                      for k, dtype in enumerate((torch.float32, torch.int64, torch.float32,
                                                                 torch.float32, torch.float32)))
                    with torch.no_grad():
                        y = r + config.gamma * (1.0 - d) * target(s2).max(1).values
                    loss = F.smooth_l1_loss(network(s).gather(1, a[:, None]).squeeze(1), y)
                    adam.zero_grad()
                    loss.backward()
                    adam.step()
                    losses.append(loss.item())
                    updates += 1
                    if updates % config.target_every == 0:
                        target.load_state_dict(network.state_dict())
        out.append((total, float(np.mean(losses)) if losses else math.nan))
    return out


@pytest.mark.parametrize("parallel", ["loop", "vmap"])
def test_vanilla_equals_a_plain_torch_optim_dqn_loop_bit_for_bit(parallel):
    config = _config(methods=("vanilla",), episodes=5, parallel=parallel)
    frame = rl.run_unit(config, "vanilla", 0)
    reference = _plain_dqn(config, 0)
    assert frame["updates"].iloc[-1] >= 10  # several target-network copies
    assert list(frame["return"]) == [r for r, _ in reference]
    np.testing.assert_array_equal(frame["loss"].to_numpy(), [loss for _, loss in reference])


# ---------------------------------------------------------------------------------------------- runner
def test_a_run_is_reproducible_and_every_method_shares_the_warmup_episodes():
    config = _config(methods=("vanilla", "optex", "large_batch"))
    first = {m: rl.run_unit(config, m, 0) for m in config.methods}
    again = rl.run_unit(config, "optex", 0)
    pd.testing.assert_frame_equal(first["optex"].drop(columns=TIMING), again.drop(columns=TIMING))
    warm = {m: f[f["training_episode"] <= 0] for m, f in first.items()}
    for m in ("optex", "large_batch"):
        np.testing.assert_array_equal(warm[m]["return"], warm["vanilla"]["return"])
        assert (warm[m]["updates"] == 0).all()
    other = rl.run_unit(config, "vanilla", 1)
    assert list(other["return"]) != list(first["vanilla"]["return"])
    optex = first["optex"]
    # N evaluations per update after the one cold-start update; the cumulative average is over training episodes.
    assert optex["evaluations"].iloc[-1] == config.parallelism * optex["updates"].iloc[-1] - (config.parallelism - 1)
    assert first["vanilla"]["evaluations"].iloc[-1] == first["vanilla"]["updates"].iloc[-1]
    training_rows = optex[optex["training_episode"] > 0]
    np.testing.assert_allclose(training_rows["cum_avg_return"], training_rows["return"].expanding().mean())
    assert optex["cum_avg_return"][optex["training_episode"] <= 0].isna().all()
    assert training_rows["proxy_cosine_1"].notna().any()
    assert first["vanilla"]["proxy_cosine_1"].isna().all()


def test_a_killed_unit_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    config = _config(methods=("optex",), episodes=4)
    whole = rl.run_unit(config, "optex", 0)
    stop = int(whole["updates"].iloc[-2]) + 1  # dies in the last episode, after the checkpoint of the one before
    original, calls = rl.make_optex, []

    def dies(*args, **kwargs):
        opt = original(*args, **kwargs)
        step = opt.step

        def step_or_die(loss_fn, batches):
            calls.append(1)
            if len(calls) == stop:
                raise KeyboardInterrupt
            return step(loss_fn, batches)

        opt.step = step_or_die
        return opt

    monkeypatch.setattr(rl, "make_optex", dies)
    path = tmp_path / "optex-seed0.checkpoint"
    with pytest.raises(KeyboardInterrupt):
        rl.run_unit(config, "optex", 0, checkpoint=path, checkpoint_every=0.0)
    saved = training._load_checkpoint(path, "optex-seed0", results.config_hash(config))
    assert len(saved["rows"]) == config.total_episodes - 1
    monkeypatch.setattr(rl, "make_optex", original)
    resumed = rl.run_unit(config, "optex", 0, checkpoint=path, checkpoint_every=0.0)
    pd.testing.assert_frame_equal(whole.drop(columns=TIMING), resumed.drop(columns=TIMING))


def test_run_caches_units_and_parallel_workers_give_the_same_table(tmp_path):
    config = _config(methods=("vanilla", "linesearch"), episodes=2)
    serial = rl.run(config, results_dir=tmp_path / "a", progress=False)
    parallel = rl.run(dataclasses.replace(config, workers=2), results_dir=tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(serial.drop(columns=TIMING), parallel.drop(columns=TIMING))
    assert results.config_hash(config) == results.config_hash(dataclasses.replace(config, workers=2))
    store = results.ResultStore(tmp_path / "b", rl.FIGURE_ID, config)
    assert sorted(store.units()) == ["linesearch-seed0", "vanilla-seed0"]
    assert not list(store.dir.glob("*.checkpoint")) and not list(store.dir.glob("*.record.json"))
    cached = rl.run(config, results_dir=tmp_path / "a", progress=False, compute=False)
    pd.testing.assert_frame_equal(serial, cached)


def test_verification_prefix_is_the_start_of_the_committed_run():
    config = _config(methods=("optex",), episodes=4)
    whole = rl.run_unit(config, "optex", 0)
    (prefix,) = rl.verification(config)
    short = prefix.compute()
    assert prefix.unit == "optex-seed0" and len(short) == config.warmup_episodes + 2
    pd.testing.assert_frame_equal(short.drop(columns=TIMING), whole.iloc[:len(short)].drop(columns=TIMING))


@pytest.mark.parametrize("overrides, name", [
    (dict(task="pong"), "task"), (dict(device="cuda"), "device"), (dict(methods=("vanilla_long",)), "methods"),
    (dict(gamma=1.5), "gamma"), (dict(train_every=0), "train_every"), (dict(epsilon_min=2.0), "epsilon_min"),
    (dict(backend="jax"), "backend"), (dict(workers=0), "workers"), (dict(max_episode_steps=0), "max_episode_steps"),
])
def test_bad_settings_fail_naming_the_parameter(overrides, name):
    with pytest.raises(ValueError, match=name):
        _config(**overrides)


def test_task_defaults_and_dimension():
    config = rl.Config(task="lunarlander")
    assert (config.width, config.warmup_episodes, config.total_episodes) == (128, 50, 150)
    assert rl.dimension(config) == (8 * 128 + 128) + (128 * 128 + 128) + (128 * 4 + 4)
    assert rl.dimension(rl.Config(task="acrobot")) == (6 * 64 + 64) + (64 * 64 + 64) + (64 * 3 + 3)


def test_episodes_to_threshold_reads_the_trailing_mean_and_censors():
    returns = {("optex", 0): [0, 0, 10, 10, 10, 10], ("optex", 1): [0, 0, 0, 0, 0, 20],
               ("vanilla", 0): [0, 0, 1, 1, 1, 1], ("vanilla", 1): [0, 0, 2, 2, 2, 2]}
    frame = pd.DataFrame([dict(task="cartpole", method=m, seed=s, episode=e + 1, training_episode=e - 1, **{"return": r})
                          for (m, s), values in returns.items() for e, r in enumerate(values)])
    frame["cum_avg_return"] = frame.where(frame["training_episode"] > 0).groupby(["method", "seed"])["return"] \
        .transform(lambda r: r.expanding().mean())
    reach = rl.episodes_to_threshold(frame, {"cartpole": 5.0}, window=2).set_index(["method", "seed"])
    # Training returns of optex seed 0: 10, 10, 10, 10 (episode 1 reaches 5); seed 1: 0, 0, 0, 20 (the
    # trailing 2-episode mean first reaches 10 >= 5 at episode 4); vanilla never does.
    assert reach.loc[("optex", 0), "episodes"] == 1 and reach.loc[("optex", 1), "episodes"] == 4
    assert reach.loc[("vanilla", 0), "episodes"] != reach.loc[("vanilla", 0), "episodes"]
    assert reach.loc[("optex", 1), "best_trailing"] == 10 and reach.loc[("vanilla", 1), "best_trailing"] == 2
    # Tables concatenated without a fresh index (duplicate labels) give the same numbers.
    doubled = rl.episodes_to_threshold(frame.set_axis(np.zeros(len(frame), int)), {"cartpole": 5.0}, window=2)
    pd.testing.assert_frame_equal(doubled.set_index(["method", "seed"]), reach)
    table = rl.threshold_table(frame, {"cartpole": 5.0}, window=2).set_index("method")
    assert table.loc["optex", "episodes"] == 2.5 and table.loc["optex", "censored"] == 0
    assert table.loc["vanilla", "censored"] == 2 and math.isnan(table.loc["vanilla", "episodes"])
    assert table.loc["optex", "final_cum_avg"] == pytest.approx(np.mean([10, 5]))
    assert table.loc["optex", "best"] == pytest.approx(np.mean([10, 10]))
    assert not table["floor"].any()
    # CartPole returns are at least 0: optex's final averages 10 and 5 have a t-interval reaching below it
    assert table.loc["optex", "final_low"] == 0.0 and table.loc["optex", "final_high"] > 0
    assert table.loc["optex", "episodes_low"] == 0.0  # episodes 1 and 4: no run can take fewer than 0


def test_the_command_line_runs_the_rl_runner(tmp_path, capsys):
    code = main(["run", "rl", "--task", "cartpole", "--episodes", "1", "--warmup-episodes", "1", "--width", "8",
                 "--seeds", "1", "--methods", "vanilla,optex", "--batch-size", "8", "--train-every", "4",
                 "--history", "4", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "4 rows" in out and "censored" in out
    assert main(["run", "rl", "--task", "pong", "--out", str(tmp_path)]) == 2
    assert "task must be one of" in capsys.readouterr().err


def _episodes_frame(finals):
    """Training episodes of two tasks whose returns are constant per run (so the cumulative average is that
    value): ``finals`` maps (panel, method) to the per-seed returns."""
    rows = []
    for (panel, method), values in finals.items():
        for seed, value in enumerate(values):
            for episode in range(1, 6):
                rows.append(dict(panel=panel, task="cartpole" if panel == "CartPole-v1" else "mountaincar",
                                 method=method, seed=seed, episode=episode, training_episode=episode - 1,
                                 **{"return": value}, cum_avg_return=value if episode > 1 else math.nan))
    return pd.DataFrame(rows)


def test_the_rl_claim_is_judged_on_the_paired_final_return_and_skips_floor_tasks():
    from optex import report

    finals = {("CartPole-v1", "vanilla"): [10, 12, 14], ("CartPole-v1", "optex"): [30, 33, 34],
              ("CartPole-v1", "target"): [40, 41, 45]}
    finals.update({("MountainCar-v0", m): [-200, -200, -200] for m in ("vanilla", "optex", "target")})
    finding = report.collects_more_reward()(_episodes_frame(finals))
    # OptEx - Vanilla per seed: 20, 21, 20 -> interval above 0; it closes (20.33 / 30) of the gap to Target.
    assert finding.verdict == "reproduced"
    assert "CartPole-v1: OptEx − Vanilla 20.3 [18.9, 21.8]" in finding.ours
    assert "MountainCar-v0: every return −200" in finding.ours
    behind = {**finals, ("CartPole-v1", "optex"): [11, 14, 13]}  # ahead on the mean, interval not above 0
    assert report.collects_more_reward()(_episodes_frame(behind)).verdict == "partly"
    far = {**finals, ("CartPole-v1", "optex"): [15, 17, 19]}  # above Vanilla but only 1/6 of the way to Target
    assert report.collects_more_reward()(_episodes_frame(far)).verdict == "partly"
    worse = {**finals, ("CartPole-v1", "optex"): [5, 6, 7]}
    assert report.collects_more_reward()(_episodes_frame(worse)).verdict == "not reproduced"


def test_rl_tables_read_the_runs():
    from optex import plotting

    finals = {("CartPole-v1", "vanilla"): [10, 12, 14], ("CartPole-v1", "optex"): [300, 20, 260]}
    frame = _episodes_frame(finals)
    table = rl.threshold_table(frame)
    shown = plotting.rl_threshold_display(table).set_index("Method")
    reach = "Training episodes to the threshold (95% interval)"
    assert (shown.loc["OptEx", reach], shown.loc["OptEx", "Censored seeds"]) == ("1 [1, 1]", "1 of 3")
    assert (shown.loc["Vanilla", reach], shown.loc["Vanilla", "Censored seeds"]) == ("> 4", "3 of 3")
    text = plotting.rl_reading_text(table, frame)
    assert "OptEx minus Vanilla, seed by seed: 181.3" in text


def test_negative_returns_reach_tables_and_prose_with_a_minus_sign():
    from optex import book, plotting, report

    finals = {("MountainCar-v0", "vanilla"): [-200, -180, -190], ("MountainCar-v0", "optex"): [-150, -120, -170],
              ("MountainCar-v0", "target"): [-100, -105, -110]}
    frame = _episodes_frame(finals)
    table = rl.threshold_table(frame)
    shown = plotting.rl_threshold_display(table)
    threshold = rl.TASKS["mountaincar"].threshold
    assert threshold < 0 and set(shown["Task (threshold)"]) == {f"MountainCar-v0 (−{-threshold:g})"}
    texts = [*shown.astype(str).to_numpy().ravel(), plotting.rl_reading_text(table, frame),
             report.collects_more_reward()(frame).ours]
    cosines = pd.DataFrame(dict(panel="MountainCar-v0", method=["optex", "last_gradient"], stale=[0.4, 0.1],
                                current=[0.3, 0.2]))
    texts.append(plotting.rl_cosine_reading(cosines))
    assert "−0.10" in texts[-1]  # the cosine rose: a negative loss
    for text in texts:
        assert not book._HYPHEN_MINUS.search(text), text
    assert "−" in texts[-2] and "−" in texts[-3]


def test_rl_cosine_table_weights_episodes_by_their_updates_and_the_figures_draw_every_task():
    from optex import plotting

    rows = []
    for seed, (stale, current) in enumerate([((0.2, 1, 0.6, 3), (0.8, 2, 0.9, 2)), ((0.4, 2, 0.4, 2), (0.7, 1, 0.7, 1))]):
        for episode, ((s_cos, s_n), (c_cos, c_n)) in enumerate([(stale[:2], current[:2]), (stale[2:], current[2:])]):
            rows.append(dict(panel="CartPole-v1", task="cartpole", method="optex", seed=seed, episode=episode + 1,
                             training_episode=episode + 1, proxy_cosine_1=0.5, proxy_cosine_stale=s_cos,
                             stale_updates=s_n, proxy_cosine_current=c_cos, current_updates=c_n,
                             **{"return": 1.0}, cum_avg_return=1.0))
    table = plotting.rl_cosine_table(pd.DataFrame(rows)).iloc[0]
    # Seed 0: stale (0.2 * 1 + 0.6 * 3) / 4 = 0.5, current (0.8 * 2 + 0.9 * 2) / 4 = 0.85; seed 1: 0.4 and 0.7.
    assert table["stale"] == pytest.approx(0.45) and table["current"] == pytest.approx(0.775)
    assert (table["stale_updates"], table["current_updates"]) == (8, 6)
    fig, summary = plotting.rl_curves(pd.DataFrame(rows), {"CartPole-v1": "CartPole-v1 (d = 1)"}, ["optex"])
    assert fig.axes[0].get_title() == "CartPole-v1 (d = 1)" and set(summary["training_episode"]) == {1, 2}
    fig, summary = plotting.rl_cosine_figure(pd.DataFrame(rows), {"CartPole-v1": "CartPole-v1"})
    assert summary["center"].tolist() == [0.5, 0.5]

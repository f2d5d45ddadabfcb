"""optex.torch.OptEx on an nn.Module as people write them: BatchNorm buffers, dropout, train/eval mode,
checkpoints and the trace hook, each against an independent reference (a plain torch.optim loop, a plain
forward pass, an uninterrupted run)."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch.func import functional_call

from optex.torch import OptEx

F64 = torch.float64
N = 4


def make_model(dropout=0.0):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(5, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh()]
    layers += [torch.nn.Dropout(dropout)] if dropout else []
    return torch.nn.Sequential(*layers, torch.nn.Linear(16, 1)).double()


def data(steps, n=N, size=32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[(torch.randn(size, 5, generator=gen, dtype=F64), torch.randn(size, 1, generator=gen, dtype=F64))
             for _ in range(n)] for _ in range(steps)]


def module_loss(model):
    def loss_fn(params, buffers, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(functional_call(model, (params, buffers), (x,)), y)
    return loss_fn


def wrap(model, **kwargs):
    return OptEx(dict(model.named_parameters()), buffers=dict(model.named_buffers()), **kwargs)


def assert_models(a, b, exact=True):
    for (name, u), v in zip(list(a.named_parameters()) + list(a.named_buffers()),
                            list(b.parameters()) + list(b.buffers())):
        if exact or not u.is_floating_point():
            assert torch.equal(u, v), name
        else:
            torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-10, msg=name)


def plain_steps(model, batches, lr=0.01):
    """The ordinary training loop, one batch per step (train mode)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("parallel", ["loop", "vmap"])
def test_parallelism_one_is_the_plain_loop_running_stats_included(parallel):
    """Bit for bit with one autograd call per step; vmap batches the matmuls differently (last bits)."""
    batches = [b[0] for b in data(10, n=1)]
    model, reference = make_model(), make_model()
    opx = wrap(model, parallelism=1, parallel=parallel, lr=0.01)
    for batch in batches:
        opx.step(module_loss(model), [batch])
    plain_steps(reference, batches)
    assert_models(model, reference, exact=parallel == "loop")
    assert int(model[1].num_batches_tracked) == 10


@pytest.mark.parametrize("parallel", ["loop", "vmap"])
@pytest.mark.parametrize("select", ["last", "min_loss"])
def test_running_stats_are_those_of_the_selected_process(parallel, select):
    """With N = 4 the running statistics after each step are those of one plain forward pass (train mode)
    from the previous statistics, at the selected process's point, on its batch; num_batches_tracked
    counts sequential iterations (the others' updates are discarded)."""
    model = make_model()
    opx = wrap(model, parallelism=N, select=select, parallel=parallel, history=20, lr=0.05)
    loss_fn = module_loss(model)
    probe = make_model()
    picked = set()
    for t, batches in enumerate(data(8)):
        before = {k: v.clone() for k, v in model.named_buffers()}
        info = opx.step(loss_fn, batches, trace=True)
        chosen = info.selected
        picked.add(chosen)
        point = opx.unflatten(info.points[chosen])
        stats = {k: v.clone() for k, v in before.items()}
        with torch.no_grad():
            functional_call(probe, (point, stats), (batches[chosen][0],))
        for name, value in model.named_buffers():
            if parallel == "loop" or not value.is_floating_point():
                assert torch.equal(value, stats[name]), (t, name)
            else:
                torch.testing.assert_close(value, stats[name], rtol=1e-10, atol=1e-12)
        assert int(model[1].num_batches_tracked) == t + 1
    if select == "min_loss":
        assert len(picked) > 1


@pytest.mark.parametrize("parallel", ["loop", "vmap"])
def test_target_with_batchnorm_is_n_times_t_sequential_steps(parallel):
    steps = 4
    batches = data(steps)
    model, reference = make_model(), make_model()
    opx = wrap(model, parallelism=N, proxy="target", parallel=parallel, lr=0.01)
    for t in range(steps):
        opx.step(module_loss(model), batches[t])
    plain_steps(reference, [b for group in batches for b in group])
    assert_models(model, reference, exact=parallel == "loop")
    assert int(model[1].num_batches_tracked) == N * steps


def test_large_batch_keeps_the_mean_of_the_updated_statistics():
    model = make_model()
    opx = wrap(model, parallelism=N, proxy="large_batch", parallel="loop", lr=0.01)
    batches = data(1)[0]
    before = {k: v.clone() for k, v in model.named_buffers()}
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    opx.step(module_loss(model), batches)
    updated = []
    for x, _ in batches:
        stats = {k: v.clone() for k, v in before.items()}
        with torch.no_grad():
            functional_call(make_model(), (params, stats), (x,))
        updated.append(stats)
    for name, value in model.named_buffers():
        if value.is_floating_point():
            torch.testing.assert_close(value, torch.stack([u[name] for u in updated]).mean(0), rtol=1e-14, atol=0)
        else:
            assert torch.equal(value, updated[0][name])


def test_eval_mode_reads_but_never_updates_the_statistics():
    model, reference = make_model(dropout=0.5), make_model(dropout=0.5)
    with torch.no_grad():  # non-trivial statistics to read
        for stats in (model[1], reference[1]):
            stats.running_mean.fill_(0.3)
            stats.running_var.fill_(2.0)
    model.eval()
    reference.eval()
    frozen = {k: v.clone() for k, v in model.named_buffers()}
    opx = wrap(model, parallelism=1, parallel="loop", lr=0.01)
    batches = [b[0] for b in data(5, n=1)]
    for batch in batches:
        opx.step(module_loss(model), [batch])
    opt = torch.optim.Adam(reference.parameters(), lr=0.01)
    for x, y in batches:  # eval mode: running statistics used, dropout off, nothing updated
        opt.zero_grad()
        torch.nn.functional.mse_loss(reference(x), y).backward()
        opt.step()
    assert_models(model, reference)
    for name, value in model.named_buffers():
        assert torch.equal(value, frozen[name])


# ---------------------------------------------------------------------------- dropout and seeds
def dropout_run(seed, parallel="vmap", steps=4, proxy="kernel"):
    model = make_model(dropout=0.3)
    opx = wrap(model, parallelism=N, parallel=parallel, seed=seed, proxy=proxy, history=20, lr=0.05)
    state = torch.get_rng_state()
    infos = [opx.step(module_loss(model), batches) for batches in data(steps)]
    if seed is not None:
        assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    return model, infos


@pytest.mark.parametrize("parallel", ["vmap", "loop"])
def test_dropout_runs_are_reproducible_by_seed(parallel):
    a, infos_a = dropout_run(3, parallel)
    b, infos_b = dropout_run(3, parallel)
    c, infos_c = dropout_run(4, parallel)
    assert_models(a, b)
    assert [i.losses for i in infos_a] == [i.losses for i in infos_b]
    assert [i.losses for i in infos_a] != [i.losses for i in infos_c]


def test_without_a_seed_the_global_generator_decides():
    torch.manual_seed(11)
    a, infos_a = dropout_run(None)
    torch.manual_seed(11)
    b, infos_b = dropout_run(None)
    assert_models(a, b)
    assert [i.losses for i in infos_a] == [i.losses for i in infos_b]


def test_each_process_draws_its_own_dropout_mask_under_vmap():
    """Target's first process and a one-process run evaluate the same batch at the same point; with
    N copies of one batch at one point (LargeBatch) independent masks make the N losses differ, while
    without dropout they are equal."""
    batch = data(1, n=1)[0][0]
    for dropout, distinct in ((0.5, N), (0.0, 1)):
        model = make_model(dropout=dropout)
        opx = wrap(model, parallelism=N, proxy="kernel", seed=0, history=10, lr=1e-12)
        opx.step(module_loss(model), [batch] * N)
        info = opx.step(module_loss(model), [batch] * N)  # the N points coincide up to ~1e-12 steps
        rounded = {round(v, 6) for v in info.losses}
        assert len(rounded) == distinct


# ---------------------------------------------------------------------------- checkpoints
def checkpoint_roundtrip(opx):
    buffer = io.BytesIO()
    torch.save(opx.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_save_at_17_of_40_and_continue_bit_for_bit():
    """BatchNorm, dropout, a seed, minibatches, Adam, the kernel history: the resumed run equals the
    uninterrupted one bit for bit (iterate, running statistics, every StepInfo)."""
    batches = data(40, n=3, size=16)
    settings = dict(parallelism=3, history=12, seed=7, lr=0.02)
    whole = make_model(dropout=0.2)
    opx = wrap(whole, **settings)
    infos = [opx.step(module_loss(whole), batches[t]) for t in range(40)]
    first = make_model(dropout=0.2)
    opx = wrap(first, **settings)
    for t in range(17):
        opx.step(module_loss(first), batches[t])
    saved = checkpoint_roundtrip(opx)
    resumed_model = make_model(dropout=0.2)  # a fresh object with the same settings
    resumed = wrap(resumed_model, **settings)
    resumed.load_state_dict(saved)
    assert resumed.iteration == 17
    for t in range(17, 40):
        info = resumed.step(module_loss(resumed_model), batches[t])
        assert (info.losses, info.selected, info.proxy_cosine, info.lengthscale) == (
            infos[t].losses, infos[t].selected, infos[t].proxy_cosine, infos[t].lengthscale), t
    assert_models(resumed_model, whole)


@pytest.mark.parametrize("proxy", ["last_gradient", "linesearch", "target", "large_batch"])
def test_checkpoints_of_the_baselines(proxy):
    batches = data(10, size=8)
    model = make_model()
    opx = wrap(model, parallelism=N, proxy=proxy, optimizer=torch.optim.SGD, momentum=0.9, lr=0.01)
    for t in range(4):
        opx.step(module_loss(model), batches[t])
    twin_model = make_model()
    twin = wrap(twin_model, parallelism=N, proxy=proxy, optimizer=torch.optim.SGD, momentum=0.9, lr=0.01)
    twin.load_state_dict(checkpoint_roundtrip(opx))
    for t in range(4, 10):
        assert opx.step(module_loss(model), batches[t]).losses == twin.step(module_loss(twin_model), batches[t]).losses
    assert_models(model, twin_model)


def test_a_checkpoint_of_other_settings_is_refused():
    model = make_model()
    saved = wrap(model, parallelism=N, lr=0.01).state_dict()
    with pytest.raises(ValueError, match="parallelism"):
        wrap(make_model(), parallelism=3, lr=0.01).load_state_dict(saved)
    with pytest.raises(ValueError, match="state"):
        wrap(make_model(), parallelism=N, lr=0.01).load_state_dict({"theta": 1})


# ---------------------------------------------------------------------------- trace
def quadratic(p, batch=None):
    return 0.5 * ((p - 1.0) ** 2 * torch.arange(1.0, 7.0, dtype=F64)).sum() + 0.2 * torch.sin(3 * p).sum()


def step_from(theta, state, grad, lr=0.05):
    p = theta.clone().requires_grad_(True)
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    if state:
        opt.state[p] = copy.deepcopy(state)
    p.grad = grad.clone()
    opt.step()
    return p.detach().clone(), copy.deepcopy(opt.state[p])


def true_grad(theta):
    x = theta.clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(quadratic(x), x)
    return g


@pytest.mark.parametrize("proxy", ["kernel", "last_gradient", "target", "linesearch"])
def test_trace_reports_the_points_the_drivers_and_every_real_step(proxy):
    x = torch.linspace(-1.0, 1.0, 6, dtype=F64)
    kwargs = dict(optimizer=torch.optim.SGD, parallelism=N, proxy=proxy, history=10, momentum=0.9, lr=0.05)
    traced, plain = OptEx(x.clone(), **kwargs), OptEx(x.clone(), **kwargs)
    last = None
    for t in range(4):
        theta = traced.theta
        state = copy.deepcopy(traced.optimizer.state.get(traced.optimizer.param_groups[0]["params"][0], {}))
        est = copy.deepcopy(traced.estimator)
        info = traced.step(quadratic, trace=True)
        plain.step(quadratic)
        assert torch.equal(traced.theta, plain.theta), t  # tracing changes nothing in the algorithm
        if info.evaluations == 1:  # cold start: one point, one step
            assert info.mus is None and torch.equal(info.points[0], theta)
            torch.testing.assert_close(info.stepped[0], step_from(theta, state, true_grad(theta))[0], rtol=0, atol=0)
            last = true_grad(theta)
            continue
        points, states = [theta], [state]
        for s in range(1, N):
            if proxy == "linesearch":
                nxt, st = step_from(theta, state, last * (s > 0), lr=0.05 * s)
            else:
                driver = {"kernel": lambda p: est.mean(p), "last_gradient": lambda p: last, "target": true_grad}[proxy]
                nxt, st = step_from(points[-1], states[-1], driver(points[-1]))
            points.append(nxt)
            states.append(st)
        if proxy == "linesearch":
            points[0], states[0] = step_from(theta, state, torch.zeros_like(theta), lr=0.0)
        torch.testing.assert_close(info.points, torch.stack(points), rtol=1e-13, atol=1e-14)
        if proxy == "linesearch":
            assert info.mus is None
        else:
            driver = {"kernel": lambda p: est.mean(p), "last_gradient": lambda p: last, "target": true_grad}[proxy]
            drivers = torch.stack([driver(p) for p in points[:-1]])
            torch.testing.assert_close(info.mus, drivers, rtol=1e-12, atol=1e-13)
        stepped = [step_from(points[s], states[s], true_grad(points[s]), lr=0.05)[0] for s in range(N)]
        torch.testing.assert_close(info.stepped, torch.stack(stepped), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(traced.theta, info.stepped[info.selected], rtol=0, atol=0)
        last = true_grad(points[info.selected])


def test_picard_checkpoint_keeps_its_window():
    from optex.torch import Picard

    def loss(p, batch=None):
        return ((p - 1.0) ** 2).sum() + 0.3 * torch.sin(4.0 * p).sum()

    start = torch.linspace(-1.0, 1.0, 8, dtype=F64)
    run = Picard(start.clone(), parallelism=3, tol=1e-8, lr=0.05)
    for _ in range(3):
        run.step(loss)
    twin = Picard(start.clone(), parallelism=3, tol=1e-8, lr=0.05)
    twin.load_state_dict(checkpoint_roundtrip(run))
    for _ in range(4):
        assert run.step(loss).advanced == twin.step(loss).advanced
    assert twin.steps == run.steps and torch.equal(twin.theta, run.theta)

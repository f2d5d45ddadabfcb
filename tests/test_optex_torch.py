"""OptEx (Algorithm 1) and its baselines against hand-written torch.optim references."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from optex.torch import GradientEstimator, OptEx

F64 = torch.float64
D = 6


# ---------------------------------------------------------------------------- objectives
def _matrix(d=D, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=gen, dtype=F64)
    return A @ A.T / d + torch.eye(d, dtype=F64)


A_MAT = _matrix()


def smooth_loss(x, batch=None):
    """Smooth, non-convex, with a dense coupling term."""
    return (0.5 * x @ A_MAT @ x + torch.log(torch.cosh(x - 0.3)).sum() + 0.1 * (x**4).sum()
            + 0.5 * torch.sin(3.0 * x).sum())


def batch_loss(x, batch):
    """Minibatch loss: the batch (a dict holding a tuple) moves the minimum and reweights the terms."""
    w, c = batch["wc"]
    return 0.5 * (w * (x - c) ** 2).sum() + 0.5 * torch.sin(3.0 * x).sum() + 0.05 * (x**4).sum()


def make_batches(n, d=D, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [{"wc": (1.0 + torch.rand(d, generator=gen, dtype=F64), torch.randn(d, generator=gen, dtype=F64))}
            for _ in range(n)]


def x_init(d=D, seed=2):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def value_and_grad(loss, x, batch=None):
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        value = loss(x, batch)
        (g,) = torch.autograd.grad(value, x)
    return value.detach(), g


# ---------------------------------------------------------------------------- reference optimizer steps
def clone_state(state):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def opt_step(opt_cls, kwargs, theta, state, grad, lr=None):
    """One plain torch.optim step from (theta, state) with the given gradient -> (theta', state')."""
    p = theta.detach().clone().requires_grad_(True)
    opt = opt_cls([p], **kwargs)
    if lr is not None:
        opt.param_groups[0]["lr"] = lr
    if state is not None:
        opt.state[p] = clone_state(state)
    p.grad = grad.clone()
    opt.step()
    return p.detach().clone(), clone_state(opt.state[p])


def clip(g, max_norm):
    if max_norm is None:
        return g
    return g * (max_norm / g.norm()).clamp(max=1.0)


def plain_loop(opt_cls, kwargs, x0, loss, steps, batches=None):
    """The ordinary torch training loop; returns the iterates, the losses and the final optimizer state."""
    p = x0.clone().requires_grad_(True)
    opt = opt_cls([p], **kwargs)
    iterates, losses = [], []
    for t in range(steps):
        opt.zero_grad()
        value = loss(p, None if batches is None else batches[t])
        value.backward()
        opt.step()
        iterates.append(p.detach().clone())
        losses.append(float(value.detach()))
    return iterates, losses, clone_state(opt.state[p])


def reference_iteration(opt_cls, kwargs, theta, state, est, loss, n, batches=None, select="last",
                        max_grad_norm=None, warmup=1):
    """One sequential iteration of Algorithm 1 written out with plain optimizers; ``est`` (a GradientEstimator)
    holds the history and receives the new pairs. Returns a dict of what happened."""
    if len(est) < warmup:  # cold start: one plain step on batch 0
        value, g = value_and_grad(loss, theta, None if batches is None else batches[0])
        est.add(theta.unsqueeze(0), g.unsqueeze(0))
        theta, state = opt_step(opt_cls, kwargs, theta, state, clip(g, max_grad_norm))
        return dict(theta=theta, state=state, chosen=0, values=(float(value),), norms=(float(g.norm()),),
                    cos=(), rel=(), lengthscale=None, points=None)
    points, states, mus = [theta], [state], []
    for s in range(1, n):  # Eq. (5): proxy steps with the posterior mean, optimizer state carried along
        mus.append(est.mean(points[-1]))
        nxt, st = opt_step(opt_cls, kwargs, points[-1], states[-1], clip(mus[-1], max_grad_norm))
        points.append(nxt)
        states.append(st)
    lengthscale = est.lengthscale_
    values, grads, outs = [], [], []
    for s in range(n):  # process s: true gradient at its point on its own batch, one step from its own state
        value, g = value_and_grad(loss, points[s], None if batches is None else batches[s])
        values.append(float(value))
        grads.append(g)
        outs.append(opt_step(opt_cls, kwargs, points[s], states[s], clip(g, max_grad_norm)))
    norms = [float(g.norm()) for g in grads]
    key = {"last": None, "min_loss": values, "min_grad_norm": norms}[select]
    chosen = n - 1 if key is None else min(range(n), key=lambda i: (key[i], i))
    est.add(torch.stack(points), torch.stack(grads))
    cos = tuple(float(torch.nn.functional.cosine_similarity(m, g, dim=0)) for m, g in zip(mus, grads))
    rel = tuple(float((m - g).norm() / g.norm()) for m, g in zip(mus, grads))
    theta, state = outs[chosen]
    return dict(theta=theta, state=state, chosen=chosen, values=tuple(values), norms=tuple(norms), cos=cos,
                rel=rel, lengthscale=lengthscale, points=torch.stack(points))


def state_of(opx: OptEx):
    """The optimizer state of the kept process (the first parameter of the wrapped optimizer)."""
    p0 = opx.optimizer.param_groups[0]["params"][0]
    return opx.optimizer.state[p0]


def assert_states_equal(got, expected, exact=True):
    assert set(got) == set(expected)
    for key in expected:
        a, b = got[key], expected[key]
        if isinstance(b, torch.Tensor):
            if exact:
                assert torch.equal(a, b), key
            else:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=key)
        else:
            assert a == b, key


OPTIMIZERS = [
    pytest.param(torch.optim.SGD, dict(lr=0.05), id="sgd"),
    pytest.param(torch.optim.SGD, dict(lr=0.05, momentum=0.9), id="sgd-momentum"),
    pytest.param(torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2), id="sgd-nesterov"),
    pytest.param(torch.optim.Adam, dict(lr=0.05), id="adam"),
    pytest.param(torch.optim.Adam, dict(lr=0.05, amsgrad=True), id="adam-amsgrad"),
    pytest.param(torch.optim.AdamW, dict(lr=0.05, weight_decay=0.1), id="adamw"),
    pytest.param(torch.optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True), id="rmsprop"),
    pytest.param(torch.optim.Adagrad, dict(lr=0.1), id="adagrad"),
    pytest.param(torch.optim.NAdam, dict(lr=0.05), id="nadam"),
]


# ---------------------------------------------------------------------------- N = 1: plain optimizer
@pytest.mark.parametrize("opt_cls,kwargs", OPTIMIZERS)
@pytest.mark.parametrize("parallel", ["vmap", "loop"])
def test_parallelism_one_is_the_plain_optimizer_bit_for_bit(opt_cls, kwargs, parallel):
    x0 = x_init()
    x = x0.clone()
    opx = OptEx(x, optimizer=opt_cls, parallelism=1, parallel=parallel, **kwargs)
    iterates, losses, final_state = plain_loop(opt_cls, kwargs, x0, smooth_loss, 12)
    for t in range(12):
        info = opx.step(smooth_loss)
        assert torch.equal(x, iterates[t]), t  # the tensor passed in is updated in place
        assert info.loss == pytest.approx(losses[t], rel=1e-14)  # a vmapped forward may differ in the last bit
        assert info.selected == 0 and info.evaluations == 1 and len(info.losses) == 1
    assert opx.params is x
    assert opx.iteration == 12
    assert_states_equal(state_of(opx), final_state)


def test_vanilla_proxy_none_is_the_plain_optimizer_with_batches():
    x0, batches = x_init(), make_batches(10)
    x = x0.clone()
    opx = OptEx(x, optimizer=torch.optim.Adam, parallelism=1, proxy="none", lr=0.05)
    iterates, losses, final_state = plain_loop(torch.optim.Adam, dict(lr=0.05), x0, batch_loss, 10, batches)
    for t in range(10):
        info = opx.step(batch_loss, [batches[t]])
        assert torch.equal(x, iterates[t])
        assert info.loss == losses[t] and info.evaluations == 1
    assert opx.estimator is None


@pytest.mark.parametrize("opt_cls,kwargs", [OPTIMIZERS[2], OPTIMIZERS[3]])
def test_dict_params_are_the_plain_optimizer_bit_for_bit(opt_cls, kwargs):
    gen = torch.Generator().manual_seed(3)
    Xd = torch.randn(8, 3, generator=gen, dtype=F64)
    Y = torch.randn(8, 2, generator=gen, dtype=F64)

    def loss(params, batch=None):
        pred = torch.tanh(Xd @ params["w"] + params["b"])
        return ((pred - Y) ** 2).mean() + 0.01 * (params["w"] ** 2).sum()

    w0, b0 = torch.randn(3, 2, generator=gen, dtype=F64), torch.randn(2, generator=gen, dtype=F64)
    w, b = w0.clone(), b0.clone()
    # parallel="loop": one autograd call, as in the reference (under vmap the bias gradient's sum over the
    # batch is reduced by another kernel, whose order -- hence last bits -- depends on the CPU).
    opx = OptEx({"w": w, "b": b}, optimizer=opt_cls, parallelism=1, parallel="loop", **kwargs)
    pw, pb = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = opt_cls([pw, pb], **kwargs)
    for t in range(10):
        info = opx.step(loss)
        opt.zero_grad()
        value = loss({"w": pw, "b": pb})
        value.backward()
        opt.step()
        assert torch.equal(w, pw.detach()) and torch.equal(b, pb.detach()), t
        assert info.loss == pytest.approx(float(value.detach()), rel=1e-14)
    params = opx.params
    assert params["w"] is w and params["b"] is b
    assert torch.equal(opx.theta, torch.cat([w.reshape(-1), b]))


def test_dict_params_follow_the_same_trajectory_as_a_flat_tensor():
    """Kernel OptEx on {"a": 2x2, "b": 2} is the same algorithm as on the flat 6-vector."""
    x0 = x_init()

    def dict_loss(params, batch=None):
        return smooth_loss(torch.cat([params["a"].reshape(-1), params["b"]]))

    a, b = x0[:4].reshape(2, 2).clone(), x0[4:].clone()
    x = x0.clone()
    opts = dict(optimizer=torch.optim.Adam, parallelism=3, history=10, lengthscale="median", lr=0.05)
    flat, nested = OptEx(x, **opts), OptEx({"a": a, "b": b}, **opts)
    for _ in range(6):
        i1, i2 = flat.step(smooth_loss), nested.step(dict_loss)
        assert i1.selected == i2.selected
        torch.testing.assert_close(torch.cat([a.reshape(-1), b]), x, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------- Target
@pytest.mark.parametrize("opt_cls,kwargs", [OPTIMIZERS[1], OPTIMIZERS[3], OPTIMIZERS[8]])
@pytest.mark.parametrize("with_batches", [False, True])
def test_target_last_is_n_times_t_sequential_steps(opt_cls, kwargs, with_batches):
    n, steps = 3, 4
    x0 = x_init()
    loss = batch_loss if with_batches else smooth_loss
    flat_batches = make_batches(n * steps) if with_batches else None
    x = x0.clone()
    opx = OptEx(x, optimizer=opt_cls, parallelism=n, proxy="target", select="last", **kwargs)
    iterates, losses, final_state = plain_loop(opt_cls, kwargs, x0, loss, n * steps, flat_batches)
    for t in range(steps):
        info = opx.step(loss, None if flat_batches is None else flat_batches[t * n:(t + 1) * n])
        assert torch.equal(x, iterates[(t + 1) * n - 1]), t
        assert info.losses == pytest.approx(losses[t * n:(t + 1) * n], rel=1e-14)  # the N sequential evaluations
        assert info.evaluations == n and info.selected == n - 1
    assert_states_equal(state_of(opx), final_state)  # e.g. Adam's step count is N * T


# ---------------------------------------------------------------------------- kernel OptEx vs reference
REPLAY_CASES = [
    pytest.param("last", "vmap", None, torch.optim.Adam, dict(lr=0.05), id="last-vmap-adam"),
    pytest.param("last", "loop", None, torch.optim.Adam, dict(lr=0.05), id="last-loop-adam"),
    pytest.param("min_loss", "vmap", None, torch.optim.Adam, dict(lr=0.05), id="minloss-vmap-adam"),
    pytest.param("min_grad_norm", "loop", None, torch.optim.NAdam, dict(lr=0.05), id="mingrad-loop-nadam"),
    pytest.param("last", "vmap", 0.8, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True), id="clip-vmap-sgd"),
    pytest.param("min_loss", "loop", None, torch.optim.RMSprop, dict(lr=0.02, momentum=0.3), id="minloss-loop-rmsprop"),
]
EST_KWARGS = dict(kernel="matern52", lengthscale="auto", noise=1e-3, history=10)


def check_iteration(opx, info, ref, x):
    torch.testing.assert_close(x, ref["theta"], rtol=1e-12, atol=1e-13)
    assert_states_equal(state_of(opx), ref["state"], exact=False)
    assert info.selected == ref["chosen"]
    assert info.evaluations == len(ref["values"])
    for got, exp in ((info.losses, ref["values"]), (info.proxy_cosine, ref["cos"]), (info.proxy_rel_error, ref["rel"])):
        assert len(got) == len(exp)
        assert got == pytest.approx(exp, rel=1e-10, abs=1e-12)
    assert info.loss == pytest.approx(ref["values"][ref["chosen"]], rel=1e-12)
    assert info.grad_norm == pytest.approx(ref["norms"][ref["chosen"]], rel=1e-12)
    if ref["lengthscale"] is not None:
        assert info.lengthscale == pytest.approx(ref["lengthscale"], rel=1e-12)


@pytest.mark.parametrize("select,parallel,max_grad_norm,opt_cls,kwargs", REPLAY_CASES)
def test_kernel_iterations_match_hand_written_algorithm(select, parallel, max_grad_norm, opt_cls, kwargs):
    """Each iteration, from OptEx's own iterate, optimizer state and history (a copy of its estimator), equals
    Algorithm 1 done by hand: N-1 proxy steps with mu carrying the optimizer state, process s's true step
    from the state after s proxy steps on batch s, selection, the N evaluated pairs added to the history."""
    n, steps = 4, 8
    x = x_init()
    batches = [make_batches(n, seed=10 + t) for t in range(steps)]
    opx = OptEx(x, optimizer=opt_cls, parallelism=n, select=select, parallel=parallel,
                max_grad_norm=max_grad_norm, **EST_KWARGS, **kwargs)
    picks = set()
    queries = torch.randn(3, D, generator=torch.Generator().manual_seed(99), dtype=F64)
    for t in range(steps):
        theta0, state0 = opx.theta, (clone_state(state_of(opx)) if state_of(opx) else None)
        est = copy.deepcopy(opx.estimator)
        info = opx.step(batch_loss, batches[t])
        ref = reference_iteration(opt_cls, kwargs, theta0, state0, est, batch_loss, n, batches[t], select,
                                  max_grad_norm)
        check_iteration(opx, info, ref, x)
        if ref["points"] is not None:  # the history received exactly the N evaluated pairs
            assert len(opx.estimator) == len(est)
            torch.testing.assert_close(opx.estimator.mean(queries), est.mean(queries), rtol=1e-12, atol=1e-13)
            picks.add(ref["chosen"])
    assert len(opx.estimator) == 10
    if select != "last":
        assert len(picks) > 1, "the selection rule was never exercised"


@pytest.mark.parametrize("warmup", [1, 2])
def test_cold_start_history_pairs_are_the_evaluated_points(warmup):
    x0 = x_init()
    opx = OptEx(x0.clone(), optimizer=torch.optim.SGD, parallelism=3, history=10, lengthscale=1.0,
                warmup_pairs=warmup, lr=0.1)
    points, grads = [x0], []
    for _ in range(warmup):  # the warm-up iterations are plain SGD steps, each storing its evaluated pair
        opx.step(smooth_loss)
        grads.append(value_and_grad(smooth_loss, points[-1])[1])
        points.append(points[-1] - 0.1 * grads[-1])
    assert len(opx.estimator) == warmup
    est = GradientEstimator(lengthscale=1.0, history=10)
    est.add(torch.stack(points[:warmup]), torch.stack(grads))
    torch.testing.assert_close(opx.estimator.mean(x0), est.mean(x0), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("warmup", [1, 2])
@pytest.mark.parametrize("select,parallel", [("last", "vmap"), ("min_loss", "loop")])
def test_kernel_optex_trajectory_matches_hand_written_algorithm(select, parallel, warmup):
    """The whole run against Algorithm 1 by hand with a fresh GradientEstimator fed the evaluated pairs,
    for the default one-pair warm-up and the two-pair warm-up of earlier versions."""
    n, steps, kwargs = 4, 8, dict(lr=0.05)
    x0 = x_init()
    batches = [make_batches(n, seed=10 + t) for t in range(steps)]
    x = x0.clone()
    opx = OptEx(x, optimizer=torch.optim.Adam, parallelism=n, select=select, parallel=parallel, warmup_pairs=warmup,
                **EST_KWARGS, **kwargs)
    est = GradientEstimator(**EST_KWARGS)
    theta, state = x0.clone(), None
    for t in range(steps):
        info = opx.step(batch_loss, batches[t])
        ref = reference_iteration(torch.optim.Adam, kwargs, theta, state, est, batch_loss, n, batches[t], select,
                                  warmup=warmup)
        check_iteration(opx, info, ref, x)
        theta, state = ref["theta"], ref["state"]


@pytest.mark.parametrize("select", ["last", "min_loss"])
def test_vmap_equals_loop(select):
    n, steps = 4, 8
    x0 = x_init(seed=5)
    batches = [make_batches(n, seed=30 + t) for t in range(steps)]
    xs = [x0.clone(), x0.clone()]
    runs = [OptEx(x, optimizer=torch.optim.Adam, parallelism=n, select=select, parallel=mode, history=12, lr=0.05)
            for x, mode in zip(xs, ("vmap", "loop"))]
    for t in range(steps):
        a, b = (r.step(batch_loss, batches[t]) for r in runs)
        assert a.selected == b.selected
        assert a.losses == pytest.approx(b.losses, rel=1e-13)
        torch.testing.assert_close(xs[0], xs[1], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("warmup", [1, 2])
def test_cold_start_iterations_are_plain_steps_on_batch_zero(warmup):
    n = 3
    x0 = x_init(seed=6)
    batches = [make_batches(n, seed=40 + t) for t in range(4)]
    x = x0.clone()
    opx = OptEx(x, optimizer=torch.optim.Adam, parallelism=n, history=10, warmup_pairs=warmup, lr=0.05)
    iterates, losses, final_state = plain_loop(torch.optim.Adam, dict(lr=0.05), x0, batch_loss, warmup,
                                               [b[0] for b in batches])
    for t in range(warmup):  # history < warmup_pairs: Vanilla on batch 0, one evaluation, one new pair
        info = opx.step(batch_loss, batches[t])
        assert torch.equal(x, iterates[t])
        assert info.evaluations == 1 and info.losses == (losses[t],) and info.proxy_cosine == ()
        assert len(opx.estimator) == t + 1
    info = opx.step(batch_loss, batches[warmup])
    assert info.evaluations == n and len(info.losses) == n and len(info.proxy_cosine) == n - 1
    assert len(opx.estimator) == warmup + n


# ---------------------------------------------------------------------------- batches and selection
def id_loss(x, batch):
    """Loss = the batch's id, flat in x: reveals which batch each process evaluated."""
    return batch["id"] + 0.0 * x.sum() + 0.0 * batch["pair"][1].sum()


def id_batches(n, offset=0):
    return [{"id": torch.tensor(float(offset + s), dtype=F64), "pair": (torch.zeros(2), torch.ones(3))}
            for s in range(n)]


@pytest.mark.parametrize("proxy", ["kernel", "target", "linesearch"])
@pytest.mark.parametrize("parallel", ["vmap", "loop"])
def test_process_s_evaluates_batch_s(proxy, parallel):
    n = 4
    opx = OptEx(x_init(), optimizer=torch.optim.SGD, parallelism=n, proxy=proxy, parallel=parallel, lr=0.1)
    cold = {"kernel": 1, "target": 0, "linesearch": 1}[proxy]
    for t in range(4):
        info = opx.step(id_loss, id_batches(n, offset=10 * t))
        expected = (10.0 * t,) if t < cold else tuple(10.0 * t + s for s in range(n))
        assert info.losses == expected


def test_large_batch_averages_all_batches():
    n, steps = 3, 5
    x0 = x_init(seed=7)
    batches = [make_batches(n, seed=50 + t) for t in range(steps)]
    x = x0.clone()
    opx = OptEx(x, optimizer=torch.optim.Adam, parallelism=n, proxy="large_batch", lr=0.05)
    p = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=0.05)
    for t in range(steps):
        info = opx.step(batch_loss, batches[t])
        pairs = [value_and_grad(batch_loss, p, b) for b in batches[t]]
        p.grad = torch.stack([g for _, g in pairs]).mean(0)
        opt.step()
        assert torch.equal(x, p.detach()), t
        assert info.evaluations == n
        assert info.loss == pytest.approx(sum(float(v) for v, _ in pairs) / n, rel=1e-12)
    ids = OptEx(x_init(), optimizer=torch.optim.SGD, parallelism=4, proxy="large_batch", lr=0.1)
    assert ids.step(id_loss, id_batches(4)).loss == pytest.approx(1.5)  # mean of ids 0..3: every batch used once


@pytest.mark.parametrize("n", [4, 3])
def test_large_batch_on_a_deterministic_objective_is_vanilla(n):
    x0 = x_init(seed=8)
    xa, xb = x0.clone(), x0.clone()
    big = OptEx(xa, optimizer=torch.optim.Adam, parallelism=n, proxy="large_batch", lr=0.05)
    van = OptEx(xb, optimizer=torch.optim.Adam, parallelism=1, proxy="none", lr=0.05)
    for _ in range(8):
        i1, i2 = big.step(smooth_loss), van.step(smooth_loss)
        assert i1.evaluations == n and i2.evaluations == 1
        # the N gradients are the same up to the last bit (a batched matmul may round differently)
        torch.testing.assert_close(xa, xb, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("opt_cls,kwargs", [OPTIMIZERS[1], OPTIMIZERS[3]])
def test_linesearch_matches_hand_written_reference(opt_cls, kwargs):
    """Process j steps with lr j*lr along the last selected true gradient (j = 0: zero gradient), then takes
    one true step with lr from its state; the process with the lowest loss at its proxy point is kept."""
    n, steps, lr = 4, 7, kwargs["lr"]
    x0 = x_init(seed=9)
    batches = [make_batches(n, seed=60 + t) for t in range(steps)]
    x = x0.clone()
    opx = OptEx(x, optimizer=opt_cls, parallelism=n, proxy="linesearch", **kwargs)
    theta, state, last = x0.clone(), None, None
    picks = set()
    for t in range(steps):
        info = opx.step(batch_loss, batches[t])
        if last is None:  # cold start: a plain step on batch 0
            value, last = value_and_grad(batch_loss, theta, batches[t][0])
            theta, state = opt_step(opt_cls, kwargs, theta, state, last)
            assert info.evaluations == 1 and info.losses == (float(value),)
        else:
            outs, values, grads = [], [], []
            for j in range(n):
                direction = last if j > 0 else torch.zeros_like(last)
                point, st = opt_step(opt_cls, kwargs, theta, state, direction, lr=j * lr)
                value, g = value_and_grad(batch_loss, point, batches[t][j])
                values.append(float(value))
                grads.append(g)
                outs.append(opt_step(opt_cls, kwargs, point, st, g, lr=lr))
            chosen = min(range(n), key=lambda i: (values[i], i))
            theta, state = outs[chosen]
            last = grads[chosen]
            assert info.selected == chosen and info.evaluations == n
            assert info.losses == pytest.approx(values, rel=1e-13)
            picks.add(chosen)
        torch.testing.assert_close(x, theta, rtol=1e-13, atol=1e-14)
        assert_states_equal(state_of(opx), state, exact=False)
        assert all(g["lr"] == lr for g in opx.optimizer.param_groups)  # restored after the proxy steps
    assert len(picks) > 1


def test_min_loss_ties_go_to_the_lowest_index():
    n = 4
    opx = OptEx(x_init(), optimizer=torch.optim.SGD, parallelism=n, select="min_loss", lr=0.1)

    def loss(x, b):
        return b + 0.0 * x.sum()

    for _ in range(2):
        opx.step(loss, [torch.tensor(0.0, dtype=F64)] * n)
    info = opx.step(loss, [torch.tensor(v, dtype=F64) for v in (3.0, 1.0, 1.0, 2.0)])
    assert info.losses == (3.0, 1.0, 1.0, 2.0)
    assert info.selected == 1 and info.loss == 1.0
    info = opx.step(loss, [torch.tensor(v, dtype=F64) for v in (5.0, 5.0, 5.0, 5.0)])
    assert info.selected == 0


def test_min_grad_norm_picks_the_smallest_gradient_ties_to_lowest_index():
    n = 4
    x = x_init()
    opx = OptEx(x, optimizer=torch.optim.SGD, parallelism=n, select="min_grad_norm", lr=0.1)

    def loss(x, b):  # gradient b * ones: norm |b| sqrt(d), the loss itself prefers the other processes
        return b * x.sum() - 10.0 * b.abs()

    for _ in range(2):
        opx.step(loss, [torch.tensor(1.0, dtype=F64)] * n)
    theta0, est = x.clone(), copy.deepcopy(opx.estimator)
    info = opx.step(loss, [torch.tensor(v, dtype=F64) for v in (2.0, -1.0, 1.0, 3.0)])
    assert info.selected == 1
    assert info.grad_norm == pytest.approx(math.sqrt(D))
    assert int(torch.tensor(info.losses).argmin()) == 3  # min_loss would have chosen differently
    # process 1: one proxy SGD step with mu(theta0), then one true step with its own gradient -1 * ones
    torch.testing.assert_close(x, theta0 - 0.1 * est.mean(theta0) + 0.1, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------- evaluations
@pytest.mark.parametrize("proxy,n,counts", [
    ("kernel", 3, [1, 3, 3, 3]),
    ("kernel", 1, [1, 1, 1, 1]),
    ("target", 3, [3, 3, 3, 3]),
    ("linesearch", 3, [1, 3, 3, 3]),
    ("large_batch", 3, [3, 3, 3, 3]),
    ("none", 1, [1, 1, 1, 1]),
])
def test_evaluation_counts(proxy, n, counts):
    calls = []

    def loss(x, batch=None):
        calls.append(1)
        return smooth_loss(x)

    opx = OptEx(x_init(), optimizer=torch.optim.Adam, parallelism=n, proxy=proxy, parallel="loop", lr=0.05)
    for expected in counts:
        calls.clear()
        info = opx.step(loss)
        assert info.evaluations == expected
        assert len(calls) == expected  # StepInfo.evaluations is what the objective really cost
        assert info.time_total >= 0.0


# ---------------------------------------------------------------------------- non-finite losses
def nan_loss(x, b):
    return b * torch.log(torch.cosh(x)).sum() + (x**2).sum()


def test_nan_loss_warns_and_never_enters_the_history():
    n = 3
    x = x_init()
    opx = OptEx(x, optimizer=torch.optim.Adam, parallelism=n, history=20, warmup_pairs=2, lr=0.05)
    ones = [torch.tensor(1.0, dtype=F64)] * n
    for _ in range(2):
        opx.step(nan_loss, ones)
    assert len(opx.estimator) == 2
    with pytest.warns(RuntimeWarning, match="non-finite"):
        info = opx.step(nan_loss, [torch.tensor(v, dtype=F64) for v in (1.0, math.nan, 1.0)])
    assert math.isnan(info.losses[1])
    assert len(opx.estimator) == 2 + n - 1
    assert torch.isfinite(x).all()  # "last" kept the finite process 2
    info = opx.step(nan_loss, ones)
    assert all(math.isfinite(c) for c in info.proxy_cosine)
    assert len(opx.estimator) == 2 + 2 * n - 1
    assert torch.isfinite(opx.estimator.mean(x)).all()


def test_nan_process_is_never_selected():
    n = 3
    x = x_init()
    opx = OptEx(x, optimizer=torch.optim.SGD, parallelism=n, select="min_loss", lr=0.01)
    ones = [torch.tensor(1.0, dtype=F64)] * n
    for _ in range(2):
        opx.step(nan_loss, ones)
    with pytest.warns(RuntimeWarning):
        info = opx.step(nan_loss, [torch.tensor(v, dtype=F64) for v in (math.nan, 1.0, 1.0)])
    assert info.selected in (1, 2) and math.isfinite(info.loss)
    assert torch.isfinite(x).all()


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,param", [
    (dict(parallelism=0), "parallelism"), (dict(parallelism=2.0), "parallelism"),
    (dict(parallelism=2, proxy="none"), "parallelism"),
    (dict(history=0), "history"), (dict(noise=-1.0), "noise"),
    (dict(lr=0.0), "lr"), (dict(lr=-0.1), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(kernel="laplace"), "kernel"), (dict(lengthscale="max"), "lengthscale"),
    (dict(select="max_loss"), "select"), (dict(proxy="oracle"), "proxy"), (dict(parallel="pmap"), "parallel"),
    (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(optimizer=torch.optim.LBFGS), "optimizer"), (dict(optimizer=torch.optim.SparseAdam), "optimizer"),
    (dict(optimizer=torch.nn.Linear), "optimizer"), (dict(optimizer="adam"), "optimizer"),
    (dict(optimizer=torch.optim.Adam([torch.zeros(1, requires_grad=True)])), "optimizer"),
])
def test_constructor_rejects_bad_values(kwargs, param):
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=param):
        OptEx(torch.zeros(3, dtype=F64), **kwargs)


@pytest.mark.parametrize("params", [[torch.zeros(3)], {}, {"a": torch.zeros(2), "b": 1.0}, torch.zeros(3, dtype=torch.int64),
                                    3.0])
def test_bad_params_are_rejected(params):
    with pytest.raises(ValueError, match="params"):
        OptEx(params, lr=0.1)


def test_bad_step_arguments_are_rejected():
    opx = OptEx(torch.zeros(3, dtype=F64), parallelism=3, lr=0.1)
    for batches in ([None, None], [None] * 4, 5):
        with pytest.raises(ValueError, match="batches"):
            opx.step(smooth_loss, batches)
    with pytest.raises(ValueError, match="loss_fn"):
        opx.step("not a function")
    assert opx.iteration == 0

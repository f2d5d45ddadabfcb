"""The non-finite policy of optex.torch.OptEx ("loses nothing") and overflow-safe clipping.

A process whose loss or gradient is not finite takes no step, is never selected and never enters the
history; when every process is non-finite nothing changes at all. References: plain torch.optim loops
and runs of the same objective without the bad evaluations.
"""
from __future__ import annotations

import copy
import math
import re
import warnings

import pytest
import torch

from optex.torch import GradientEstimator, OptEx

F64 = torch.float64
D, N = 6, 4
NAN = float("nan")


def loss_fn(x, batch):
    """A smooth loss times the batch's factor: a NaN (or inf) factor poisons exactly that process."""
    w, c = batch
    return w * (0.5 * ((x - c) ** 2).sum() + 0.1 * torch.sin(3.0 * x).sum() + 0.05 * (x**4).sum())


def batches(t, bad=(), value=NAN, n=N):
    gen = torch.Generator().manual_seed(100 + t)
    out = []
    for s in range(n):
        c = torch.randn(D, generator=gen, dtype=F64)
        out.append((torch.tensor(value if s in bad else 1.0, dtype=F64), c))
    return out


def x0():
    return torch.randn(D, generator=torch.Generator().manual_seed(7), dtype=F64)


def snapshot(opx):
    """Everything an iteration may change (the checkpoint minus the iteration count)."""
    state = opx.state_dict()
    state.pop("iteration")
    return state


def assert_same_tree(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_same_tree(u, v)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    else:
        assert a == b


PROXIES = ["kernel", "last_gradient", "linesearch", "target", "large_batch"]


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("value", [NAN, math.inf])
def test_an_all_non_finite_iteration_changes_nothing(proxy, value):
    """Inserting an iteration where every process is non-finite leaves iterate, optimizer state, history,
    last gradient exactly as they were, and the rest of the run is the run without it, bit for bit."""
    clean = OptEx(x0(), optimizer=torch.optim.Adam, parallelism=N, proxy=proxy, history=12, lr=0.05)
    hit = OptEx(x0(), optimizer=torch.optim.Adam, parallelism=N, proxy=proxy, history=12, lr=0.05)
    for t in range(3):
        clean.step(loss_fn, batches(t))
        hit.step(loss_fn, batches(t))
    before = snapshot(hit)
    with pytest.warns(RuntimeWarning, match="iteration 4: .*left unchanged") as record:
        info = hit.step(loss_fn, batches(3, bad=range(N), value=value))
    assert len(record) == 1
    assert info.skipped and info.selected == -1 and math.isnan(info.loss)
    assert info.evaluations == (1 if proxy == "target" else N)  # Target's chain ends at its first process
    assert info.nonfinite == ((0,) if proxy == "target" else tuple(range(N)))
    assert hit.iteration == 4
    assert_same_tree(snapshot(hit), before)
    for t in range(3, 7):
        a, b = clean.step(loss_fn, batches(t)), hit.step(loss_fn, batches(t))
        assert torch.equal(clean.theta, hit.theta), t
        assert (a.losses, a.selected) == (b.losses, b.selected)


def test_the_issue_example_keeps_theta():
    x = torch.ones(4)
    opx = OptEx(x, parallelism=3)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        for _ in range(3):
            info = opx.step(lambda p, _: p.sum() * float("nan"))
    assert torch.equal(x, torch.ones(4)) and info.skipped and opx.iteration == 3


def opt_step(opt_cls, kwargs, theta, state, grad):
    p = theta.clone().requires_grad_(True)
    opt = opt_cls([p], **kwargs)
    if state:
        opt.state[p] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    p.grad = grad.clone()
    opt.step()
    return p.detach().clone(), dict(opt.state[p])


def grad_at(theta, batch):
    x = theta.clone().requires_grad_(True)
    with torch.enable_grad():
        value = loss_fn(x, batch)
        (g,) = torch.autograd.grad(value, x)
    return float(value.detach()), g


@pytest.mark.parametrize("select,bad,expected", [
    ("last", (3,), 2), ("last", (2, 3), 1), ("last", (1, 3), 2),
    ("min_loss", (0,), None), ("min_grad_norm", (1, 2), None),
])
def test_selection_among_the_finite_processes(select, bad, expected):
    """Each bad process is skipped; the kept one is the hand-computed process's real step."""
    opx = OptEx(x0(), optimizer=torch.optim.Adam, parallelism=N, select=select, history=12, lr=0.05)
    for t in range(3):
        opx.step(loss_fn, batches(t))
    theta, state = opx.theta, copy.deepcopy(opx.optimizer.state[opx.optimizer.param_groups[0]["params"][0]])
    est = copy.deepcopy(opx.estimator)
    stored = len(est)
    with pytest.warns(RuntimeWarning, match=re.escape(f"iteration 4: process(es) {list(bad)}")):
        info = opx.step(loss_fn, batches(3, bad=bad))
    # the reference: proxy chain with the estimator's mean, true gradients, selection among the finite
    points, states = [theta], [state]
    for _ in range(N - 1):
        nxt, st = opt_step(torch.optim.Adam, dict(lr=0.05), points[-1], states[-1], est.mean(points[-1]))
        points.append(nxt)
        states.append(st)
    evaluated = [grad_at(points[s], b) for s, b in enumerate(batches(3, bad=bad))]
    good = [s for s in range(N) if s not in bad]
    if expected is None:
        key = [v for v, _ in evaluated] if select == "min_loss" else [float(g.norm()) for _, g in evaluated]
        expected = min(good, key=lambda s: (key[s], s))
    assert info.selected == expected and info.nonfinite == bad and not info.skipped
    theta_ref, _ = opt_step(torch.optim.Adam, dict(lr=0.05), points[expected], states[expected], evaluated[expected][1])
    torch.testing.assert_close(opx.theta, theta_ref, rtol=1e-12, atol=1e-13)
    assert len(opx.estimator) == stored + len(good)  # only the finite pairs entered the history
    assert all(math.isnan(info.losses[s]) for s in bad)


def test_target_chain_ends_at_the_first_non_finite_process():
    """Target with select='last' is N plain sequential steps; a NaN at process 2 ends the chain there:
    processes 3.. are never evaluated and the iterate is the plain loop after 2 steps."""
    calls = []

    def counted(x, batch):
        calls.append(1)
        return loss_fn(x, batch)

    opx = OptEx(x0(), optimizer=torch.optim.SGD, parallelism=N, proxy="target", parallel="loop", lr=0.05)
    data = batches(0, bad=(2,))
    with pytest.warns(RuntimeWarning, match="\\[2\\]"):
        info = opx.step(counted, data)
    assert len(calls) == 3 and info.evaluations == 3 and info.selected == 1 and len(info.losses) == 3
    p = x0().requires_grad_(True)
    plain = torch.optim.SGD([p], lr=0.05)
    for batch in data[:2]:
        plain.zero_grad()
        loss_fn(p, batch).backward()
        plain.step()
    assert torch.equal(opx.theta, p.detach())


def test_large_batch_averages_only_the_finite_gradients():
    opx = OptEx(x0(), optimizer=torch.optim.Adam, parallelism=N, proxy="large_batch", lr=0.05)
    p = x0().requires_grad_(True)
    plain = torch.optim.Adam([p], lr=0.05)
    data = batches(0, bad=(1, 3))
    with pytest.warns(RuntimeWarning):
        info = opx.step(loss_fn, data)
    pairs = [grad_at(p.detach(), data[s]) for s in (0, 2)]
    p.grad = torch.stack([g for _, g in pairs]).mean(0)
    plain.step()
    torch.testing.assert_close(opx.theta, p.detach(), rtol=1e-14, atol=0)
    assert info.loss == pytest.approx(sum(v for v, _ in pairs) / 2, rel=1e-14) and info.nonfinite == (1, 3)


@pytest.mark.parametrize("proxy", ["linesearch", "last_gradient"])
def test_last_gradient_is_only_ever_a_finite_selected_gradient(proxy):
    opx = OptEx(x0(), optimizer=torch.optim.SGD, parallelism=N, proxy=proxy, lr=0.05)
    opx.step(loss_fn, batches(0))
    last = opx._last_grad.clone()
    with pytest.warns(RuntimeWarning):
        opx.step(loss_fn, batches(1, bad=range(N)))
    assert torch.equal(opx._last_grad, last)
    with pytest.warns(RuntimeWarning):
        info = opx.step(loss_fn, batches(2, bad=(0,)))
    assert torch.isfinite(opx._last_grad).all() and info.selected != 0


def test_raise_completes_the_iteration_then_raises():
    skip = OptEx(x0(), optimizer=torch.optim.Adam, parallelism=N, history=12, lr=0.05)
    strict = OptEx(x0(), optimizer=torch.optim.Adam, parallelism=N, history=12, on_nonfinite="raise", lr=0.05)
    for t in range(2):
        skip.step(loss_fn, batches(t))
        strict.step(loss_fn, batches(t))
    with pytest.warns(RuntimeWarning):
        skip.step(loss_fn, batches(2, bad=(3,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning besides the exception
        with pytest.raises(FloatingPointError, match="iteration 3: process\\(es\\) \\[3\\]"):
            strict.step(loss_fn, batches(2, bad=(3,)))
    assert strict.iteration == 3
    assert_same_tree(snapshot(strict), snapshot(skip))  # the same outcome as the skip policy
    assert torch.isfinite(strict.theta).all()


# ---------------------------------------------------------------------------- clipping at extreme scales
def test_clipping_does_not_overflow_float32():
    """Gradients of 1e20 per entry: the float32 norm (~3e22) overflows when squared naively, which used to
    make the clip factor 0 and freeze training. Here the step is exactly max_grad_norm long."""
    d, lr, max_norm = 100, 0.1, 2.0
    x = torch.zeros(d)
    opx = OptEx(x, optimizer=torch.optim.SGD, parallelism=1, proxy="none", max_grad_norm=max_norm, lr=lr)
    direction = torch.linspace(1.0, 2.0, d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = opx.step(lambda p, _: 1e20 * (direction * p).sum())
    expected = -lr * max_norm * direction.double() / direction.double().norm()
    torch.testing.assert_close(x.double(), expected, rtol=1e-6, atol=0)
    assert info.grad_norm == pytest.approx(1e20 * float(direction.double().norm()), rel=1e-6)


def test_a_norm_beyond_float32_range_is_a_non_finite_gradient():
    """Entries of 1e38 over d = 100: the norm 1e39 is not representable in float32, so with clipping
    the process counts as non-finite and nothing moves."""
    x = torch.zeros(100)
    opx = OptEx(x, optimizer=torch.optim.SGD, parallelism=1, proxy="none", max_grad_norm=1.0, lr=0.1)
    with pytest.warns(RuntimeWarning, match="left unchanged"):
        info = opx.step(lambda p, _: 1e38 * p.sum())
    assert info.skipped and torch.equal(x, torch.zeros(100))


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_optex_with_extreme_gradient_scales_follows_the_unit_run(scale):
    """SGD is linear in the gradient: OptEx on scale * f with lr / scale takes the unit run's steps (up to
    rounding) in float32 -- every statistic of the history and the clip norms stay representable."""
    d = 50
    start = torch.rand(d, generator=torch.Generator().manual_seed(3)) * 2 - 1

    def make(factor):
        return OptEx(start.clone(), optimizer=torch.optim.SGD, parallelism=4, history=20, lr=0.05 / factor,
                     max_grad_norm=1e3 * factor)

    unit, scaled = make(1.0), make(scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(6):
            a = unit.step(lambda p, _: ((p - 0.3) ** 2).sum() + 0.1 * torch.sin(3 * p).sum())
            b = scaled.step(lambda p, _: scale * (((p - 0.3) ** 2).sum() + 0.1 * torch.sin(3 * p).sum()))
    torch.testing.assert_close(scaled.theta, unit.theta, rtol=1e-4, atol=1e-5)
    assert b.proxy_cosine == pytest.approx(a.proxy_cosine, rel=1e-3, abs=1e-4)
    assert b.lengthscale == pytest.approx(a.lengthscale, rel=1e-4)


def test_estimator_history_is_untouched_by_non_finite_pairs_in_optex():
    est_ref = GradientEstimator(history=12)
    opx = OptEx(x0(), optimizer=torch.optim.SGD, parallelism=N, history=12, lr=0.05)
    opx.step(loss_fn, batches(0))
    theta = x0()
    est_ref.add(theta, grad_at(theta, batches(0)[0])[1])
    with pytest.warns(RuntimeWarning):
        opx.step(loss_fn, batches(1, bad=(0, 1, 2, 3)))
    assert len(opx.estimator) == len(est_ref) == 1
    torch.testing.assert_close(opx.estimator.mean(theta), est_ref.mean(theta), rtol=0, atol=0)

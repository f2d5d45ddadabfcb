"""One cold-start iteration (warmup_pairs=1) and the trivial-surrogate ablation proxy="last_gradient".

With one pair in the history and a data-driven lengthscale the surrogate is the stored gradient, so
OptEx's first proxy iteration is exactly a last_gradient iteration; under plain SGD last_gradient
visits LineSearch's points theta - s lr g; with momentum the two differ.
"""
from __future__ import annotations

import math

import pytest
import torch

from optex.torch import OptEx

F64 = torch.float64
N = 4


def loss_fn(x, batch):
    w, c = batch
    return 0.5 * (w * (x - c) ** 2).sum() + 0.3 * torch.sin(2.0 * x).sum()


def batches(t, d=6):
    gen = torch.Generator().manual_seed(20 + t)
    return [(1.0 + torch.rand(d, generator=gen, dtype=F64), torch.randn(d, generator=gen, dtype=F64))
            for _ in range(N)]


def x0(d=6):
    return torch.randn(d, generator=torch.Generator().manual_seed(4), dtype=F64)


def kept_state(opx):
    return opx.optimizer.state[opx.optimizer.param_groups[0]["params"][0]]


@pytest.mark.parametrize("lengthscale", ["auto", "median"])
@pytest.mark.parametrize("optimizer,kwargs", [(torch.optim.Adam, dict(lr=0.05)),
                                              (torch.optim.SGD, dict(lr=0.05, momentum=0.9))])
def test_first_proxy_iteration_at_t2_is_a_last_gradient_iteration(lengthscale, optimizer, kwargs):
    optex = OptEx(x0(), optimizer=optimizer, parallelism=N, lengthscale=lengthscale, **kwargs)
    ablation = OptEx(x0(), optimizer=optimizer, parallelism=N, proxy="last_gradient", **kwargs)
    cold = [optex.step(loss_fn, batches(0)), ablation.step(loss_fn, batches(0))]
    assert [i.evaluations for i in cold] == [1, 1]
    a, b = optex.step(loss_fn, batches(1)), ablation.step(loss_fn, batches(1))
    assert a.evaluations == N and len(a.proxy_cosine) == N - 1  # t = 2: the first proxy iteration
    assert torch.equal(optex.theta, ablation.theta)
    for key, value in kept_state(ablation).items():
        assert torch.equal(kept_state(optex)[key], value), key
    assert (a.losses, a.selected, a.proxy_cosine, a.proxy_rel_error) == (
        b.losses, b.selected, b.proxy_cosine, b.proxy_rel_error)
    assert a.lengthscale == math.inf and b.lengthscale is None
    assert len(optex.estimator) == 1 + N


def test_warmup_pairs_two_waits_for_two_pairs():
    opx = OptEx(x0(), parallelism=N, warmup_pairs=2, lr=0.05)
    assert [opx.step(loss_fn, batches(t)).evaluations for t in range(3)] == [1, 1, N]


@pytest.mark.parametrize("select", ["last", "min_loss"])
def test_last_gradient_drives_the_proxy_steps_with_the_last_selected_gradient(select):
    opx = OptEx(x0(), optimizer=torch.optim.SGD, parallelism=N, proxy="last_gradient", select=select, lr=0.05)
    info = opx.step(loss_fn, batches(0), trace=True)
    assert info.evaluations == 1 and info.mus is None  # the first iteration is a cold Vanilla step
    for t in range(1, 5):
        x = opx.theta
        g_last = opx._last_grad.clone()
        info = opx.step(loss_fn, batches(t), trace=True)
        expected = torch.stack([x - s * 0.05 * g_last for s in range(N)])  # plain SGD: theta - s lr g
        torch.testing.assert_close(info.points, expected, rtol=1e-13, atol=1e-14)
        assert torch.equal(info.mus, g_last.expand(N - 1, -1))
        true = []
        for s in range(N - 1):
            p = info.points[s].clone().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(loss_fn(p, batches(t)[s]), p)
            true.append(g)
        cos = [float(torch.nn.functional.cosine_similarity(g_last, g, dim=0)) for g in true]
        rel = [float((g_last - g).norm() / g.norm()) for g in true]
        assert info.proxy_cosine == pytest.approx(cos, rel=1e-12)
        assert info.proxy_rel_error == pytest.approx(rel, rel=1e-12)


def test_under_plain_sgd_last_gradient_visits_linesearchs_points():
    kwargs = dict(optimizer=torch.optim.SGD, parallelism=N, lr=0.05)
    ablation = OptEx(x0(), proxy="last_gradient", select="min_loss", **kwargs)
    linesearch = OptEx(x0(), proxy="linesearch", **kwargs)
    for t in range(6):
        a, b = ablation.step(loss_fn, batches(t), trace=True), linesearch.step(loss_fn, batches(t), trace=True)
        torch.testing.assert_close(a.points, b.points, rtol=1e-13, atol=1e-14)
        assert a.selected == b.selected
        torch.testing.assert_close(ablation.theta, linesearch.theta, rtol=1e-13, atol=1e-14)


def test_with_momentum_last_gradient_and_linesearch_differ():
    kwargs = dict(optimizer=torch.optim.SGD, parallelism=N, lr=0.05, momentum=0.9)
    ablation = OptEx(x0(), proxy="last_gradient", select="min_loss", **kwargs)
    linesearch = OptEx(x0(), proxy="linesearch", **kwargs)
    ablation.step(loss_fn, batches(0))
    linesearch.step(loss_fn, batches(0))
    a, b = ablation.step(loss_fn, batches(1), trace=True), linesearch.step(loss_fn, batches(1), trace=True)
    assert torch.equal(a.points[1], b.points[1])  # one step along g from the same state: the same point
    assert not torch.allclose(a.points[2:], b.points[2:])  # momentum accumulates along the chain

"""Picard iteration reproduces the base optimizer's own trajectory, advancing 1..N steps per round."""
import pytest
import torch

from optex import problems
from optex.torch import Picard


def _sequential(problem, x0, steps, **kwargs):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], **kwargs)
    path = [x0.clone()]
    for _ in range(steps):
        opt.zero_grad()
        problem(x, torch).backward()
        opt.step()
        path.append(x.detach().clone())
    return path


@pytest.mark.parametrize("name", ["rosenbrock", "ackley", "levy"])
def test_follows_the_sequential_trajectory(name):
    problem = problems.make(name, 40)
    x0 = torch.rand(40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = _sequential(problem, x0, 80, lr=0.01)
    picard = Picard(x0.clone(), parallelism=4, tol=1e-9, lr=0.01)
    rounds = 0
    while picard.steps < 60:
        info = picard.step(lambda p, b: problem(p, torch))
        assert 1 <= info.advanced <= 4 and info.evaluations == 4
        rounds += 1
        exact = path[picard.steps]
        assert float((picard.params - exact).norm() / exact.norm().clamp_min(1)) < 1e-6
    assert rounds <= 60


def test_converged_window_advances_n_steps():
    # SGD on a quadratic with a huge tolerance: every window iterate is accepted at once.
    problem = problems.make("sphere", 10)
    picard = Picard(torch.ones(10, dtype=torch.float64), optimizer=torch.optim.SGD, parallelism=5, tol=1e9, lr=0.1)
    assert picard.step(lambda p, b: problem(p, torch)).advanced == 5
    assert picard.steps == 5


def test_rejects_batches_and_bad_tol():
    with pytest.raises(ValueError, match="tol"):
        Picard(torch.zeros(3), tol=0.0, lr=0.1)
    picard = Picard(torch.zeros(3), parallelism=2, lr=0.1)
    with pytest.raises(ValueError, match="batches"):
        picard.step(lambda p, b: p.sum(), batches=[None, None])

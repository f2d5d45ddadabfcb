"""Bad input to optex.torch.OptEx fails at once with one clear error, and edits between steps are kept.

Degenerate params and batches name the parameter (and the process); losses that torch.func.vmap cannot
batch fail with one ValueError in the user's terms that suggests parallel="loop" and keeps the torch
error as its cause; params edited in place between steps (weight decay by hand, a projection) become the
next iterate, as in a plain torch.optim loop.
"""
from __future__ import annotations

import pytest
import torch

from optex.torch import OptEx

F64 = torch.float64


@pytest.mark.parametrize("params,message", [
    (torch.zeros(0), "no elements"),
    ({"w": torch.zeros(3), "b": torch.zeros(0, 2)}, "params\\['b'\\] has no elements"),
    (torch.zeros(3, device="meta"), "meta device"),
    ({"w": torch.zeros(2, 2, device="meta")}, "params\\['w'\\] is on the meta device"),
])
def test_degenerate_params_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        OptEx(params, lr=0.1)


@pytest.mark.parametrize("kwargs,param", [
    (dict(on_nonfinite="ignore"), "on_nonfinite"), (dict(warmup_pairs=0), "warmup_pairs"),
    (dict(warmup_pairs=3), "warmup_pairs"), (dict(warmup_pairs=True), "warmup_pairs"),
    (dict(warmup_pairs=1.0), "warmup_pairs"),
    (dict(warmup_pairs=2, history=1), "warmup_pairs"), (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"),
    (dict(buffers=[torch.zeros(2)]), "buffers"), (dict(buffers={"m": 1.0}), "buffers"),
    (dict(proxy="ghost"), "proxy"),
])
def test_new_settings_are_validated(kwargs, param):
    with pytest.raises(ValueError, match=param):
        OptEx(torch.zeros(3, dtype=F64), lr=0.1, **kwargs)


def test_trace_must_be_a_bool():
    with pytest.raises(ValueError, match="trace"):
        OptEx(torch.zeros(3), lr=0.1).step(lambda p, b: p.sum(), trace=1)


def linear(p, batch):
    x, y = batch
    return ((x @ p - y) ** 2).mean()


def test_batches_of_different_shapes_name_the_process():
    opx = OptEx(torch.zeros(3), parallelism=3, lr=0.1)
    batches = [(torch.randn(8, 3), torch.randn(8)) for _ in range(3)]
    batches[2] = (torch.randn(5, 3), torch.randn(5))
    opx.step(linear, batches)  # the cold start uses batches[0] only
    with pytest.raises(ValueError, match=r"batches\[2\] has a leaf of shape \(5, 3\) where batches\[0\] has \(8, 3\)"):
        opx.step(linear, batches)
    with pytest.raises(ValueError, match=r"batches\[1\] has a different structure"):
        opx.step(linear, [batches[0], (batches[0][0],), batches[0]])
    with pytest.raises(ValueError, match=r"batches\[0\] holds a int"):
        opx.step(lambda p, b: p.sum() * b, [1, 2, 3])
    assert opx.iteration == 1 and torch.isfinite(opx.theta).all()
    # parallel="loop" takes batches of different sizes, one autograd call each
    loop = OptEx(torch.zeros(3), parallelism=3, parallel="loop", lr=0.1)
    for _ in range(2):
        info = loop.step(linear, batches)
    assert info.evaluations == 3


CAPTURED = torch.zeros(3)


def uses_item(p, b):
    return (p**2).sum() * (p.sum().item() > 0)


def python_if(p, b):
    return (p**2).sum() if p.sum() > 0 else (p**4).sum()


def mutates_captured(p, b):
    CAPTURED.add_(p.detach() * 0)  # an in-place update of a tensor from outside (like a BN buffer)
    return (p**2).sum() + (CAPTURED * p).sum()


def in_place_randomness(p, b):
    return (p * torch.empty(3).bernoulli_(0.5)).sum()


@pytest.mark.parametrize("loss,reason", [
    (uses_item, "reads a tensor's value in Python"), (python_if, "reads a tensor's value in Python"),
    (mutates_captured, "changes, in place, a tensor it did not receive"),
    (in_place_randomness, "draws random numbers in place"),
])
def test_losses_that_vmap_cannot_batch_fail_in_the_users_terms(loss, reason):
    x = torch.ones(3)
    opx = OptEx(x, parallelism=2, lr=0.1)
    with pytest.raises(ValueError, match=f"loss_fn cannot run under parallel='vmap': it {reason}") as error:
        opx.step(loss)
    assert "parallel='loop'" in str(error.value)
    assert isinstance(error.value.__cause__, RuntimeError)
    assert opx.iteration == 0 and torch.equal(x, torch.ones(3))  # nothing happened
    loop = OptEx(torch.ones(3), parallelism=2, parallel="loop", lr=0.1)  # the suggested fix works
    for _ in range(2):
        assert loop.step(loss).evaluations in (1, 2)


def test_batchnorm_without_buffers_points_to_the_buffers_argument():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    params = dict(model.named_parameters())

    def loss(p, batch):
        return torch.func.functional_call(model, p, (batch,)).pow(2).mean()

    opx = OptEx({k: v.detach().clone() for k, v in params.items()}, parallelism=2, lr=0.1)
    with pytest.raises(ValueError, match="buffers=dict\\(model.named_buffers\\(\\)\\)"):
        opx.step(loss, [torch.randn(8, 3), torch.randn(8, 3)])


@pytest.mark.parametrize("parallel", ["vmap", "loop"])
@pytest.mark.parametrize("loss,message", [
    (lambda p, b: p * 2.0, "scalar tensor, got shape \\(3,\\)"),
    (lambda p, b: 3.0, "scalar tensor, got float"),
    (lambda p, b: None, "scalar tensor, got NoneType"),
    (lambda p, b: (p.sum() > 0).long(), "floating-point scalar"),
])
def test_a_loss_that_is_not_a_scalar_tensor(parallel, loss, message):
    opx = OptEx(torch.ones(3), parallelism=2, parallel=parallel, lr=0.1)
    with pytest.raises(ValueError, match=f"loss_fn must return a {message}"):
        opx.step(loss)
    assert opx.iteration == 0


def test_other_errors_of_the_loss_pass_through_unchanged():
    opx = OptEx(torch.ones(3), parallelism=2, lr=0.1)
    with pytest.raises(RuntimeError, match="size mismatch|shapes cannot be multiplied"):
        opx.step(lambda p, b: (p @ torch.ones(4)).sum())


# ---------------------------------------------------------------------------- in-place edits between steps
def quadratic(p, batch=None):
    return ((p - 2.0) ** 2).sum() + torch.sin(3.0 * p).sum()


EDITS = {
    "weight_decay": lambda p: p.mul_(0.9),
    "projection": lambda p: p.clamp_(-0.5, 0.5),
    "through_data": lambda p: p.data.mul_(0.5),  # invisible to autograd's version counter
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("parallel", ["vmap", "loop"])
def test_edits_between_steps_are_the_next_iterate(edit, parallel):
    """With N = 1 OptEx is the plain optimizer; editing the params between steps must give the same
    trajectory as the same edits in a plain torch.optim loop, bit for bit."""
    start = torch.linspace(-1.0, 1.0, 5, dtype=F64)
    x = start.clone()
    opx = OptEx(x, optimizer=torch.optim.Adam, parallelism=1, parallel=parallel, lr=0.1)
    p = start.clone().requires_grad_(True)
    plain = torch.optim.Adam([p], lr=0.1)
    for _ in range(8):
        opx.step(quadratic)
        plain.zero_grad()
        quadratic(p).backward()
        plain.step()
        with torch.no_grad():
            EDITS[edit](x)
            EDITS[edit](p)
        assert torch.equal(x, p.detach())
    assert torch.equal(opx.theta, x)


def test_an_edit_is_where_the_next_proxy_chain_starts():
    x = torch.linspace(-1.0, 1.0, 5, dtype=F64)
    opx = OptEx(x, optimizer=torch.optim.SGD, parallelism=3, lr=0.05)
    for _ in range(3):
        opx.step(quadratic)
    with torch.no_grad():
        x.clamp_(-0.2, 0.2)
    edited = x.clone()
    info = opx.step(quadratic, trace=True)
    assert torch.equal(info.points[0], edited)  # theta^(0) = the edited iterate

# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (own-training-loop)=
# # OptEx in your own training loop
#
# OptEx wraps an ordinary first-order optimizer. Where a training loop would compute one gradient and
# take one step, an OptEx step takes a loss function and one mini-batch per parallel process, and
# evaluates the true gradient at $N$ points in one batched call. This page trains a small network both
# ways on a toy regression task, so that the two loops can be compared line by line; the network has
# BatchNorm and dropout, as real models do, and the OptEx run is checkpointed halfway and resumed. The
# two training loops took {glue:text}`own-loop-plain-seconds:.1f` s (Adam) and
# {glue:text}`own-loop-optex-seconds:.1f` s (OptEx) in this build; the whole page, with the imports and
# the compilation of the JAX step at the end, took {glue:text}`own-loop-seconds:.0f` s.

# %% tags=["parameters"]
profile = "paper"  # "paper" (100 iterations) or "quick" (40)
device = "cpu"  # "cpu", "cuda", "mps" or "auto"
backend = "torch"  # both backends are shown; an installed one
seeds = None  # None: seed 0; or seeds (the first is used)
recompute = False  # unused: this page computes everything
commit = None  # unused: this page writes no result files
parallelism = 4  # N
lr = 0.01  # Adam's learning rate
batch_size = 32

# %% tags=["hide-input"]
import importlib.util
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from optex import plotting, report
from optex.torch.adapter import resolve_device

STARTED = time.perf_counter()
FIGURE_ID = "own-loop"
ITERATIONS = {"paper": 100, "quick": 40}

page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)
iterations = ITERATIONS[page.profile]
seed = 0 if page.seeds is None else (page.seeds[0] if isinstance(page.seeds, tuple) else 0)
torch_device = resolve_device(device)

# %% [markdown]
# ## The task
#
# A two-layer perceptron with BatchNorm and dropout learns $y = \sin(x^\top w)$, with
# $\|w\| \approx 1$, from 512 noisy samples in $\mathbb{R}^8$. The training loss is reported on all
# samples in evaluation mode (BatchNorm reads its running statistics, dropout is off).

# %%
generator = torch.Generator().manual_seed(seed)
inputs = torch.randn(512, 8, generator=generator)
weights = torch.randn(8, 1, generator=generator) / 8**0.5
targets = torch.sin(inputs @ weights) + 0.05 * torch.randn(512, 1, generator=generator)
inputs, targets = inputs.to(torch_device), targets.to(torch_device)


def make_model():
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(8, 64), torch.nn.BatchNorm1d(64), torch.nn.Tanh(), torch.nn.Dropout(0.1),
              torch.nn.Linear(64, 1)]
    return torch.nn.Sequential(*layers).to(torch_device)


def sample_batch(rng):
    index = torch.randint(0, len(inputs), (batch_size,), generator=rng).to(torch_device)
    return inputs[index], targets[index]


def full_loss(model):
    model.eval()
    with torch.no_grad():
        loss = float(torch.nn.functional.mse_loss(model(inputs), targets))
    model.train()
    return loss


# %% [markdown]
# ## The usual loop
#
# One gradient, one step, per iteration:

# %%
model = make_model()
adam = torch.optim.Adam(model.parameters(), lr=lr)
rng = torch.Generator().manual_seed(seed + 1)
clock = time.perf_counter()
plain = [full_loss(model)]
for t in range(iterations):
    x, y = sample_batch(rng)
    adam.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    adam.step()
    plain.append(full_loss(model))
plain_seconds = time.perf_counter() - clock

# %% [markdown]
# ## The same loop with OptEx
#
# Four changes: the optimizer class and its arguments go to `OptEx` together with the model's parameters
# (as a dict, updated in place after every step) and its buffers (BatchNorm's running statistics); the
# loss becomes a function of `(params, buffers, batch)`, evaluated with `torch.func.functional_call`; each
# step receives $N$ batches, one per process; and `seed` makes the dropout masks reproducible. Each process
# evaluates with its own copy of the buffers and only the selected process's copy is kept, so the running
# statistics advance once per sequential iteration, as in the loop above. `step` also returns what the
# iteration did (the selected process, the loss there, timings).

# %%
from optex.torch import OptEx


def loss_fn(params, buffers, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(torch.func.functional_call(model, (params, buffers), (x,)), y)


def make_optex(model):
    return OptEx(dict(model.named_parameters()), torch.optim.Adam, parallelism=parallelism, lr=lr,
                 buffers=dict(model.named_buffers()), seed=seed)


model = make_model()
optimizer = make_optex(model)
rng = torch.Generator().manual_seed(seed + 1)
clock = time.perf_counter()
accelerated = [full_loss(model)]
for t in range(iterations):
    optimizer.step(loss_fn, [sample_batch(rng) for _ in range(parallelism)])
    accelerated.append(full_loss(model))
optex_seconds = time.perf_counter() - clock
finished = {name: value.clone() for name, value in model.state_dict().items()}

# %% tags=["hide-input"]
curves = pd.DataFrame({"iteration": range(iterations + 1), "vanilla": plain, "optex": accelerated}).melt(
    "iteration", var_name="method", value_name="loss")
curves["seed"] = seed
fig = plotting.curve_grid(curves.assign(panel=""), [""], y="loss", methods=("vanilla", "optex"), ncols=1,
                          ylabel="training loss (all samples)", height=3.0)
plotting.save_figure(fig, FIGURE_ID, curves, page.figures_dir)
glue(FIGURE_ID, fig, display=False)
plt.close(fig)
report.glue_all({"own-loop-plain": plain[-1], "own-loop-optex": accelerated[-1], "own-loop-N": parallelism,
                 "own-loop-plain-seconds": plain_seconds, "own-loop-optex-seconds": optex_seconds})
display(Markdown(f"Computed while this page was executed: seed {seed}, device `{torch_device}`, "
                 f"torch {torch.__version__}, {iterations} iterations ({page.profile} profile)."))

# %% [markdown]
# ```{glue:figure} own-loop
# :name: own-loop
#
# Training loss of the same network after each sequential iteration, with Adam alone and with OptEx
# around Adam ($N =$ {glue:text}`own-loop-N`; one seed, so no band).
# ```
#
# After the last iteration the training loss is {glue:text}`own-loop-plain:.3f` with Adam alone and
# {glue:text}`own-loop-optex:.3f` with OptEx. Each OptEx iteration evaluated $N$ gradients; whether
# that costs more wall-clock time than one gradient depends on whether the $N$ evaluations really run
# side by side (on a GPU they share one batched call).
#
# ## Checkpoint and resume
#
# `state_dict()` holds everything the run needs to continue: the iterate, the base optimizer's state,
# the estimator's history, the buffers, the iteration count and the seed, as plain tensors that
# `torch.load(..., weights_only=True)` reads back. Here a second run stops halfway and is saved, and a
# fresh model and optimizer continue from the file (with the state of the batch sampler, which is the
# loop's own business):

# %%
path = Path(tempfile.mkdtemp()) / "optex.pt"
model = make_model()
optimizer = make_optex(model)
rng = torch.Generator().manual_seed(seed + 1)
for t in range(iterations // 2):
    optimizer.step(loss_fn, [sample_batch(rng) for _ in range(parallelism)])
torch.save({"optex": optimizer.state_dict(), "sampler": rng.get_state()}, path)

model = make_model()
optimizer = make_optex(model)
checkpoint = torch.load(path, weights_only=True)
optimizer.load_state_dict(checkpoint["optex"])
rng.set_state(checkpoint["sampler"])
for t in range(iterations // 2, iterations):
    optimizer.step(loss_fn, [sample_batch(rng) for _ in range(parallelism)])
same = all(torch.equal(value, finished[name]) for name, value in model.state_dict().items())
display(Markdown(f"Resumed at iteration {iterations // 2}: parameters and running statistics after "
                 f"{iterations} iterations equal the uninterrupted run's bit for bit: **{same}**."))

# %% [markdown]
# ## Choices that matter
#
# - `parallelism` ($N$), `history` ($T_0$, the number of recent gradient pairs the estimator
#   conditions on) and `kernel` / `lengthscale` set the estimator; see {doc}`/book/api`.
# - `select="last"` keeps the last process, as in the paper's analysis; `"min_loss"` keeps the process
#   with the lowest loss.
# - `parallel="vmap"` (the default) evaluates the $N$ gradients in one batched call, each process with its
#   own dropout mask; a loss that cannot be batched that way (data-dependent control flow, some custom
#   operators) runs with `parallel="loop"`, one call per process, with the same numbers up to rounding.
#   A process's dropout mask is not the one a sequential run would draw at that step.
# - `step(loss_fn, batches, trace=True)` also returns the $N$ evaluated points and the proxy gradients
#   (`StepInfo.points`, `StepInfo.mus`), the data behind {numref}`fig1`.
#
# ## JAX
#
# The JAX backend, `optex.jax`, has the same public names. Parameters are an immutable pytree, the base
# optimizer is an optax transformation, and the whole iteration is compiled once; read the new
# parameters from `optimizer.params` after each step. The same network and data:

# %%
if importlib.util.find_spec("optex.jax") is None:
    display(Markdown("`optex.jax` is not part of this installation, so this example does not run here."))
else:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from optex.jax import OptEx as JaxOptEx

    data_x, data_y = jnp.asarray(inputs.cpu().numpy()), jnp.asarray(targets.cpu().numpy())
    key_1, key_2 = jax.random.split(jax.random.PRNGKey(seed))
    net = {"w1": 0.3 * jax.random.normal(key_1, (8, 64)), "b1": jnp.zeros(64),
           "w2": 0.1 * jax.random.normal(key_2, (64, 1)), "b2": jnp.zeros(1)}

    def jax_loss(params, batch):
        x, y = batch
        hidden = jnp.tanh(x @ params["w1"] + params["b1"])
        return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)

    jax_optimizer = JaxOptEx(net, optimizer=optax.adam(lr), parallelism=parallelism)
    batch_rng = np.random.default_rng(seed + 1)
    for t in range(iterations):
        picks = [batch_rng.integers(0, len(data_x), batch_size) for _ in range(parallelism)]
        jax_optimizer.step(jax_loss, [(data_x[i], data_y[i]) for i in picks])
    jax_final = float(jax_loss(jax_optimizer.params, (data_x, data_y)))
    display(Markdown(f"Training loss after {iterations} OptEx iterations in JAX: {jax_final:.3f} "
                     f"(jax {jax.__version__}, device `{jax_optimizer.device}`)."))

# %% tags=["remove-cell"]
glue("own-loop-seconds", time.perf_counter() - STARTED, display=False)

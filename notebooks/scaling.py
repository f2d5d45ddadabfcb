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
# (chapter-scaling)=
# # Running OptEx on many devices
#
# On one device OptEx batches its $N$ gradient evaluations with `vmap`. When one evaluation is already
# expensive, or $N$ is larger than one device serves well, the evaluations can go to $N$ workers
# instead. The library does this on the engines people already run: `torch.distributed` for PyTorch
# and a device mesh for JAX. No public OptEx implementation we know of does this; the official
# PyTorch package runs one thread per device and never takes a proxy step.
#
# **How it works.** Every worker (rank) holds the same history, optimizer states and iterate and runs
# the same proxy steps: they are cheap, deterministic and need no communication. Rank $r$ of $W$ then
# evaluates the true gradient at its block of the $N$ proxy points (process $p$ goes to rank
# $\lfloor pW/N \rfloor$: contiguous blocks whose sizes differ by at most one), with its own
# mini-batches, and one all-gather shares the $N$ gradients and losses. Every rank adds the same $N$
# pairs to its history and selects the same process, so the ranks never need to agree on anything
# else, and a checksum of $\theta$ compared every `check_every` iterations catches a rank that drifted
# anyway. The result equals the single-process run with `parallel="loop"` bit for bit (tested on 2
# and 4 processes, for OptEx, Target and LargeBatch, with BatchNorm buffers).

# %% tags=["parameters"]
profile = "paper"  # "paper": committed timings; "quick": a small measurement made now
device = "cpu"  # only "cpu": the distributed setups use gloo on this machine's cores
backend = "torch"  # only "torch" is timed here
seeds = None  # unused: one seed
recompute = False  # measure again instead of showing the committed timings
commit = None  # git commit recorded with new results where .git is absent
parallelism = 4  # N
worlds = [1, 2]  # the rank counts W timed

# %% tags=["hide-input"]
from IPython.display import Markdown, display

from optex import method_chapters, report
from optex.experiments import scaling

page = report.Page(profile=profile, device=device, backend=backend, seeds=seeds, recompute=recompute, commit=commit)
configs = scaling.chapter_configs(page, parallelism, worlds)  # a bad knob fails here, before any work starts

# %% [markdown]
# ## Launching
#
# PyTorch: write the training script as for one process, build `OptEx(..., parallel="distributed")`
# after joining the process group, and start one copy per worker with `torchrun`. Each rank needs only
# the batches of the processes it owns (the others may be `None`):
#
# ```python
# from optex.torch import OptEx, distributed
#
# rank, world = distributed.init()          # gloo on CPU, NCCL with CUDA; reads torchrun's environment
# opt = OptEx(dict(model.named_parameters()), torch.optim.Adam, lr=1e-3, parallelism=8,
#             parallel="distributed", seed=0)
# for t in range(T):
#     mine = {p for p in range(8) if distributed.owner(p, 8, world) == rank}
#     opt.step(loss_fn, [next_batch(t, p) if p in mine else None for p in range(8)])
# opt.check_ranks()                         # the ranks still hold the same theta
# ```
#
# ```bash
# torchrun --standalone --nproc-per-node=4 train.py      # one machine, 4 workers
# ```
#
# A rank that dies or hangs makes the others fail after the process group's timeout
# (`init(timeout=...)`), with an error naming the rank and the iteration, never a silent hang.
# `optex.torch.distributed.run_local(fn, W)` starts W local processes without `torchrun` (tests and
# the measurements below use it).
#
# JAX: one process drives all devices. `parallel="shard_map"` splits the $N$ evaluations over the
# devices of a one-axis mesh with `jax.shard_map` (the $N$ axis sharded in contiguous blocks, the rest
# replicated; $N$ is padded to a multiple of the device count by repeating the last point):
#
# ```python
# import jax, optax
# from jax.sharding import Mesh
# from optex.jax import OptEx
#
# mesh = Mesh(jax.devices(), ("n",))        # e.g. 4 GPUs; on a CPU try
#                                           # XLA_FLAGS=--xla_force_host_platform_device_count=4
# opt = OptEx(params, optimizer=optax.adam(1e-3), parallelism=8, parallel="shard_map", mesh=mesh)
# ```
#
# It agrees with the one-device `vmap` run to rounding (tested on four host devices: devices vmap
# blocks of different sizes, which XLA may compile to differently ordered sums).

# %% tags=["remove-input"]
results = page.results(scaling.FIGURE_ID, scaling.run, configs)
display(Markdown(report.provenance_note(results)))
chapter = method_chapters.ScalingChapter(results, configs(results.profile))
report.glue_all(chapter.settings())

# %% [markdown]
# ## What one iteration costs
#
# The 5-layer MLP of the image chapter ($d$ = {glue:text}`scaling-d` parameters, $N$ =
# {glue:text}`scaling-n`, float32, Adam), timed on this machine's CPU. Per iteration the ranks exchange
# $N \times d$ gradient entries ({glue:text}`scaling-megabytes` MB) and $N$ losses. The bars split
# rank 0's time into the proxy steps and the update, which every rank repeats, and the evaluations,
# which the ranks share (the all-gather included).

# %% tags=["hide-input"]
report.glue_all(chapter.figure())
chapter.times_table()

# %% [markdown]
# ```{glue:figure} scaling
# :name: scaling
#
# Median milliseconds per OptEx iteration by setup: one process with `vmap` (1 and 2 threads), one process
# with `parallel="loop"`, and $W$ single-thread ranks under `torch.distributed` (gloo). Black diamonds:
# the cost model below. Data: {download}`scaling.csv <figures/scaling.csv>`.
# ```
#
# The machine's load average reached {glue:text}`scaling-load` while these timings were taken. On a
# machine shared with other work the evaluations of several ranks compete for the same cores, so the
# measured times are an upper bound on what dedicated devices would give.
#
# ## A cost model for $W$ devices
#
# With $E$ the time of the $N$ evaluations on one rank, $S$ the proxy steps and the update (repeated on
# every rank) and $C(W)$ one all-gather, an iteration on $W$ ranks takes about
# $E \lceil N/W \rceil / N + S + C(W)$. $S$ is Amdahl's serial part: however many devices evaluate,
# an iteration cannot be faster than $S$. The table puts the model beside the measured points; the
# all-gather is measured at each $W$ (extrapolated from the largest measured $W$ elsewhere).

# %% tags=["hide-input"]
report.glue_all(chapter.model_table())
display(chapter.model_reading())

# %% [markdown]
# On one rank the serial part is {glue:text}`scaling-serial`% of an iteration: that fraction bounds
# the speedup any number of devices can bring to this model on this CPU. It shrinks where an evaluation
# is expensive (large batches, large models), which is where spreading the evaluations pays.
#
# GPU timings (one GPU with `vmap`, and NCCL ranks): not yet run on a GPU.

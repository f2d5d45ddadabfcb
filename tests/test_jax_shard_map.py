"""parallel="shard_map": the N evaluations over a mesh of 4 host devices equal the one-device vmap run.

The mesh needs XLA_FLAGS set before JAX is imported, so the runs happen in a child process; it prints
the largest difference per case. Devices vmap blocks of different sizes (N = 5 is padded to 8), so the
runs agree to rounding, not bit for bit.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

CHILD = textwrap.dedent('''
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np, optax
    jax.config.update("jax_enable_x64", True)
    from optex.jax import OptEx

    def loss(p, b):  # Rosenbrock plus a linear noise term drawn per process: the batch matters
        return 100 * jnp.sum((p[1:] - p[:-1] ** 2) ** 2) + jnp.sum((1 - p[:-1]) ** 2) + jnp.dot(b, p)

    out = {"devices": len(jax.devices())}
    for proxy, n in (("kernel", 5), ("target", 4)):
        runs = {}
        for mode in ("vmap", "shard_map"):
            opt = OptEx(jnp.linspace(-1.0, 1.0, 20), optimizer=optax.adam(0.01), parallelism=n, history=10,
                        proxy=proxy, parallel=mode)
            rng = np.random.default_rng(0)
            thetas, losses = [], []
            for t in range(12):
                info = opt.step(loss, [jnp.asarray(0.01 * rng.standard_normal(20)) for _ in range(n)])
                thetas.append(np.asarray(opt.theta))
                losses.append(info.loss)
            runs[mode] = (np.array(thetas), np.array(losses))
        out[f"{proxy}-{n}"] = [float(np.abs(runs["vmap"][0] - runs["shard_map"][0]).max()),
                               float(np.abs(runs["vmap"][1] - runs["shard_map"][1]).max()),
                               float(np.abs(runs["vmap"][0][-1] - runs["vmap"][0][0]).max())]
    print(json.dumps(out))
''')


def test_shard_map_over_four_devices_equals_vmap():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("devices") == 4
    for case, (theta_gap, loss_gap, moved) in out.items():
        assert moved > 0.01, case  # the runs went somewhere
        assert theta_gap <= 1e-12 and loss_gap <= 1e-10, (case, theta_gap, loss_gap)


def test_mesh_settings_are_checked():
    import jax
    import numpy as np
    from jax.sharding import Mesh

    from optex.jax import OptEx

    with pytest.raises(ValueError, match="mesh is only used with parallel='shard_map'"):
        OptEx(np.ones(3), parallelism=2, mesh=Mesh(np.array(jax.devices()), ("n",)))
    with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh with one axis"):
        OptEx(np.ones(3), parallelism=2, parallel="shard_map", mesh="cpu")
    with pytest.raises(ValueError, match="parallel must be one of 'vmap', 'loop', 'shard_map'"):
        OptEx(np.ones(3), parallelism=2, parallel="distributed")

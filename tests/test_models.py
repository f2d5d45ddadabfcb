"""optex.models: parameter counts, seeded initialisation, vmap over N points, causal attention, the JAX MLP."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from optex import models

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = {
    "mlp": (dict(in_features=784, width=32, depth=5), lambda g: torch.randn(6, 1, 28, 28, generator=g, dtype=torch.float64),
            lambda g: torch.randint(0, 10, (6,), generator=g)),
    "cnn": (dict(in_channels=3, image_size=32, width=4), lambda g: torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64),
            lambda g: torch.randint(0, 10, (6,), generator=g)),
    "transformer": (dict(vocab_size=11, width=16, depth=2, heads=4, block_size=8),
                    lambda g: torch.randint(0, 11, (3, 8), generator=g), lambda g: torch.randint(0, 11, (3, 8), generator=g)),
}


def _loss(model):
    def loss(params, x, y):
        logits = functional_call(model, params, (x,))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return loss


def test_parameter_counts_match_the_stated_d():
    assert models.num_parameters(models.MLP(784, 512, 5)) == models.mlp_dim(784, 512, 5) == 1_195_018
    assert models.num_parameters(models.MLP(784, 256, 5)) == 400_906
    assert models.num_parameters(models.CNN(3, 32, 16)) == models.cnn_dim(3, 32, 16) == 117_866
    assert models.num_parameters(models.CNN(1, 28, 16)) == models.cnn_dim(1, 28, 16)
    cpu, gpu = models.TRANSFORMER_SIZES["cpu"], models.TRANSFORMER_SIZES["gpu"]
    assert models.num_parameters(models.CharTransformer(65, **cpu)) == models.transformer_dim(65, 128, 4, 64) == 809_856
    assert models.transformer_dim(65, gpu["width"], gpu["depth"], gpu["block_size"]) == 10_770_816


def test_seeded_build_is_reproducible_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, b, c = (models.build("mlp", seed, width=16) for seed in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), name
        assert not torch.equal(p, r), name
    with pytest.raises(ValueError, match="model must be one of"):
        models.build("resnet", 0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_over_points_equals_one_autograd_call_per_point(name):
    sizes, make_x, make_y = CASES[name]
    model = models.build(name, 0, **sizes).double()
    g = torch.Generator().manual_seed(1)
    base = {k: v.detach() for k, v in model.named_parameters()}
    points = {k: v + 0.05 * torch.randn((3,) + v.shape, generator=g, dtype=v.dtype) for k, v in base.items()}
    xs, ys = torch.stack([make_x(g) for _ in range(3)]), torch.stack([make_y(g) for _ in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing batching rule warns "There is a performance drop ..."
        batched = vmap(grad(_loss(model)))(points, xs, ys)
    for i in range(3):
        params = {k: v[i].clone().requires_grad_(True) for k, v in points.items()}
        logits = functional_call(model, params, (xs[i],))
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys[i].reshape(-1)).backward()
        for k, p in params.items():
            torch.testing.assert_close(batched[k][i], p.grad, rtol=1e-10, atol=1e-12, msg=f"{name} {k} point {i}")


def test_attention_equals_the_fused_causal_kernel_and_ignores_the_future():
    model = models.build("transformer", 0, vocab_size=11, width=16, depth=2, heads=4, block_size=8).double()
    layer = model.blocks[0].attention
    x = torch.randn(2, 8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    q, k, v = (z.reshape(2, 8, 4, 4).transpose(1, 2) for z in layer.qkv(x).split(16, dim=-1))
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 8, 16)
    torch.testing.assert_close(layer(x), layer.proj(fused))
    tokens = torch.randint(0, 11, (1, 8), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[0, 5:] = (changed[0, 5:] + 1) % 11
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_transformer_head_is_tied_and_generation_is_seeded():
    model = models.build("transformer", 0, vocab_size=11, width=16, depth=1, heads=2, block_size=8)
    assert not any("head" in name for name, _ in model.named_parameters())
    x = torch.randint(0, 11, (1, 8))
    with torch.no_grad():
        hidden = model.norm(model.blocks[0](model.token(x) + model.position(torch.arange(8))))
        torch.testing.assert_close(model(x), hidden @ model.token.weight.T)
    prompt = torch.tensor([1, 2])
    one = model.generate(prompt, 20, torch.Generator().manual_seed(5))
    two = model.generate(prompt, 20, torch.Generator().manual_seed(5))
    assert len(one) == 22 and torch.equal(one, two) and torch.equal(one[:2], prompt)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.int64))


def test_jax_mlp_matches_torch_on_the_same_weights():
    jax = pytest.importorskip("jax")
    from optex.models import jax_mlp

    model = models.build("mlp", 2, in_features=784, width=32, depth=5)
    params = jax_mlp.params_from_torch(model)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
    np.testing.assert_allclose(np.asarray(jax_mlp.apply(params, x.numpy())), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    value, grads = jax.value_and_grad(lambda p: jax_mlp.cross_entropy(jax_mlp.apply(p, x.numpy()), y.numpy()))(params)
    np.testing.assert_allclose(float(value), loss.item(), rtol=1e-6)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(np.asarray(grads[name]), p.grad.numpy(), rtol=1e-4, atol=1e-7, err_msg=name)

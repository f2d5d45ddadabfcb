"""optex: OptEx (Shu et al., NeurIPS 2024) for PyTorch and JAX, with the experiments of its book.

Backends are imported on demand: ``import optex.torch`` or ``import optex.jax``.
"""
__version__ = "0.1.0"

"""A multilayer perceptron with a zero-initialised output layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flowjax_thesis.nets.checks import check_int, check_widths

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "silu": nn.silu,
}


def activation(name: str) -> Callable:
    """The activation function called ``name`` (one of :data:`ACTIVATIONS`)."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {', '.join(map(repr, sorted(ACTIVATIONS)))}, got {name!r}"
        )
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """``hidden`` layers with ``activation`` then a linear output of size ``out``.

    ``zero_init`` starts the output layer at zero, so a coupling or autoregressive layer built on
    it starts as the identity (the usual choice for stable flows).
    """

    hidden: Sequence[int]
    out: int
    activation: str = "tanh"
    zero_init: bool = True

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        check_widths("MLP", "hidden", self.hidden)
        check_int("MLP", "out", self.out)
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        return nn.Dense(self.out, kernel_init=init, bias_init=nn.initializers.zeros)(x)

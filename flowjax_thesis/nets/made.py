"""MADE: masked autoencoder for distribution estimation (Germain et al., 2015).

Input degrees are ``1..D`` (in order), hidden degrees cycle through ``1..D-1`` and output unit
``i`` of each of the ``num_params`` heads has degree ``i + 1``; a weight from degree ``a`` to a
hidden degree ``b`` exists iff ``b >= a``, to an output degree ``b`` iff ``b > a``. Hence output
``i`` depends on inputs ``< i`` only. A context (if any) feeds every hidden unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.nets.checks import check_int, check_widths
from flowjax_thesis.nets.mlp import activation


def made_masks(dim: int, hidden: Sequence[int]) -> list[np.ndarray]:
    """Masks (in_features x out_features) of the hidden layers and the output layer."""
    check_int("MADE", "dim", dim)
    hidden = check_widths("MADE", "hidden", hidden)
    degrees = [np.arange(1, dim + 1)]
    for width in hidden:
        degrees.append(np.arange(width) % max(dim - 1, 1) + 1)
    masks = [(d_out[None, :] >= d_in[:, None]) for d_in, d_out in zip(degrees, degrees[1:])]
    out_degrees = np.arange(1, dim + 1)
    masks.append(out_degrees[None, :] > degrees[-1][:, None])
    return [m.astype(np.float32) for m in masks]


class MaskedDense(nn.Module):
    features: int
    mask: np.ndarray
    zero_init: bool = False

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        kernel = self.param("kernel", init, (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ (kernel * jnp.asarray(self.mask)) + bias


class MADE(nn.Module):
    """Returns ``(num_params, D)``-shaped autoregressive outputs for an input of shape ``(D,)``."""

    dim: int
    hidden: Sequence[int]
    num_params: int = 2
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, context=None):
        act = activation(self.activation)
        check_int("MADE", "num_params", self.num_params)
        if x.shape[-1] != self.dim:
            raise ValueError(f"MADE: input must have {self.dim} features, got shape {x.shape}")
        masks = made_masks(self.dim, self.hidden)
        h = x
        for i, (width, mask) in enumerate(zip(self.hidden, masks[:-1])):
            h = MaskedDense(width, mask)(h)
            if context is not None and i == 0:
                h = h + nn.Dense(width, use_bias=False)(context)
            h = act(h)
        out_mask = np.tile(masks[-1], (1, self.num_params))
        out = MaskedDense(self.dim * self.num_params, out_mask, zero_init=True)(h)
        return out.reshape(out.shape[:-1] + (self.num_params, self.dim))

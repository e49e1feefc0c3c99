"""Squeeze (space-to-depth, Dinh et al. 2017): ``(H, W, C) <-> (H/2, W/2, 4C)``.

The density direction (``inverse``, data -> base) squeezes each 2x2 spatial block into channels;
``forward`` (base -> data) undoes it. Volume preserving.
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import Layer
from flowjax_thesis.nets.checks import check_int


def squeeze(x, factor: int = 2):
    *b, h, w, c = x.shape
    x = x.reshape(*b, h // factor, factor, w // factor, factor, c)
    x = jnp.swapaxes(x, -4, -3)  # (..., h/f, w/f, f_row, f_col, c)
    return x.reshape(*b, h // factor, w // factor, factor * factor * c)


def unsqueeze(x, factor: int = 2):
    *b, h, w, c = x.shape
    x = x.reshape(*b, h, w, factor, factor, c // (factor * factor))
    x = jnp.swapaxes(x, -4, -3)  # (..., h, f_row, w, f_col, c')
    return x.reshape(*b, h * factor, w * factor, c // (factor * factor))


class _Unsqueeze(distrax.Bijector):
    def __init__(self, factor: int):
        super().__init__(event_ndims_in=3, is_constant_jacobian=True)
        self._factor = factor

    def forward_and_log_det(self, x):
        return unsqueeze(x, self._factor), jnp.zeros(x.shape[:-3], x.dtype)

    def inverse_and_log_det(self, y):
        return squeeze(y, self._factor), jnp.zeros(y.shape[:-3], y.dtype)


@dataclass(frozen=True)
class Squeeze(Layer):
    factor: int = 2
    event_ranks = (3,)

    def __post_init__(self):
        check_int("Squeeze", "factor", self.factor)

    def base_shape(self, event_shape):
        h, w, c = event_shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(
                f"Squeeze by {f} needs H and W divisible by {f}, "
                f"got event_shape {tuple(event_shape)}"
            )
        return (h // f, w // f, c * f * f)

    def init(self, key, event_shape, context_shape=None):
        self.base_shape(self.check_shapes(event_shape, context_shape))
        return {}

    def bind(self, params, context=None):
        return _Unsqueeze(self.factor)

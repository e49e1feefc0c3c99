"""Fixed permutations of the last axis (features of a vector, channels of an image).

``"reverse"`` reverses the order; ``"random"`` applies a fixed random permutation drawn from
``seed`` (a hyperparameter, so that it is static and not a trainable parameter). Volume
preserving: ``log|det| = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.bijectors.base import Layer
from flowjax_thesis.bijectors.static import Static
from flowjax_thesis.nets.checks import check_choice, check_int


class _PermuteLast(distrax.Bijector):
    def __init__(self, kind: str, seed: int, event_ndims: int):
        super().__init__(event_ndims_in=event_ndims, is_constant_jacobian=True)
        self._kind, self._seed = kind, seed

    def _perm(self, n: int) -> np.ndarray:
        if self._kind == "reverse":
            return np.arange(n)[::-1]
        return np.random.default_rng(self._seed).permutation(n)

    def forward_and_log_det(self, x):
        perm = self._perm(x.shape[-1])
        return x[..., perm], jnp.zeros(x.shape[: x.ndim - self.event_ndims_in], x.dtype)

    def inverse_and_log_det(self, y):
        inv = np.argsort(self._perm(y.shape[-1]))
        return y[..., inv], jnp.zeros(y.shape[: y.ndim - self.event_ndims_in], y.dtype)


@dataclass(frozen=True)
class Permute(Layer):
    kind: str = "reverse"
    seed: int = 0

    def __post_init__(self):
        check_choice("Permute", "kind", self.kind, ("reverse", "random"))
        check_int("Permute", "seed", self.seed, minimum=0)

    def init(self, key, event_shape, context_shape=None):
        event_shape = self.check_shapes(event_shape, context_shape)
        return {"event_shape": Static(event_shape)}

    def bind(self, params, context=None):
        return _PermuteLast(self.kind, self.seed, len(params["event_shape"].value))

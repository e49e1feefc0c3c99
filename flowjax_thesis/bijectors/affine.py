"""Affine layers on vectors: elementwise (mean-field Gaussian) and lower-triangular (full-rank).

A :class:`~flowjax_thesis.flows.Flow` whose only layer is one of these, on its standard-normal
base, is the classic Gaussian variational family:

- :class:`ElementwiseAffine`: ``forward(z) = z * exp(log_scale) + shift``, i.e. ``q = N(shift,
  diag(exp(2 log_scale)))``, the mean-field family. ``log|det| = sum(log_scale)``.
- :class:`TriangularAffine`: ``forward(z) = L z + shift`` with ``L`` lower triangular and a
  positive diagonal ``exp(log_diag)``, i.e. ``q = N(shift, L L^T)``, the full-rank family.
  ``log|det| = sum(log_diag)``; the inverse is a triangular solve.

As everywhere in this package, ``forward`` maps base -> data and ``inverse`` data -> base.
``init_log_scale`` sets the initial (log) standard deviation, e.g. ``-1.0`` to start narrow.
Placed nearest the data in front of a deeper flow, either one standardises the flow's input.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import EventBijector, Layer
from flowjax_thesis.nets.checks import check_real


@dataclass(frozen=True)
class ElementwiseAffine(Layer):
    init_log_scale: float = 0.0
    event_ranks = (1,)

    def __post_init__(self):
        check_real("ElementwiseAffine", "init_log_scale", self.init_log_scale)

    def init(self, key, event_shape, context_shape=None):
        del key
        (dim,) = self.check_shapes(event_shape, context_shape)
        return {"shift": jnp.zeros(dim), "log_scale": jnp.full(dim, float(self.init_log_scale))}

    def bind(self, params, context=None):
        if context is not None:
            raise ValueError("ElementwiseAffine is unconditional; do not pass a context")
        shift, log_scale = params["shift"], params["log_scale"]

        def forward(z, _):
            return z * jnp.exp(log_scale) + shift, jnp.sum(log_scale)

        def inverse(x, _):
            return (x - shift) * jnp.exp(-log_scale), -jnp.sum(log_scale)

        return EventBijector(
            forward, inverse, 1, is_constant_jacobian=True, name="ElementwiseAffine"
        )


@dataclass(frozen=True)
class TriangularAffine(Layer):
    init_log_scale: float = 0.0
    event_ranks = (1,)

    def __post_init__(self):
        check_real("TriangularAffine", "init_log_scale", self.init_log_scale)

    def init(self, key, event_shape, context_shape=None):
        del key
        (dim,) = self.check_shapes(event_shape, context_shape)
        return {
            "shift": jnp.zeros(dim),
            "log_diag": jnp.full(dim, float(self.init_log_scale)),
            "lower": jnp.zeros((dim, dim)),  # only the strictly lower part is used
        }

    @staticmethod
    def scale_tril(params):
        """The Cholesky factor ``L`` (covariance ``L L^T`` of the one-layer family)."""
        return jnp.tril(params["lower"], -1) + jnp.diag(jnp.exp(params["log_diag"]))

    def bind(self, params, context=None):
        if context is not None:
            raise ValueError("TriangularAffine is unconditional; do not pass a context")
        shift, log_diag = params["shift"], params["log_diag"]
        tril = self.scale_tril(params)

        def forward(z, _):
            return tril @ z + shift, jnp.sum(log_diag)

        def inverse(x, _):
            z = jax.scipy.linalg.solve_triangular(tril, x - shift, lower=True)
            return z, -jnp.sum(log_diag)

        return EventBijector(
            forward, inverse, 1, is_constant_jacobian=True, name="TriangularAffine"
        )

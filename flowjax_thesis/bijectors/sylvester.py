"""Sylvester normalizing flows (van den Berg, Hasenclever, Tomczak & Welling, 2018).

``f(z) = z + Q R tanh(R~ Q^T z + b)`` with ``Q`` a ``D x M`` matrix with orthonormal columns and
``R``, ``R~`` upper-triangular ``M x M``. By Sylvester's determinant identity
``log|det J| = sum_i log|1 + tanh'(.)_i R_ii R~_ii|``. Diagonals are ``tanh``-bounded, so
``R_ii R~_ii > -1`` and the map is invertible. Three ways to get ``Q``:

- ``"orthogonal"``: ``M <= D`` columns from the QR decomposition of a free ``D x M`` matrix (the
  paper orthogonalises iteratively; QR gives exactly orthonormal columns, differentiably);
- ``"householder"``: ``M = D``, the product of ``num_householder`` reflections;
- ``"triangular"``: ``M = D``, ``Q`` the identity or the reversal permutation (``flip``).

Inverse (not in the paper): with ``q = Q^T z`` and ``q' = Q^T f(z)`` we get
``q' = q + R tanh(R~ q + b)``, upper-triangular in ``q``; solving it from the last coordinate up
needs one scalar monotone equation per coordinate, then ``z = f(z) - Q R tanh(R~ q + b)``.

Parameters may come from an encoder (amortised flows, as in VAEs): :meth:`Sylvester.param_shapes`
lists the arrays :meth:`Sylvester.bind` reads, so an encoder can emit them per data point and
``jax.vmap`` binds one bijector per example.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import EventBijector, Layer, solve_tanh_equation
from flowjax_thesis.nets.checks import check_bool, check_choice, check_int, check_real

KINDS = ("orthogonal", "householder", "triangular")


@dataclass(frozen=True)
class Sylvester(Layer):
    kind: str = "orthogonal"
    num_ortho: int | None = None  # M for "orthogonal" (default min(D, 32))
    num_householder: int = 8
    flip: bool = False  # "triangular": use the reversal permutation as Q
    init_scale: float = 0.05
    event_ranks = (1,)

    def __post_init__(self):
        check_choice("Sylvester", "kind", self.kind, KINDS)
        if self.num_ortho is not None:
            check_int("Sylvester", "num_ortho", self.num_ortho)
        check_int("Sylvester", "num_householder", self.num_householder)
        check_bool("Sylvester", "flip", self.flip)
        check_real("Sylvester", "init_scale", self.init_scale, nonnegative=True)

    def _m(self, dim: int) -> int:
        if self.kind == "orthogonal":
            m = min(dim, 32) if self.num_ortho is None else self.num_ortho
            if not 1 <= m <= dim:
                raise ValueError(f"Sylvester num_ortho must be in [1, {dim}], got {m}")
            return m
        return dim

    def param_shapes(self, event_shape) -> dict[str, tuple[int, ...]]:
        (dim,) = event_shape
        m = self._m(dim)
        shapes = {"r1": (m, m), "r2": (m, m), "b": (m,)}
        if self.kind == "orthogonal":
            shapes["q"] = (dim, m)
        elif self.kind == "householder":
            shapes["v"] = (self.num_householder, dim)
        return shapes

    def init(self, key, event_shape, context_shape=None):
        event_shape = self.check_shapes(event_shape, context_shape)
        shapes = self.param_shapes(event_shape)
        keys = jax.random.split(key, len(shapes) + 1)
        params = {
            name: self.init_scale * jax.random.normal(k, shape)
            for k, (name, shape) in zip(keys[:-1], sorted(shapes.items()), strict=True)
        }
        if "q" in params:  # a well-conditioned start for the QR
            params["q"] = params["q"] + jnp.eye(*shapes["q"])
        if "v" in params:
            params["v"] = params["v"] + jax.random.normal(keys[-1], shapes["v"])
        return params

    def _q(self, params, dim: int):
        if self.kind == "orthogonal":
            q, r = jnp.linalg.qr(params["q"])
            return q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)  # unique sign
        if self.kind == "householder":

            def reflect(q, v):
                v = v / jnp.linalg.norm(v)
                return q - 2.0 * jnp.outer(q @ v, v), None

            q, _ = jax.lax.scan(reflect, jnp.eye(dim), params["v"])
            return q
        eye = jnp.eye(dim)
        return eye[::-1] if self.flip else eye

    def bind(self, params, context=None):
        dim = params["r1"].shape[-1] if self.kind != "orthogonal" else params["q"].shape[0]
        q = self._q(params, dim)
        m = params["r1"].shape[-1]
        triu = jnp.triu(jnp.ones((m, m)), 1)
        r1 = params["r1"] * triu + jnp.diag(jnp.tanh(jnp.diag(params["r1"])))
        r2 = params["r2"] * triu + jnp.diag(jnp.tanh(jnp.diag(params["r2"])))
        b = params["b"]
        diag_prod = jnp.diag(r1) * jnp.diag(r2)

        def forward(z, _):
            h = jnp.tanh(r2 @ (q.T @ z) + b)
            return z + q @ (r1 @ h), jnp.sum(jnp.log1p(diag_prod * (1.0 - h**2)))

        def inverse(y, _):
            qy = q.T @ y

            def solve_coordinate(qz, i):
                pre = r2 @ qz + b  # rows j > i are complete; row i lacks r2_ii q_i
                later = jnp.arange(m) > i
                t = qy[i] - jnp.sum(jnp.where(later, r1[i] * jnp.tanh(pre), 0.0))
                qi = solve_tanh_equation(t, r1[i, i], r2[i, i], pre[i])
                return qz.at[i].set(qi), None

            qz, _ = jax.lax.scan(solve_coordinate, jnp.zeros(m), jnp.arange(m), reverse=True)
            h = jnp.tanh(r2 @ qz + b)
            return y - q @ (r1 @ h), -jnp.sum(jnp.log1p(diag_prod * (1.0 - h**2)))

        return EventBijector(forward, inverse, 1, name=f"Sylvester[{self.kind}]")

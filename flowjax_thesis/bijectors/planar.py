"""Planar and radial flows (Rezende & Mohamed, 2015) with exact inverses.

Planar: ``f(z) = z + u_hat * tanh(w.z + b)`` with ``u_hat = u + (m(w.u) - w.u) w / |w|^2`` and
``m(x) = -1 + softplus(x)``, which enforces ``w.u_hat > -1`` and hence invertibility (their
appendix A.1). ``log|det J| = log(1 + u_hat.w (1 - tanh^2(w.z + b)))``.
Inverse: with ``alpha = w.z``, ``w.y = alpha + (w.u_hat) tanh(alpha + b)`` is a strictly
increasing scalar equation in ``alpha``; we solve it (bracketed bisection + one Newton step) and
recover ``z = y - u_hat tanh(alpha + b)``.

Radial: ``f(z) = z + beta h(r) (z - z0)``, ``r = |z - z0|``, ``h(r) = 1 / (alpha + r)`` with
``alpha = softplus(a) > 0`` and ``beta = -alpha + softplus(b) >= -alpha`` (invertibility).
``log|det J| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)``.
Inverse: ``|y - z0| = r (1 + beta / (alpha + r))`` is a quadratic in ``r``:
``r^2 + (alpha + beta - r') r - alpha r' = 0`` whose non-negative root we take in the
cancellation-free form; then ``z - z0 = (y - z0) / (1 + beta h(r))``.

Both act on vector events ``(D,)``. The blog's PyTorch planar layer adds ``1e-4`` inside the
log-determinant; we do not need to, because ``w.u_hat > -1`` keeps the argument positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import EventBijector, Layer, solve_tanh_equation


def planar_u_hat(u, w):
    wu = jnp.dot(w, u)
    m = -1.0 + jax.nn.softplus(wu)
    return u + (m - wu) * w / (jnp.dot(w, w) + 1e-12)


@dataclass(frozen=True)
class Planar(Layer):
    """Planar flow layer. ``init_scale`` is the std of the N(0, s^2) initial parameters."""

    init_scale: float = 0.1
    event_ranks = (1,)

    def init(self, key, event_shape, context_shape=None):
        (dim,) = self.check_shapes(event_shape, context_shape)
        ku, kw, kb = jax.random.split(key, 3)
        s = self.init_scale
        return {
            "u": s * jax.random.normal(ku, (dim,)),
            "w": s * jax.random.normal(kw, (dim,)),
            "b": s * jax.random.normal(kb, ()),
        }

    def bind(self, params, context=None):
        w, b = params["w"], params["b"]
        u = planar_u_hat(params["u"], w)
        wu = jnp.dot(w, u)

        def forward(z, _):
            th = jnp.tanh(jnp.dot(w, z) + b)
            return z + u * th, jnp.log1p(wu * (1.0 - th**2))

        def inverse(y, _):
            alpha = solve_tanh_equation(jnp.dot(w, y), wu, 1.0, b)
            th = jnp.tanh(alpha + b)
            return y - u * th, -jnp.log1p(wu * (1.0 - th**2))

        return EventBijector(forward, inverse, 1, name="Planar")


@dataclass(frozen=True)
class Radial(Layer):
    """Radial flow layer around a learned centre ``z0``."""

    init_scale: float = 0.1
    event_ranks = (1,)

    def init(self, key, event_shape, context_shape=None):
        (dim,) = self.check_shapes(event_shape, context_shape)
        k0, ka, kb = jax.random.split(key, 3)
        s = self.init_scale
        return {
            "z0": s * jax.random.normal(k0, (dim,)),
            "alpha": s * jax.random.normal(ka, ()),
            "beta": s * jax.random.normal(kb, ()),
        }

    def bind(self, params, context=None):
        z0 = params["z0"]
        alpha = jax.nn.softplus(params["alpha"])
        beta = -alpha + jax.nn.softplus(params["beta"])
        dim = z0.shape[-1]

        def log_det(r):
            h = 1.0 / (alpha + r)
            bh = beta * h
            # 1 + beta h + beta h'(r) r  with  h' = -h^2  equals  1 + beta alpha h^2
            return (dim - 1) * jnp.log1p(bh) + jnp.log1p(beta * alpha * h**2)

        def norm(v):
            # |v| with a finite gradient at v = 0
            sq = jnp.sum(v**2)
            safe = jnp.where(sq > 0, sq, 1.0)
            return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)

        def forward(z, _):
            dz = z - z0
            r = norm(dz)
            return z + beta / (alpha + r) * dz, log_det(r)

        def inverse(y, _):
            dy = y - z0
            rp = norm(dy)
            bq = alpha + beta - rp
            disc = jnp.sqrt(bq**2 + 4.0 * alpha * rp)
            # non-negative root of r^2 + bq r - alpha rp = 0 without cancellation
            r = jnp.where(bq > 0, 2.0 * alpha * rp / (bq + disc + 1e-30), 0.5 * (disc - bq))
            dz = dy / (1.0 + beta / (alpha + r))
            return z0 + dz, -log_det(r)

        return EventBijector(forward, inverse, 1, name="Radial")

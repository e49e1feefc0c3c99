"""Planar and radial flows (Rezende & Mohamed, 2015) with exact inverses.

Planar: ``f(z) = z + u' * tanh(w.z + b)``, ``log|det J| = log(1 + u'.w (1 - tanh^2(w.z + b)))``.
The map is invertible when ``w.u' >= -1``; two rules (``Planar(constraint=...)``) keep it so:

- ``"reparameterize"`` (the paper's appendix A.1, and most libraries'): ``u' = u_hat(u, w) =
  u + (m(w.u) - w.u) w / |w|^2`` with ``m(x) = -1 + softplus(x)``, always, so ``w.u' > -1``
  but ``u'`` differs from ``u`` even where ``u`` is already valid.
- ``"project"`` (the blog's PyTorch code, after Edvard Hulten's): the raw ``u``, replaced by
  ``u_hat(u, w)`` only where ``w.u < -1 + margin`` (``margin = 1e-4``: the blog's threshold is
  ``-1``; the margin keeps ``log|det J| >= log(margin)`` finite where the raw rule would give
  ``log 0 = -inf`` at ``w.u = -1``, ``w.z + b = 0``).

Measured (issue 17; ``flowjax-thesis run vi-planar-ring --profile cpu``: the blog's K=32, batch
128, Adam 6e-4, 20,000 steps on the ring, log Z = 2.313, seeds 0-2, ELBO on 100,000 draws; see
``docs/results/vi-planar-ring/``): ``"project"`` reaches KL(q||p) = 0.014 / 0.041 / 0.042 nats,
the whole ring, as the blog's figure shows; ``"reparameterize"`` stops at 1.39 / 1.33 / 1.47
nats (about log 4: one of the ring's four arcs), from the same initial parameters and draws.
Elsewhere the blog's rule did not help, so ``"reparameterize"`` stays the default there (one seed
each, a busy 2-core machine): GBNF VI with C=2 components of K=8 planar layers (3,000 Adam steps
each, lambda 0.8) reached a gap to log Z of 0.18 / 0.14 / 1.00 / 0.54 / 1.27 nats on U1-U4 /
ring with ``"project"`` against 0.04 / 0.20 / 0.52 / 0.85 / 0.84 with ``"reparameterize"``; a
VAE with the amortised K=16 planar posterior (digits, vae-flows cpu settings, 1,500 steps) had
test NLL 23.62 against 23.56 nats; a per-example K=16 planar posterior on a curved 2-D
posterior (tests/test_vae.py's banana) closed the gap to the exact evidence to 0.018 against
0.021 nats. The
blog's code also projects ``u`` in place (a persistent edit of the parameter, outside the
gradient); ours is a pure function of the params, so the gradient passes through ``u_hat``
where it applies and the stored ``u`` is left as it is.

Inverse (both rules): with ``alpha = w.z``, ``w.y = alpha + (w.u') tanh(alpha + b)`` is a
strictly increasing scalar equation in ``alpha``; we solve it (bracketed bisection + one Newton
step) and recover ``z = y - u' tanh(alpha + b)``.

Radial: ``f(z) = z + beta h(r) (z - z0)``, ``r = |z - z0|``, ``h(r) = 1 / (alpha + r)`` with
``alpha = softplus(a) > 0`` and ``beta = -alpha (1 - 1e-4) + softplus(b) > -alpha``
(invertibility, with a margin so that ``1 + beta h >= 1e-4`` stays finite at the boundary).
``log|det J| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)``.
Inverse: ``|y - z0| = r (1 + beta / (alpha + r))`` is a quadratic in ``r``:
``r^2 + (alpha + beta - r') r - alpha r' = 0`` whose non-negative root we take in the
cancellation-free form; then ``z - z0 = (y - z0) / (1 + beta h(r))``.

Numerical edge: as ``w.u' -> -1`` the log-det at ``w.z + b = 0`` goes to ``-inf``. Both rules
keep ``w.u' >= -1 + margin`` (``m`` is floored at ``-1 + margin``, which in float32 only matters
where ``softplus(w.u) < margin``, i.e. ``w.u < -9.2``), so ``log|det J| >= log(margin)`` (about
-9.2 per layer) stays finite and the exact inverse stays well conditioned. The blog's PyTorch
layer instead adds ``1e-4`` inside the log-determinant (a bias everywhere); we do not.
Both act on vector events ``(D,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import EventBijector, Layer, solve_tanh_equation

CONSTRAINTS = ("reparameterize", "project")
RADIAL_MARGIN = 1e-4


def planar_u_hat(u, w, margin: float = 1e-4):
    """Rezende & Mohamed's ``u_hat``: ``w.u_hat = -1 + max(softplus(w.u), margin)``.

    The floor changes the paper's map only where ``softplus(w.u) < margin`` (``w.u < -9.2`` for
    the default): there ``-1 + softplus(w.u)`` rounds to ``-1`` in float32 and the log-det would
    be ``log 0``."""
    wu = jnp.dot(w, u)
    m = -1.0 + jnp.maximum(jax.nn.softplus(wu), margin)
    return u + (m - wu) * w / (jnp.dot(w, w) + 1e-12)


def planar_u(u, w, constraint: str = "reparameterize", margin: float = 1e-4):
    """The ``u'`` a planar layer uses: ``u_hat`` always (``"reparameterize"``) or the raw ``u``
    unless ``w.u < -1 + margin`` (``"project"``, the blog's rule)."""
    if constraint == "reparameterize":
        return planar_u_hat(u, w, margin)
    if constraint == "project":
        return jnp.where(jnp.dot(w, u) < -1.0 + margin, planar_u_hat(u, w, margin), u)
    raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")


@dataclass(frozen=True)
class Planar(Layer):
    """Planar flow layer. ``init_scale`` is the std of the N(0, s^2) initial parameters;
    ``constraint`` is ``"reparameterize"`` (u_hat always) or ``"project"`` (the blog's rule:
    u_hat only where ``w.u < -1 + margin``); see the module docstring."""

    init_scale: float = 0.1
    constraint: str = "reparameterize"
    margin: float = 1e-4
    event_ranks = (1,)

    def __post_init__(self):
        if self.constraint not in CONSTRAINTS:
            raise ValueError(
                f"Planar: constraint must be one of {CONSTRAINTS}, got {self.constraint!r}"
            )
        if not 0.0 < self.margin < 1.0:
            raise ValueError(f"Planar: margin must be in (0, 1), got {self.margin!r}")
        _check_init_scale(self)

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
        u = planar_u(params["u"], w, self.constraint, self.margin)
        # both rules give w.u' >= -1 + margin up to float rounding (which grows with |u| after a
        # projection); the floor keeps log(1 + w.u' (1 - tanh^2)) >= log(margin) regardless
        wu = jnp.maximum(jnp.dot(w, u), -1.0 + self.margin)

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

    def __post_init__(self):
        _check_init_scale(self)

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
        # beta > -alpha (1 - margin): 1 + beta h >= margin, so the log-det and the inverse stay
        # finite even at the centre when softplus(b) underflows (the invertibility boundary)
        beta = -alpha * (1.0 - RADIAL_MARGIN) + jax.nn.softplus(params["beta"])
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


def _check_init_scale(layer) -> None:
    s = layer.init_scale
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and s >= 0):
        raise ValueError(
            f"{type(layer).__name__}: init_scale must be a finite number >= 0, got {s!r}"
        )

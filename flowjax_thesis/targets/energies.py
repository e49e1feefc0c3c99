"""Unnormalized 2-D target log densities (energies) for variational-inference experiments.

Every target is a pure ``jax.numpy`` function ``log_density(z)`` of one event ``z`` of shape
``(2,)`` that returns a scalar.  The functions only index the *last* axis, so they also
accept batches of shape ``(..., 2)`` and then return an array of shape ``(...)``; ``jax.vmap``
works as well.  The densities are unnormalized: ``log p(z) = -U(z) - log Z`` with an unknown
``log Z`` (see :func:`flowjax_thesis.grid.log_normalizer_grid` to compute it numerically on
the plotting box given in :data:`TARGET_LIMITS`).

Energies U1-U4 (Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows",
Table 1), with ``z = (z1, z2)`` and the helper functions

* ``w1(z) = sin(2 pi z1 / 4)``
* ``w2(z) = 3 exp(-1/2 ((z1 - 1) / 0.6)^2)``
* ``w3(z) = 3 sigma((z1 - 1) / 0.3)``, ``sigma(x) = 1 / (1 + exp(-x))``

are

* ``U1(z) = 1/2 ((||z|| - 2) / 0.4)^2
  - ln(exp(-1/2 ((z1 - 2) / 0.6)^2) + exp(-1/2 ((z1 + 2) / 0.6)^2))``
* ``U2(z) = 1/2 ((z2 - w1(z)) / 0.4)^2``
* ``U3(z) = -ln(exp(-1/2 ((z2 - w1(z)) / 0.35)^2) + exp(-1/2 ((z2 - w1(z) + w2(z)) / 0.35)^2))``
* ``U4(z) = -ln(exp(-1/2 ((z2 - w1(z)) / 0.4)^2) + exp(-1/2 ((z2 - w1(z) + w3(z)) / 0.35)^2))``

and the log density is ``-U``.  The terms ``ln(exp(a) + exp(b))`` are computed as
``jnp.logaddexp(a, b)``, which is mathematically identical but does not underflow to
``log(0) = -inf`` far from the modes.

Note that U2, U3 and U4 do not depend on ``z1`` except through the bounded, periodic or
saturating ``w`` functions, so ``exp(-U)`` is *not* integrable over the whole plane in the
``z1`` direction: these targets are only normalizable on a bounded box such as
``[-lim, lim]^2`` with ``lim = TARGET_LIMITS[name]``.  U1 and the ring are integrable on R^2.

The ``"ring"`` target is the ring-shaped density of the blog post on normalizing flows for
variational inference that builds on Edvard Hulten's PyTorch planar-flow implementation;
see :func:`log_density_ring`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

__all__ = [
    "TARGETS",
    "TARGET_LIMITS",
    "get_target",
    "log_density_ring",
    "log_density_u1",
    "log_density_u2",
    "log_density_u3",
    "log_density_u4",
    "w1",
    "w2",
    "w3",
]

_TWO_PI = 2.0 * math.pi
_RING_EPS = 1e-6
_LOG_RING_EPS = math.log(_RING_EPS)


def _split(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Return ``(z1, z2)`` taken from the last axis of ``z`` (shape ``(..., 2)``)."""
    z = jnp.asarray(z)
    if z.shape[-1:] != (2,):
        raise ValueError(f"expected an array with last axis of size 2, got shape {z.shape}")
    return z[..., 0], z[..., 1]


def _safe_norm(z: jax.Array) -> jax.Array:
    """Euclidean norm over the last axis whose gradient at ``z = 0`` is 0 instead of NaN.

    The value is exactly ``||z||``.  ``||z||`` is not differentiable at the origin (it is a
    cone); the "double where" below selects the subgradient 0 there, so ``jax.grad`` of the
    targets stays finite everywhere.
    """
    sq = jnp.sum(jnp.square(z), axis=-1)
    positive = sq > 0
    safe_sq = jnp.where(positive, sq, 1.0)
    return jnp.where(positive, jnp.sqrt(safe_sq), 0.0)


def _half_sq(x: jax.Array, scale: float) -> jax.Array:
    """``1/2 (x / scale)^2``."""
    return 0.5 * jnp.square(x / scale)


def w1(z: jax.Array) -> jax.Array:
    """``w1(z) = sin(2 pi z1 / 4)`` (Rezende & Mohamed 2015, Table 1)."""
    z1, _ = _split(z)
    return jnp.sin(_TWO_PI * z1 / 4.0)


def w2(z: jax.Array) -> jax.Array:
    """``w2(z) = 3 exp(-1/2 ((z1 - 1) / 0.6)^2)`` (Rezende & Mohamed 2015, Table 1)."""
    z1, _ = _split(z)
    return 3.0 * jnp.exp(-_half_sq(z1 - 1.0, 0.6))


def w3(z: jax.Array) -> jax.Array:
    """``w3(z) = 3 sigma((z1 - 1) / 0.3)`` with the logistic sigmoid ``sigma``."""
    z1, _ = _split(z)
    return 3.0 * jax.nn.sigmoid((z1 - 1.0) / 0.3)


def log_density_u1(z: jax.Array) -> jax.Array:
    """Log density ``-U1(z)`` of Rezende & Mohamed (2015), Table 1.

    ``U1(z) = 1/2 ((||z|| - 2) / 0.4)^2
    - ln(exp(-1/2 ((z1 - 2) / 0.6)^2) + exp(-1/2 ((z1 + 2) / 0.6)^2))``:
    a ring of radius 2 (width 0.4) split into two modes at ``z1 = +-2`` (width 0.6).
    The ``ln(exp(a) + exp(b))`` term is evaluated as ``logaddexp(a, b)`` (same value, no
    underflow).  At ``z = 0`` the gradient of ``||z||`` is taken as 0 (subgradient).

    Args:
        z: array of shape ``(2,)`` or ``(..., 2)``.

    Returns:
        ``-U1(z)``, a scalar or an array of shape ``z.shape[:-1]``.
    """
    z1, _ = _split(z)
    radial = _half_sq(_safe_norm(z) - 2.0, 0.4)
    modes = jnp.logaddexp(-_half_sq(z1 - 2.0, 0.6), -_half_sq(z1 + 2.0, 0.6))
    return -radial + modes


def log_density_u2(z: jax.Array) -> jax.Array:
    """Log density ``-U2(z)`` of Rezende & Mohamed (2015), Table 1.

    ``U2(z) = 1/2 ((z2 - w1(z)) / 0.4)^2`` with ``w1(z) = sin(2 pi z1 / 4)``: a sine-shaped
    band of width 0.4.  Not integrable in ``z1`` over R^2; normalize on a bounded box.

    Args:
        z: array of shape ``(2,)`` or ``(..., 2)``.

    Returns:
        ``-U2(z)``, a scalar or an array of shape ``z.shape[:-1]``.
    """
    _, z2 = _split(z)
    return -_half_sq(z2 - w1(z), 0.4)


def log_density_u3(z: jax.Array) -> jax.Array:
    """Log density ``-U3(z)`` of Rezende & Mohamed (2015), Table 1.

    ``U3(z) = -ln(exp(-1/2 ((z2 - w1) / 0.35)^2) + exp(-1/2 ((z2 - w1 + w2) / 0.35)^2))``
    with ``w1(z) = sin(2 pi z1 / 4)`` and ``w2(z) = 3 exp(-1/2 ((z1 - 1) / 0.6)^2)``: a sine
    band of width 0.35 that splits into two bands around ``z1 = 1``.  ``ln(exp(a) + exp(b))``
    is evaluated as ``logaddexp(a, b)`` (same value, no underflow).  Not integrable in ``z1``
    over R^2; normalize on a bounded box.

    Args:
        z: array of shape ``(2,)`` or ``(..., 2)``.

    Returns:
        ``-U3(z)``, a scalar or an array of shape ``z.shape[:-1]``.
    """
    _, z2 = _split(z)
    d = z2 - w1(z)
    return jnp.logaddexp(-_half_sq(d, 0.35), -_half_sq(d + w2(z), 0.35))


def log_density_u4(z: jax.Array) -> jax.Array:
    """Log density ``-U4(z)`` of Rezende & Mohamed (2015), Table 1.

    ``U4(z) = -ln(exp(-1/2 ((z2 - w1) / 0.4)^2) + exp(-1/2 ((z2 - w1 + w3) / 0.35)^2))``
    with ``w1(z) = sin(2 pi z1 / 4)`` and ``w3(z) = 3 sigma((z1 - 1) / 0.3)``: a sine band of
    width 0.4 plus a second band of width 0.35 shifted by the sigmoid step ``w3``.
    ``ln(exp(a) + exp(b))`` is evaluated as ``logaddexp(a, b)`` (same value, no underflow).
    Not integrable in ``z1`` over R^2; normalize on a bounded box.

    Args:
        z: array of shape ``(2,)`` or ``(..., 2)``.

    Returns:
        ``-U4(z)``, a scalar or an array of shape ``z.shape[:-1]``.
    """
    _, z2 = _split(z)
    d = z2 - w1(z)
    return jnp.logaddexp(-_half_sq(d, 0.4), -_half_sq(d + w3(z), 0.35))


def log_density_ring(z: jax.Array) -> jax.Array:
    """Log density ``-u(z)`` of the blog's ring target, exactly as its PyTorch code.

    The blog defines (``z`` a batch, ``torch.norm(z, 2, dim=1)`` the Euclidean norm)::

        exp1 = exp(-0.5 * ((z1 - 2) / 0.8) ** 2)
        exp2 = exp(-0.5 * ((z1 + 2) / 0.8) ** 2)
        u = 0.5 * ((||z|| - 4) / 0.4) ** 2 - log(exp1 + exp2 + 1e-6)

    and uses ``-u`` as the unnormalized target log density: a ring of radius 4 (width 0.4)
    with two modes at ``z1 = +-2`` (width 0.8).  The additive constant ``1e-6`` inside the
    log is kept as in the blog (it is *not* a numerical-safety tweak added here): it puts a
    floor of ``log(1e-6)`` on the mode term, so the whole ring carries a small amount of
    mass even far from ``z1 = +-2``.  The log term is computed as
    ``logsumexp([a, b, log(1e-6)])``, which equals ``log(exp(a) + exp(b) + 1e-6)`` exactly
    but is evaluated stably.  At ``z = 0`` the gradient of ``||z||`` is taken as 0.

    Args:
        z: array of shape ``(2,)`` or ``(..., 2)``.

    Returns:
        ``-u(z)``, a scalar or an array of shape ``z.shape[:-1]``.
    """
    z1, _ = _split(z)
    a = -_half_sq(z1 - 2.0, 0.8)
    b = -_half_sq(z1 + 2.0, 0.8)
    c = jnp.full_like(a, _LOG_RING_EPS)
    log_term = logsumexp(jnp.stack([a, b, c], axis=-1), axis=-1)
    u = _half_sq(_safe_norm(z) - 4.0, 0.4) - log_term
    return -u


TARGETS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "U1": log_density_u1,
    "U2": log_density_u2,
    "U3": log_density_u3,
    "U4": log_density_u4,
    "ring": log_density_ring,
}
"""Registry of unnormalized 2-D log densities, by name."""

TARGET_LIMITS: dict[str, float] = {
    "U1": 5.0,
    "U2": 5.0,
    "U3": 5.0,
    "U4": 5.0,
    "ring": 7.0,
}
"""Half-width ``lim`` of the square ``[-lim, lim]^2`` on which each target is usually shown
(and on which U2-U4, which are not integrable on R^2, are normalized)."""


def get_target(name: str) -> Callable[[jax.Array], jax.Array]:
    """Return the unnormalized log density registered under ``name``.

    Raises:
        KeyError: if ``name`` is unknown; the message lists the valid names.
    """
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(k) for k in TARGETS)
        raise KeyError(f"unknown target {name!r}; valid names are: {valid}") from None

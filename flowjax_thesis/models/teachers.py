"""Exact 2-D teacher densities for the student-teacher evaluation of chapter 6 (section 6.4).

A teacher gives samples *and* their exact log-density, so a student's samples can be scored
exactly. The thesis trains teacher flows with absolute-value surjections; here every teacher is a
closed-form density whose sampler is its own generative process (so samples and log-density agree
by construction, and tests check it):

- ``two_moons``: the two half-rings of ``sklearn.datasets.make_moons`` (scaled by 2 and shifted by
  ``(-1, -0.2)`` as in the survae toy set). Each moon is written in polar coordinates about its
  centre: angle ``theta = pi * B`` with ``B ~ Beta(2, 2)`` (a smooth version of the uniform angle,
  so the density has no jump at the moon tips) and radius ``r = 2 exp(0.1 e)``, ``e ~ N(0, 1)``
  (log-normal, about make_moons' noise 0.1 x 2, and positive so the polar map is a bijection).
  ``p(y) = p_theta(theta) p_r(r) / r`` (the Jacobian of the polar map is ``r``).
- ``four_circles``: survae's four circles: radius 2 circles centred at ``(+-1, +-1)`` with uniform
  angle plus isotropic Gaussian noise (sd 0.1). The angle integral is a Bessel function:
  ``p(y) = exp(-(d - R)^2 / 2 s^2) i0e(d R / s^2) / (2 pi s^2)`` with ``d = |y - c|``.
- ``abs``: survae's abs set, ``y1 ~ N(0, 1)``, ``y2 | y1 ~ N(|y1| - 1, e^{-3})``. Written as a
  flow, this is the absolute-value construction ``y2 = |z1| - 1 + e^{-3/2} z2`` of the base
  ``(z1, z2)``; the closed form is its exact density (the abs map acts on the conditioner only, so
  no preimages have to be summed).
- ``circle_cluster`` ("circle and cluster", defined here since the original code has none):
  an equal mixture of a noisy circle of radius 3 about the origin (uniform angle, Gaussian noise
  sd 0.15, Bessel closed form as above) and a Gaussian cluster ``N(0, 0.4^2 I)`` at its centre.
  Given a coarse ``y1`` near 0 the conditional of ``y2`` has three modes (circle top, cluster,
  circle bottom); near ``|y1| = 3`` it has one.

The low-resolution input of chapter 6's toy problem is ``x = quantize(y1)``: the centre of the
bin of width ``bin_width`` that holds ``y1`` (:func:`quantize`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import i0e, logsumexp

LOG_2PI = math.log(2 * math.pi)


def _log_normal_pdf(x, mean, sd):
    return -0.5 * ((x - mean) / sd) ** 2 - jnp.log(sd) - 0.5 * LOG_2PI


def _log_noisy_circle(y, centre, radius: float, sd: float):
    """Log-density of ``c + R (cos t, sin t) + sd * N(0, I)`` with ``t ~ U(0, 2 pi)``."""
    d = jnp.linalg.norm(y - jnp.asarray(centre), axis=-1)
    return (
        -((d - radius) ** 2) / (2 * sd**2)
        + jnp.log(i0e(d * radius / sd**2))
        - math.log(2 * math.pi * sd**2)
    )


def _sample_noisy_circle(key, n, centre, radius: float, sd: float):
    k1, k2 = jax.random.split(key)
    t = jax.random.uniform(k1, (n,), maxval=2 * math.pi)
    ring = radius * jnp.stack([jnp.cos(t), jnp.sin(t)], -1)
    return jnp.asarray(centre) + ring + sd * jax.random.normal(k2, (n, 2))


# -- two moons --------------------------------------------------------------------------------

_MOON_CENTRES = ((-1.0, -0.2), (1.0, 0.8))  # make_moons centres (0,0), (1,0.5), times 2, shifted
_MOON_SIGNS = (1.0, -1.0)  # the second moon is the first rotated by pi
_MOON_RADIUS, _MOON_LOG_SD = 2.0, 0.1


def _moons_log_prob(y):
    terms = []
    for centre, sign in zip(_MOON_CENTRES, _MOON_SIGNS, strict=True):
        d = sign * (y - jnp.asarray(centre))
        r = jnp.linalg.norm(d, axis=-1)
        theta = jnp.arctan2(d[..., 1], d[..., 0])
        inside = (theta > 0) & (theta < math.pi)
        b = jnp.clip(theta / math.pi, 1e-30, 1 - 1e-7)
        log_theta = math.log(6.0) + jnp.log(b) + jnp.log1p(-b) - math.log(math.pi)  # Beta(2,2)
        u = jnp.log(jnp.maximum(r, 1e-30) / _MOON_RADIUS)
        log_r = _log_normal_pdf(u, 0.0, _MOON_LOG_SD) - jnp.log(jnp.maximum(r, 1e-30))
        log_p = log_theta + log_r - jnp.log(jnp.maximum(r, 1e-30))
        terms.append(jnp.where(inside, log_p, -jnp.inf))
    return logsumexp(jnp.stack(terms), axis=0) - math.log(2.0)


def _moons_sample(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    theta = math.pi * jax.random.beta(k1, 2.0, 2.0, (n,))
    r = _MOON_RADIUS * jnp.exp(_MOON_LOG_SD * jax.random.normal(k2, (n,)))
    moon = jax.random.bernoulli(k3, 0.5, (n,))
    sign = jnp.where(moon, _MOON_SIGNS[1], _MOON_SIGNS[0])[:, None]
    centre = jnp.where(moon[:, None], jnp.asarray(_MOON_CENTRES[1]), jnp.asarray(_MOON_CENTRES[0]))
    return centre + sign * r[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)


# -- four circles -----------------------------------------------------------------------------

_CIRCLE_CENTRES = ((-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0))


def _four_circles_log_prob(y):
    terms = jnp.stack([_log_noisy_circle(y, c, 2.0, 0.1) for c in _CIRCLE_CENTRES])
    return logsumexp(terms, axis=0) - math.log(4.0)


def _four_circles_sample(key, n):
    k1, k2 = jax.random.split(key)
    which = jax.random.randint(k1, (n,), 0, 4)
    centres = jnp.asarray(_CIRCLE_CENTRES)[which]
    return _sample_noisy_circle(k2, n, (0.0, 0.0), 2.0, 0.1) + centres


# -- abs --------------------------------------------------------------------------------------

_ABS_SD = math.exp(-1.5)


def _abs_log_prob(y):
    y1, y2 = y[..., 0], y[..., 1]
    return _log_normal_pdf(y1, 0.0, 1.0) + _log_normal_pdf(y2, jnp.abs(y1) - 1.0, _ABS_SD)


def _abs_sample(key, n):
    z = jax.random.normal(key, (n, 2))
    return jnp.stack([z[:, 0], jnp.abs(z[:, 0]) - 1.0 + _ABS_SD * z[:, 1]], -1)


# -- circle and cluster -----------------------------------------------------------------------

_CC_RADIUS, _CC_RING_SD, _CC_CLUSTER_SD = 3.0, 0.15, 0.4


def _circle_cluster_log_prob(y):
    ring = _log_noisy_circle(y, (0.0, 0.0), _CC_RADIUS, _CC_RING_SD)
    cluster = jnp.sum(_log_normal_pdf(y, 0.0, _CC_CLUSTER_SD), -1)
    return jnp.logaddexp(ring, cluster) - math.log(2.0)


def _circle_cluster_sample(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    ring = _sample_noisy_circle(k1, n, (0.0, 0.0), _CC_RADIUS, _CC_RING_SD)
    cluster = _CC_CLUSTER_SD * jax.random.normal(k2, (n, 2))
    return jnp.where(jax.random.bernoulli(k3, 0.5, (n, 1)), ring, cluster)


@dataclass(frozen=True)
class Teacher:
    """An exactly known 2-D density: ``log_prob(y)`` for ``y`` of shape ``(..., 2)`` and
    ``sample(key, n)``; ``lim`` is a half-width of a square holding all but a negligible mass."""

    name: str
    log_prob: Callable
    sample: Callable
    lim: float
    multimodal: bool

    def __call__(self, y):
        return self.log_prob(y)


TEACHERS: dict[str, Teacher] = {
    "circle_cluster": Teacher(
        "circle_cluster", _circle_cluster_log_prob, _circle_cluster_sample, 4.5, True
    ),
    "two_moons": Teacher("two_moons", _moons_log_prob, _moons_sample, 4.0, True),
    "four_circles": Teacher(
        "four_circles", _four_circles_log_prob, _four_circles_sample, 4.0, True
    ),
    "abs": Teacher("abs", _abs_log_prob, _abs_sample, 5.5, False),
}


def get_teacher(name: str) -> Teacher:
    if name not in TEACHERS:
        raise KeyError(f"unknown teacher {name!r}; available: {', '.join(TEACHERS)}")
    return TEACHERS[name]


# -- the low-resolution map of the toy problem ------------------------------------------------


def quantize(y1, bin_width: float):
    """``x = pi(y)``: the centre of the width-``bin_width`` bin holding ``y1`` (shape kept)."""
    if bin_width <= 0:
        raise ValueError(f"bin_width must be positive, got {bin_width}")
    return (jnp.floor(jnp.asarray(y1) / bin_width) + 0.5) * bin_width


def bin_log_mass(teacher: Teacher, centres, bin_width: float, n: int = 601) -> np.ndarray:
    """``log P_T(quantize(y1) = x)`` for each bin centre ``x``: the teacher's mass in the strip
    ``|y1 - x| < bin_width / 2``, by a tensor-product Simpson rule on ``n x n`` points (the strip
    is cut at ``+-teacher.lim`` in ``y2``). Needed for exact conditional log-densities
    ``log p_T(y | x) = log p_T(y) - log P_T(x)`` on the strip."""
    if n % 2 == 0:
        n += 1
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    out = []
    for c in np.atleast_1d(np.asarray(centres, dtype=np.float64)):
        a = np.linspace(c - bin_width / 2, c + bin_width / 2, n)
        b = np.linspace(-teacher.lim, teacher.lim, n)
        ga, gb = np.meshgrid(a, b, indexing="ij")
        logp = np.asarray(teacher.log_prob(jnp.stack([ga, gb], -1)), dtype=np.float64)
        ha, hb = (a[1] - a[0]) / 3, (b[1] - b[0]) / 3
        weights = np.log(np.outer(w, w) * ha * hb)
        out.append(float(_np_logsumexp(logp + weights)))
    return np.asarray(out)


def _np_logsumexp(a):
    a = np.asarray(a).ravel()
    m = np.max(a[np.isfinite(a)]) if np.isfinite(a).any() else -np.inf
    return m + np.log(np.sum(np.exp(a - m)))


def conditional_log_prob(teacher: Teacher, y, x, bin_width: float, log_mass: dict | None = None):
    """Exact ``log p_T(y | x)`` for ``x = quantize(y1)``; ``-inf`` where ``y1`` lies outside the
    bin of ``x``. ``log_mass`` caches :func:`bin_log_mass` by bin centre (rounded)."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    keys = np.round(x / bin_width - 0.5).astype(int)
    log_mass = {} if log_mass is None else log_mass
    missing = sorted({int(k) for k in keys} - set(log_mass))
    if missing:
        values = bin_log_mass(teacher, (np.asarray(missing) + 0.5) * bin_width, bin_width)
        log_mass.update(dict(zip(missing, values, strict=True)))
    joint = np.asarray(teacher.log_prob(jnp.asarray(y)), dtype=np.float64)
    mass = np.array([log_mass[int(k)] for k in keys])
    same_bin = np.isclose(np.asarray(quantize(y[:, 0], bin_width)), x)
    return np.where(same_bin, joint - mass, -np.inf)

"""2-D toy data sets of FFJORD (Grathwohl et al. 2019) / gradient boosted flows, in ``jax.random``.

Every sampler is a pure function ``sample_<name>(key, n) -> (n, 2) float32 jax.Array`` that is
deterministic for a given PRNG key (both ``jax.random.key`` and legacy ``PRNGKey`` keys work).
``n`` is a Python int (a static shape): each sampler is jitted internally with ``n`` static, and
to call it inside a user ``jax.jit`` pass ``n`` as a static argument (or close over it).

The constructions, constants and scalings follow ``inf_train_gen`` of FFJORD's
``lib/toy_data.py`` (which itself calls ``sklearn.datasets`` for moons, circles and the swiss
roll; those generators are re-implemented here with the same formulas).  Only the random
number streams differ (``jax.random`` instead of NumPy), plus three small deviations needed to
return exactly ``n`` shuffled rows, each noted in the sampler's docstring:

* ``pinwheel`` in FFJORD returns ``5 * (n // 5)`` points; here labels are ``arange(n) % 5``;
* ``2spirals`` in FFJORD returns ``2 * (n // 2)`` points, arm 1 first then arm 2; here the
  first arm gets ``n - n // 2`` points and the rows are randomly permuted;
* samplers whose FFJORD version is not i.i.d. row by row (rings, moons, circles: points on a
  deterministic angle grid) are randomly permuted, as FFJORD/sklearn do, so any contiguous
  slice is a representative sub-sample.

Data sets (``U(a, b)`` uniform, ``N(0, 1)`` standard normal, all draws independent):

* ``8gaussians``: centers ``4 * c`` with ``c`` in ``{(+-1, 0), (0, +-1), (+-1/sqrt2, +-1/sqrt2)}``
  (radius 4), point ``= (4 c + 0.5 N(0, I)) / 1.414``; mixture component uniform.  So the
  centers lie at radius ``4 / 1.414 ~ 2.83`` and the std is ``0.5 / 1.414 ~ 0.354``.
* ``pinwheel``: 5 arms, ``radial_std = 0.3``, ``tangential_std = 0.1``, ``rate = 0.25``;
  ``f = (1 + 0.3 N, 0.1 N)``, angle ``a = 2 pi k / 5 + 0.25 exp(f_0)``, point
  ``= 2 (f_0 cos a + f_1 sin a, -f_0 sin a + f_1 cos a)``.
* ``checkerboard``: ``x1 = U(-2, 2)``, ``x2 = U(0, 1) - 2 B + (floor(x1) mod 2)`` with
  ``B ~ Bernoulli(1/2)``, point ``= 2 (x1, x2)``: 8 squares of side 2 in ``[-4, 4]^2``.
* ``2spirals``: ``t = sqrt(U(0, 1)) * 540 deg = sqrt(U) * 3 pi``,
  ``d = (-t cos t + 0.5 U, t sin t + 0.5 U)``; arms ``d`` and ``-d``, divided by 3, plus
  ``0.1 N(0, I)``.
* ``moons``: sklearn ``make_moons(noise=0.1)`` (outer ``(cos s, sin s)``, inner
  ``(1 - cos s, 1 - sin s - 0.5)``, ``s`` on ``linspace(0, pi)`` incl. endpoint, ``n // 2``
  outer points) then ``* 2 + (-1, -0.2)``.
* ``circles``: sklearn ``make_circles(factor=0.5, noise=0.08)`` (radii 1 and 0.5, angles on
  ``linspace(0, 2 pi, endpoint=False)``, ``n // 2`` outer points) then ``* 3``: radii 3 and
  1.5 with noise std 0.24.
* ``rings``: 4 concentric circles of radii ``3 * (1, 0.75, 0.5, 0.25) = (3, 2.25, 1.5, 0.75)``
  with ``n // 4`` points on each of the 3 outer ones and the rest on the innermost, angles on
  ``linspace(0, 2 pi, endpoint=False)``, shuffled, plus ``0.08 N(0, I)`` (not scaled).
* ``swissroll``: sklearn ``make_swiss_roll(noise=1.0)`` keeping coordinates ``(x, z)``, divided
  by 5: ``t = 1.5 pi (1 + 2 U)``, point ``= (t cos t + N, t sin t + N) / 5``.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp

from flowjax_thesis.data.availability import note_used

__all__ = [
    "TOY_DATASETS",
    "sample_2spirals",
    "sample_8gaussians",
    "sample_checkerboard",
    "sample_circles",
    "sample_moons",
    "sample_pinwheel",
    "sample_rings",
    "sample_swissroll",
    "sample_toy",
    "train_val_test",
]

_F32 = jnp.float32
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_8G_CENTERS = (
    (1.0, 0.0),
    (-1.0, 0.0),
    (0.0, 1.0),
    (0.0, -1.0),
    (_INV_SQRT2, _INV_SQRT2),
    (_INV_SQRT2, -_INV_SQRT2),
    (-_INV_SQRT2, _INV_SQRT2),
    (-_INV_SQRT2, -_INV_SQRT2),
)


def _check_n(n: object, name: str = "n", minimum: int = 1) -> int:
    """Return ``n`` as a Python int, raising a clear error unless it is an int >= minimum."""
    if isinstance(n, bool):
        raise TypeError(f"{name} must be an integer, got bool {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(n).__name__} {n!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _toy_sampler(
    impl: Callable[[jax.Array, int], jax.Array],
) -> Callable[[jax.Array, int], jax.Array]:
    """Make the public sampler: validate ``n`` eagerly, then run ``impl`` jitted with static
    ``n`` (one compilation per distinct ``n``; also much faster than op-by-op dispatch)."""
    jitted = jax.jit(impl, static_argnums=1)

    @functools.wraps(impl)
    def sampler(key: jax.Array, n: int) -> jax.Array:
        return jitted(key, _check_n(n))

    return sampler


def _open_angles(m: int) -> jax.Array:
    """``numpy.linspace(0, 2 pi, m, endpoint=False)``."""
    return (2.0 * math.pi / max(m, 1)) * jnp.arange(m, dtype=_F32)


def _permute(key: jax.Array, x: jax.Array) -> jax.Array:
    return jax.random.permutation(key, x, axis=0)


@_toy_sampler
def sample_8gaussians(key: jax.Array, n: int) -> jax.Array:
    """Mixture of 8 Gaussians on a circle (FFJORD ``"8gaussians"``).

    ``x = (4 c_k + 0.5 eps) / 1.414`` with ``k ~ Uniform{0..7}``, ``eps ~ N(0, I)`` and
    ``c_k`` the 8 unit vectors at angles ``j pi / 4``.  FFJORD divides by the literal 1.414
    (not ``sqrt(2)``), kept here.  Centers at radius ``4 / 1.414 ~ 2.83``, std ``~0.354``.
    """
    k_idx, k_eps = jax.random.split(key)
    centers = 4.0 * jnp.asarray(_8G_CENTERS, dtype=_F32)
    idx = jax.random.randint(k_idx, (n,), 0, 8)
    eps = jax.random.normal(k_eps, (n, 2), dtype=_F32)
    return ((centers[idx] + 0.5 * eps) / 1.414).astype(_F32)


@_toy_sampler
def sample_pinwheel(key: jax.Array, n: int) -> jax.Array:
    """Pinwheel with 5 arms (FFJORD ``"pinwheel"``).

    ``radial_std = 0.3``, ``tangential_std = 0.1``, ``rate = 0.25``: with
    ``f = (1 + 0.3 e0, 0.1 e1)`` and angle ``a = 2 pi k / 5 + 0.25 exp(f0)``, the point is
    ``2 * (f0 cos a + f1 sin a, -f0 sin a + f1 cos a)`` (FFJORD's
    ``einsum("ti,tij->tj", f, [[cos, -sin], [sin, cos]])``), rows randomly permuted.
    Deviation: FFJORD uses ``n // 5`` points per arm (returning ``5 * (n // 5)`` rows); here arm
    labels are ``arange(n) % 5`` so exactly ``n`` rows are returned.
    """
    k_feat, k_perm = jax.random.split(key)
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    rads = _open_angles(num_classes)
    feats = jax.random.normal(k_feat, (n, 2), dtype=_F32) * jnp.array(
        [radial_std, tangential_std], dtype=_F32
    )
    feats = feats.at[:, 0].add(1.0)
    labels = jnp.arange(n) % num_classes
    angles = rads[labels] + rate * jnp.exp(feats[:, 0])
    c, s = jnp.cos(angles), jnp.sin(angles)
    f0, f1 = feats[:, 0], feats[:, 1]
    out = 2.0 * jnp.stack([f0 * c + f1 * s, -f0 * s + f1 * c], axis=1)
    return _permute(k_perm, out).astype(_F32)


@_toy_sampler
def sample_checkerboard(key: jax.Array, n: int) -> jax.Array:
    """Checkerboard (FFJORD ``"checkerboard"``): 8 of the 16 squares of side 2 in ``[-4, 4]^2``.

    ``x1 ~ U(-2, 2)``, ``x2 = U(0, 1) - 2 B + (floor(x1) mod 2)``, ``B ~ Bernoulli(1/2)``,
    point ``= 2 (x1, x2)``.  Every point satisfies ``floor(x/2) + floor(y/2)`` even.
    """
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jax.random.uniform(k1, (n,), dtype=_F32) * 4.0 - 2.0
    b = jax.random.randint(k3, (n,), 0, 2).astype(_F32)
    x2 = jax.random.uniform(k2, (n,), dtype=_F32) - 2.0 * b + jnp.mod(jnp.floor(x1), 2.0)
    return (2.0 * jnp.stack([x1, x2], axis=1)).astype(_F32)


@_toy_sampler
def sample_2spirals(key: jax.Array, n: int) -> jax.Array:
    """Two interleaved spirals (FFJORD ``"2spirals"``).

    ``t = sqrt(U) * 540 * 2 pi / 360`` (up to ``3 pi``), ``d = (-t cos t + 0.5 U',
    t sin t + 0.5 U'')``, arms ``d / 3`` and ``-d / 3``, plus ``0.1 N(0, I)``.
    Deviations: the first arm gets ``n - n // 2`` points (FFJORD returns ``2 * (n // 2)``
    rows) and the rows are randomly permuted (FFJORD stacks arm 1 then arm 2).
    """
    k_t, k_x, k_y, k_noise, k_perm = jax.random.split(key, 5)
    m1 = n - n // 2
    t = jnp.sqrt(jax.random.uniform(k_t, (m1,), dtype=_F32)) * 540.0 * (2.0 * math.pi) / 360.0
    d1x = -jnp.cos(t) * t + jax.random.uniform(k_x, (m1,), dtype=_F32) * 0.5
    d1y = jnp.sin(t) * t + jax.random.uniform(k_y, (m1,), dtype=_F32) * 0.5
    arm = jnp.stack([d1x, d1y], axis=1)
    x = jnp.concatenate([arm, -arm[: n // 2]], axis=0) / 3.0
    x = x + 0.1 * jax.random.normal(k_noise, (n, 2), dtype=_F32)
    return _permute(k_perm, x).astype(_F32)


@_toy_sampler
def sample_moons(key: jax.Array, n: int) -> jax.Array:
    """Two moons (FFJORD ``"moons"`` = sklearn ``make_moons(noise=0.1) * 2 + (-1, -0.2)``).

    ``n // 2`` outer points ``(cos s, sin s)`` and ``n - n // 2`` inner points
    ``(1 - cos s, 1 - sin s - 0.5)``, ``s`` on ``linspace(0, pi)`` (endpoint included),
    shuffled, plus ``0.1 N(0, I)``; then scaled by 2 and shifted by ``(-1, -0.2)``, so the
    noise std is 0.2.  The mean of the noiseless set is about ``(0, 0.3)``.
    """
    k_perm, k_noise = jax.random.split(key)
    n_out = n // 2
    n_in = n - n_out
    s_out = jnp.linspace(0.0, math.pi, n_out, dtype=_F32)
    s_in = jnp.linspace(0.0, math.pi, n_in, dtype=_F32)
    outer = jnp.stack([jnp.cos(s_out), jnp.sin(s_out)], axis=1)
    inner = jnp.stack([1.0 - jnp.cos(s_in), 1.0 - jnp.sin(s_in) - 0.5], axis=1)
    x = _permute(k_perm, jnp.concatenate([outer, inner], axis=0))
    x = x + 0.1 * jax.random.normal(k_noise, (n, 2), dtype=_F32)
    return (x * 2.0 + jnp.array([-1.0, -0.2], dtype=_F32)).astype(_F32)


@_toy_sampler
def sample_circles(key: jax.Array, n: int) -> jax.Array:
    """Two concentric circles (FFJORD ``"circles"`` = sklearn
    ``make_circles(factor=0.5, noise=0.08) * 3``).

    ``n // 2`` points on the unit circle and ``n - n // 2`` on the circle of radius 0.5,
    angles on ``linspace(0, 2 pi, endpoint=False)``, shuffled, plus ``0.08 N(0, I)``, then
    scaled by 3: radii 3 and 1.5, noise std 0.24.
    """
    k_perm, k_noise = jax.random.split(key)
    n_out = n // 2
    n_in = n - n_out
    a_out, a_in = _open_angles(n_out), _open_angles(n_in)
    outer = jnp.stack([jnp.cos(a_out), jnp.sin(a_out)], axis=1)
    inner = 0.5 * jnp.stack([jnp.cos(a_in), jnp.sin(a_in)], axis=1)
    x = _permute(k_perm, jnp.concatenate([outer, inner], axis=0))
    x = x + 0.08 * jax.random.normal(k_noise, (n, 2), dtype=_F32)
    return (3.0 * x).astype(_F32)


@_toy_sampler
def sample_rings(key: jax.Array, n: int) -> jax.Array:
    """Four concentric rings (FFJORD ``"rings"``).

    Radii ``3 * (1, 0.75, 0.5, 0.25) = (3, 2.25, 1.5, 0.75)``; ``n // 4`` points on each of
    the three outer rings and ``n - 3 (n // 4)`` on the innermost, angles on
    ``linspace(0, 2 pi, endpoint=False)``; shuffled, then ``0.08 N(0, I)`` noise is added
    (after the scaling by 3, so the noise std is 0.08).
    """
    k_perm, k_noise = jax.random.split(key)
    m = n // 4
    counts = (m, m, m, n - 3 * m)
    radii = (1.0, 0.75, 0.5, 0.25)
    parts = []
    for count, r in zip(counts, radii, strict=True):
        a = _open_angles(count)
        parts.append(r * jnp.stack([jnp.cos(a), jnp.sin(a)], axis=1))
    x = 3.0 * jnp.concatenate(parts, axis=0)
    x = _permute(k_perm, x)
    x = x + 0.08 * jax.random.normal(k_noise, (n, 2), dtype=_F32)
    return x.astype(_F32)


@_toy_sampler
def sample_swissroll(key: jax.Array, n: int) -> jax.Array:
    """Swiss roll (FFJORD ``"swissroll"`` = sklearn ``make_swiss_roll(noise=1.0)[:, [0, 2]] / 5``).

    ``t = 1.5 pi (1 + 2 U)`` in ``[1.5 pi, 4.5 pi]``, point ``= (t cos t + e1, t sin t + e2) / 5``
    with ``e ~ N(0, I)`` (the discarded height coordinate of the 3-D roll is not drawn).
    """
    k_t, k_noise = jax.random.split(key)
    t = 1.5 * math.pi * (1.0 + 2.0 * jax.random.uniform(k_t, (n,), dtype=_F32))
    x = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1)
    x = x + jax.random.normal(k_noise, (n, 2), dtype=_F32)
    return (x / 5.0).astype(_F32)


TOY_DATASETS: dict[str, Callable[[jax.Array, int], jax.Array]] = {
    "8gaussians": sample_8gaussians,
    "pinwheel": sample_pinwheel,
    "checkerboard": sample_checkerboard,
    "2spirals": sample_2spirals,
    "moons": sample_moons,
    "circles": sample_circles,
    "rings": sample_rings,
    "swissroll": sample_swissroll,
}
"""Registry of toy samplers ``(key, n) -> (n, 2) float32``, by FFJORD name."""


def _get_sampler(name: str) -> Callable[[jax.Array, int], jax.Array]:
    try:
        return TOY_DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(k) for k in TOY_DATASETS)
        raise KeyError(f"unknown toy data set {name!r}; valid names are: {valid}") from None


def sample_toy(name: str, key: jax.Array, n: int) -> jax.Array:
    """Draw ``n`` points of the toy data set ``name`` as an ``(n, 2)`` float32 array.

    Raises:
        KeyError: unknown ``name`` (the message lists the valid names).
        TypeError / ValueError: ``n`` is not an integer ``>= 1``.
    """
    sampler = _get_sampler(name)
    return sampler(key, _check_n(n))


def train_val_test(
    name: str, key: jax.Array, n_train: int, n_val: int, n_test: int
) -> dict[str, jax.Array]:
    """Deterministic train / validation / test sets of the toy data set ``name``.

    ``key`` is split into three keys, one per split, and each split is an independent draw
    of its size, so e.g. the training set does not change when ``n_test`` changes.
    ``n_train`` must be ``>= 1``; ``n_val`` and ``n_test`` may be 0 (empty ``(0, 2)`` arrays).

    Returns:
        ``{"train": (n_train, 2), "val": (n_val, 2), "test": (n_test, 2)}`` float32 arrays.
    """
    sampler = _get_sampler(name)
    sizes = {
        "train": _check_n(n_train, "n_train", 1),
        "val": _check_n(n_val, "n_val", 0),
        "test": _check_n(n_test, "n_test", 0),
    }
    keys = jax.random.split(key, 3)
    note_used(name, f"generated toy data {name!r} (FFJORD's construction, jax.random)", False)
    return {
        split: sampler(k, size) if size > 0 else jnp.zeros((0, 2), dtype=_F32)
        for (split, size), k in zip(sizes.items(), keys, strict=True)
    }

"""Tests of the 2-D target energies against independent NumPy re-implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.targets import (
    TARGET_LIMITS,
    TARGETS,
    get_target,
    log_density_ring,
    w1,
    w2,
    w3,
)

# --------------------------------------------------------------------------------------
# Independent float64 NumPy references, written directly from the formulas (naive
# log(exp + exp), which is fine in float64 on [-7, 7]^2).
# --------------------------------------------------------------------------------------


def np_w1(z):
    return np.sin(2 * np.pi * z[:, 0] / 4)


def np_w2(z):
    return 3 * np.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def np_w3(z):
    return 3 / (1 + np.exp(-(z[:, 0] - 1) / 0.3))


def np_u1(z):
    r = np.sqrt(z[:, 0] ** 2 + z[:, 1] ** 2)
    e1 = np.exp(-0.5 * ((z[:, 0] - 2) / 0.6) ** 2)
    e2 = np.exp(-0.5 * ((z[:, 0] + 2) / 0.6) ** 2)
    return 0.5 * ((r - 2) / 0.4) ** 2 - np.log(e1 + e2)


def np_u2(z):
    return 0.5 * ((z[:, 1] - np_w1(z)) / 0.4) ** 2


def np_u3(z):
    e1 = np.exp(-0.5 * ((z[:, 1] - np_w1(z)) / 0.35) ** 2)
    e2 = np.exp(-0.5 * ((z[:, 1] - np_w1(z) + np_w2(z)) / 0.35) ** 2)
    return -np.log(e1 + e2)


def np_u4(z):
    e1 = np.exp(-0.5 * ((z[:, 1] - np_w1(z)) / 0.4) ** 2)
    e2 = np.exp(-0.5 * ((z[:, 1] - np_w1(z) + np_w3(z)) / 0.35) ** 2)
    return -np.log(e1 + e2)


def np_ring_u(z):
    # Transcription of the blog's PyTorch ring_density, with torch -> numpy.
    exp1 = np.exp(-0.5 * ((z[:, 0] - 2) / 0.8) ** 2)
    exp2 = np.exp(-0.5 * ((z[:, 0] + 2) / 0.8) ** 2)
    u = 0.5 * ((np.linalg.norm(z, 2, axis=1) - 4) / 0.4) ** 2
    u = u - np.log(exp1 + exp2 + 1e-6)
    return u


NP_ENERGIES = {"U1": np_u1, "U2": np_u2, "U3": np_u3, "U4": np_u4, "ring": np_ring_u}
NAMES = ["U1", "U2", "U3", "U4", "ring"]


def _grid(lim=7.0, n=57):
    xs = np.linspace(-lim, lim, n)  # odd n: contains the origin and the axes
    gx, gy = np.meshgrid(xs, xs)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


FAR = np.array(
    [[50.0, 0.0], [-50.0, 3.0], [0.0, -60.0], [1e3, -1e3], [-1e3, 1e3], [7.0, 7.0], [-7.0, -7.0]]
)


def test_registry_and_limits():
    assert set(TARGETS) == set(NAMES)
    assert set(TARGET_LIMITS) == set(NAMES)
    for name in ["U1", "U2", "U3", "U4"]:
        assert TARGET_LIMITS[name] == 5.0
    assert TARGET_LIMITS["ring"] == 7.0
    for name in NAMES:
        assert get_target(name) is TARGETS[name]


def test_get_target_unknown_lists_names():
    with pytest.raises(KeyError) as info:
        get_target("U5")
    msg = str(info.value)
    for name in NAMES:
        assert repr(name) in msg


@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_reference(name):
    z = _grid()
    got = np.asarray(jax.jit(TARGETS[name])(jnp.asarray(z, jnp.float32)), np.float64)
    want = -NP_ENERGIES[name](z)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4)


def test_w_helpers_match_numpy():
    z = _grid(5.0, 21)
    zj = jnp.asarray(z, jnp.float32)
    for f, g in [(w1, np_w1), (w2, np_w2), (w3, np_w3)]:
        np.testing.assert_allclose(np.asarray(f(zj)), g(z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_single_event_batch_and_vmap_agree(name):
    f = TARGETS[name]
    z = jnp.asarray(np.random.default_rng(0).uniform(-6, 6, size=(3, 4, 2)), jnp.float32)
    batched = jax.jit(f)(z)
    assert batched.shape == (3, 4)
    single = jax.jit(f)(z[1, 2])
    assert single.shape == ()
    vm = jax.jit(jax.vmap(jax.vmap(f)))(z)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(vm), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float(single), float(batched[1, 2]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_finite_values_and_gradients_everywhere(name):
    f = TARGETS[name]
    z = jnp.asarray(np.concatenate([_grid(), FAR]), jnp.float32)
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(f)))(z)
    assert bool(jnp.all(jnp.isfinite(values)))
    assert grads.shape == z.shape
    assert bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(1)
    z = rng.uniform(-3, 3, size=(20, 2))
    g = np.asarray(jax.jit(jax.vmap(jax.grad(TARGETS[name])))(jnp.asarray(z, jnp.float32)))
    h = 1e-5
    ref = NP_ENERGIES[name]
    fd = np.stack(
        [-(ref(z + h * e) - ref(z - h * e)) / (2 * h) for e in np.eye(2)],
        axis=1,
    )
    np.testing.assert_allclose(g, fd, rtol=2e-3, atol=2e-3)


def test_gradient_at_origin_is_zero_subgradient():
    for name in ["U1", "ring"]:
        g = jax.grad(TARGETS[name])(jnp.zeros(2))
        np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_ring_keeps_blog_epsilon():
    # Far from z1 = +-2 the mode term saturates at log(1e-6) (the blog's constant).
    z = jnp.array([10.0, 0.0])
    want = -(0.5 * ((10.0 - 4.0) / 0.4) ** 2 - np.log(np.exp(-50.0) + np.exp(-112.5) + 1e-6))
    np.testing.assert_allclose(float(log_density_ring(z)), want, rtol=1e-6)
    z = jnp.array([0.0, 4.0])  # on the ring, between the modes
    want = np.log(2 * np.exp(-0.5 * (2 / 0.8) ** 2) + 1e-6)
    np.testing.assert_allclose(float(log_density_ring(z)), want, rtol=1e-5)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="last axis"):
        TARGETS["U1"](jnp.zeros(3))

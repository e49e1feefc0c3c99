"""Tests of the 2-D grid utilities (numerical log normalizers, density images)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.grid import (
    density_on_grid,
    grid_2d,
    grid_axes,
    grid_extent,
    log_density_on_grid,
    log_normalizer_grid,
)
from flowjax_thesis.targets import TARGET_LIMITS, TARGETS


def std_normal_logpdf(z):
    return -0.5 * jnp.sum(z**2, axis=-1) - jnp.log(2 * jnp.pi)


def test_grid_2d_square():
    pts, area = grid_2d(2.0, 4)
    assert pts.shape == (16, 2)
    assert pts.dtype == jnp.float32
    assert area == pytest.approx(1.0)
    xs = np.array([-1.5, -0.5, 0.5, 1.5])
    grid = np.asarray(pts).reshape(4, 4, 2)
    # [i, j] -> (x_j, y_i): x varies along columns, y along rows.
    np.testing.assert_allclose(grid[0, :, 0], xs)
    np.testing.assert_allclose(grid[:, 0, 1], xs)
    np.testing.assert_allclose(grid[2, 3], [1.5, 0.5])


def test_grid_2d_rectangle_and_axes():
    lim = ((-1.0, 3.0), (0.0, 1.0))
    pts, area = grid_2d(lim, 10)
    assert area == pytest.approx(4.0 * 1.0 / 100)
    xs, ys = grid_axes(lim, 10)
    np.testing.assert_allclose(np.asarray(xs), -1.0 + 0.4 * (np.arange(10) + 0.5), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ys), 0.1 * (np.arange(10) + 0.5), rtol=1e-6)
    assert float(pts[:, 0].min()) > -1.0 and float(pts[:, 0].max()) < 3.0
    assert grid_extent(lim) == (-1.0, 3.0, 0.0, 1.0)
    assert grid_extent(5) == (-5.0, 5.0, -5.0, 5.0)


@pytest.mark.parametrize(
    "lim", [0.0, -1.0, float("nan"), ((1.0, 0.0), (0.0, 1.0)), ((0.0, 1.0),), (1, 2, 3)]
)
def test_bad_lim(lim):
    with pytest.raises(ValueError):
        grid_2d(lim, 4)


def test_bad_n_and_chunk():
    with pytest.raises(ValueError):
        grid_2d(1.0, 0)
    with pytest.raises(TypeError):
        grid_2d(1.0, 2.5)
    with pytest.raises(ValueError):
        log_normalizer_grid(std_normal_logpdf, 1.0, 4, chunk=0)


def test_standard_normal_integrates_to_one():
    assert abs(float(log_normalizer_grid(std_normal_logpdf, 8.0, 200))) < 1e-4


def test_unnormalized_gaussian_known_log_z():
    mu = jnp.array([1.0, -0.5])
    sig = jnp.array([0.7, 1.3])

    def logf(z):  # exp(logf) integrates to 2 pi s1 s2 * exp(3)
        return 3.0 - 0.5 * jnp.sum(((z - mu) / sig) ** 2, axis=-1)

    want = 3.0 + math.log(2 * math.pi * 0.7 * 1.3)
    got = float(log_normalizer_grid(logf, ((-7.0, 9.0), (-10.0, 9.0)), 300, chunk=7777))
    assert got == pytest.approx(want, abs=1e-4)


def test_chunking_does_not_change_result():
    f = TARGETS["U3"]
    vals = [float(log_normalizer_grid(f, 5.0, 101, chunk=c)) for c in (1000, 10201, 10**6)]
    np.testing.assert_allclose(vals, vals[0], atol=2e-6)


def test_ring_log_z_converges_and_box_holds_the_mass():
    f = TARGETS["ring"]
    lim = TARGET_LIMITS["ring"]
    z400 = float(log_normalizer_grid(f, lim, 400))
    z800 = float(log_normalizer_grid(f, lim, 800))
    assert abs(z400 - z800) < 1e-3
    z_big = float(log_normalizer_grid(f, 10.0, 600))
    # mass outside [-7, 7]^2 relative to [-10, 10]^2
    assert 1.0 - math.exp(z800 - z_big) < 1e-3
    assert math.isfinite(z800)


def test_u1_log_z_stable():
    f = TARGETS["U1"]
    a = float(log_normalizer_grid(f, 5.0, 300))
    b = float(log_normalizer_grid(f, 8.0, 600))
    assert abs(a - b) < 1e-3


def test_density_on_grid_orientation_and_normalization():
    lim = ((-3.0, 5.0), (-4.0, 4.0))
    n = 64

    def logf(z):
        return 10.0 - 0.5 * ((z[0] - 2.0) ** 2 + (z[1] + 1.0) ** 2) / 0.3**2

    img = np.asarray(density_on_grid(logf, lim, n))
    assert img.shape == (n, n)
    xs, ys = (np.asarray(a) for a in grid_axes(lim, n))
    i, j = np.unravel_index(np.argmax(img), img.shape)
    assert abs(xs[j] - 2.0) < 0.13 and abs(ys[i] + 1.0) < 0.13
    want = math.exp(float(logf(jnp.array([xs[j + 2], ys[i - 1]]))))
    np.testing.assert_allclose(img[i - 1, j + 2], want, rtol=1e-5)

    img_n = np.asarray(density_on_grid(logf, lim, n, normalize=True))
    _, area = grid_2d(lim, n)
    assert img_n.sum() * area == pytest.approx(1.0, abs=1e-5)
    log_img = np.asarray(log_density_on_grid(logf, lim, n, chunk=1000))
    np.testing.assert_allclose(np.exp(log_img), img, rtol=1e-6, atol=1e-30)


def test_log_normalizer_is_traceable():
    @jax.jit
    def log_z(mu):
        return log_normalizer_grid(lambda z: std_normal_logpdf(z - mu), 9.0, 120, chunk=5000)

    mu = jnp.array([0.5, -1.0])
    assert abs(float(log_z(mu))) < 1e-4
    g = jax.grad(log_z)(mu)
    assert bool(jnp.all(jnp.abs(g) < 1e-3))

"""Tests of the FFJORD toy data samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.data import TOY_DATASETS, sample_toy, train_val_test

NAMES = ["8gaussians", "pinwheel", "checkerboard", "2spirals", "moons", "circles", "rings"]
N = 4000


@pytest.fixture(scope="module")
def big():
    key = jax.random.key(123)
    return {name: np.asarray(sample_toy(name, key, N)) for name in TOY_DATASETS}


def test_registry():
    assert set(NAMES) <= set(TOY_DATASETS)
    assert "swissroll" in TOY_DATASETS


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_shape_dtype_finite(name):
    for n in (1, 7):
        x = sample_toy(name, jax.random.key(0), n)
        assert x.shape == (n, 2)
        assert x.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(x)))


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_deterministic_and_key_dependent(name, big):
    # same n as the `big` fixture, so the jitted sampler is reused
    a = np.asarray(sample_toy(name, jax.random.key(123), N))
    c = np.asarray(sample_toy(name, jax.random.key(2), N))
    np.testing.assert_array_equal(a, big[name])
    assert a.shape == (N, 2) and a.dtype == np.float32
    assert np.all(np.isfinite(a))
    assert not np.allclose(a, c)


def test_legacy_prng_key_and_direct_call():
    a = TOY_DATASETS["moons"](jax.random.PRNGKey(3), 7)
    b = sample_toy("moons", jax.random.PRNGKey(3), 7)
    assert a.shape == (7, 2)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_8gaussians(big):
    x = big["8gaussians"]
    r = np.linalg.norm(x, axis=1)
    assert np.median(r) == pytest.approx(4 / 1.414, abs=0.1)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.1)
    # 8 modes at angles k pi / 4: each holds about 1/8 of the points
    k = np.round(np.arctan2(x[:, 1], x[:, 0]) / (np.pi / 4)).astype(int) % 8
    frac = np.bincount(k, minlength=8) / len(x)
    np.testing.assert_allclose(frac, 1 / 8, atol=0.025)
    # distance to nearest center has std 0.5 / 1.414 per coordinate
    centers = 4 / 1.414 * np.stack([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)], axis=1)
    assert np.std(x - centers) == pytest.approx(0.5 / 1.414, rel=0.05)


def test_pinwheel(big):
    x = big["pinwheel"]
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.1)
    assert np.median(np.linalg.norm(x, axis=1)) == pytest.approx(2.0, abs=0.15)


def test_checkerboard(big):
    x = big["checkerboard"]
    assert x.min() >= -4.0 and x.max() <= 4.0
    parity = (np.floor(x[:, 0] / 2) + np.floor(x[:, 1] / 2)) % 2
    assert np.all(parity == 0)
    cells = (np.floor(x[:, 0] / 2) + 2) * 4 + (np.floor(x[:, 1] / 2) + 2)
    counts = np.bincount(cells.astype(int), minlength=16)
    assert np.count_nonzero(counts) == 8
    np.testing.assert_allclose(counts[counts > 0] / len(x), 1 / 8, atol=0.025)


def test_2spirals(big):
    x = big["2spirals"]
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.05)
    r = np.linalg.norm(x, axis=1)
    assert r.max() < (3 * np.pi + 0.8) / 3 + 0.5
    # rows are shuffled: both arms are present in any contiguous block
    first = x[:200]
    assert np.abs(first.mean(0)).max() < 0.4


def test_moons(big):
    x = big["moons"]
    np.testing.assert_allclose(x.mean(0), [0.0, 0.3], atol=0.05)
    assert x[:, 0].min() > -3 - 1.0 and x[:, 0].max() < 3 + 1.0
    assert x[:, 1].min() > -1.2 - 1.0 and x[:, 1].max() < 1.8 + 1.0


def test_circles(big):
    x = big["circles"]
    r = np.linalg.norm(x, axis=1)
    dist = np.minimum(np.abs(r - 3.0), np.abs(r - 1.5))
    assert np.median(dist) < 0.25
    assert np.mean(r > 2.25) == pytest.approx(0.5, abs=0.02)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.05)


def test_rings(big):
    x = big["rings"]
    r = np.linalg.norm(x, axis=1)
    radii = np.array([3.0, 2.25, 1.5, 0.75])
    dist = np.abs(r[:, None] - radii[None, :])
    assert np.median(dist.min(1)) < 0.1
    assert r.max() < 3.5
    np.testing.assert_allclose(np.bincount(dist.argmin(1), minlength=4) / len(x), 0.25, atol=0.02)


def test_swissroll(big):
    x = big["swissroll"]
    r = np.linalg.norm(x, axis=1)
    assert r.max() < 4.5 * np.pi / 5 + 1.5
    assert np.median(r) > 1.0


def test_bad_name_lists_valid_names():
    with pytest.raises(KeyError) as info:
        sample_toy("8gausians", jax.random.key(0), 10)
    for name in NAMES:
        assert repr(name) in str(info.value)
    with pytest.raises(KeyError):
        train_val_test("nope", jax.random.key(0), 10, 1, 1)


@pytest.mark.parametrize("n", [0, -3])
def test_bad_n_value(n):
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample_toy("moons", jax.random.key(0), n)


@pytest.mark.parametrize("n", [2.5, "10", True, None])
def test_bad_n_type(n):
    with pytest.raises(TypeError):
        sample_toy("moons", jax.random.key(0), n)


def test_numpy_int_n_accepted():
    assert sample_toy("rings", jax.random.key(0), np.int64(7)).shape == (7, 2)


def test_train_val_test():
    key = jax.random.key(7)
    s = train_val_test("checkerboard", key, N, 7, 1)
    assert {k: v.shape for k, v in s.items()} == {"train": (N, 2), "val": (7, 2), "test": (1, 2)}
    assert all(v.dtype == jnp.float32 for v in s.values())
    s2 = train_val_test("checkerboard", key, N, 7, 1)
    for k in s:
        np.testing.assert_array_equal(np.asarray(s[k]), np.asarray(s2[k]))
    assert not np.allclose(np.asarray(s["val"][:1]), np.asarray(s["test"]))
    # the training set does not depend on the val/test sizes
    s3 = train_val_test("checkerboard", key, N, 0, 7)
    np.testing.assert_array_equal(np.asarray(s3["train"]), np.asarray(s["train"]))
    assert s3["val"].shape == (0, 2) and s3["val"].dtype == jnp.float32
    with pytest.raises(ValueError, match="n_train"):
        train_val_test("moons", key, 0, 1, 1)
    with pytest.raises(ValueError, match="n_val"):
        train_val_test("moons", key, 10, -1, 1)

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowjax_thesis.models.dap.kalman import dense_posterior, kalman_smoother

# jitted once: the noise levels are traced, so the examples compile once per length only
smoother = jax.jit(kalman_smoother)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    num_t=st.integers(2, 12),
    process_noise=st.floats(0.05, 2.0),
    obs_noise=st.floats(0.1, 2.0),
)
def test_smoother_matches_dense_posterior(seed, num_t, process_noise, obs_noise):
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.2, 4.0, size=num_t))  # irregular gaps
    obs = rng.normal(size=num_t)
    observed = rng.random(num_t) > 0.25
    observed[0] = True
    res = smoother(
        obs.astype(np.float32),
        times.astype(np.float32),
        process_noise=process_noise,
        obs_noise=obs_noise,
        mu0=0.3,
        v0=1.2,
        observed=observed,
    )
    mean, var = dense_posterior(
        obs,
        times,
        process_noise=process_noise,
        obs_noise=obs_noise,
        mu0=0.3,
        v0=1.2,
        observed=observed,
    )
    np.testing.assert_allclose(np.asarray(res.mean), mean, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(res.var), var, atol=1e-5, rtol=1e-5)


def test_smoother_vectorized_over_trailing_axes():
    rng = np.random.default_rng(0)
    times = np.array([0.0, 1.0, 3.0, 7.0])
    obs = rng.normal(size=(4, 3, 2)).astype(np.float32)
    res = kalman_smoother(obs, times, process_noise=0.3, obs_noise=0.5)
    for k in range(3):
        for p in range(2):
            m, _ = dense_posterior(obs[:, k, p], times, process_noise=0.3, obs_noise=0.5)
            np.testing.assert_allclose(np.asarray(res.mean[:, k, p]), m, atol=1e-5)


def test_original_backward_gap_is_wrong():
    """Using the gap between t-1 and t in the backward pass (the released code) is not RTS."""
    times = np.array([0.0, 1.0, 5.0])
    obs = np.array([1.0, -1.0, 2.0])
    res = kalman_smoother(obs, times, process_noise=0.5, obs_noise=0.5)
    fm, fv = np.asarray(res.filtered_mean), np.asarray(res.filtered_var)
    wrong_gap = 0.5 * (times[1] - times[0])  # should be times[2] - times[1] for t = 1
    step = wrong_gap / (fv[1] + wrong_gap)
    wrong = step * fm[1] + (1 - step) * np.asarray(res.mean)[2]
    dense, _ = dense_posterior(obs, times, process_noise=0.5, obs_noise=0.5)
    assert abs(float(res.mean[1]) - dense[1]) < 1e-5
    assert abs(wrong - dense[1]) > 1e-2


def test_bad_shapes():
    with pytest.raises(ValueError, match="time_values must have shape"):
        kalman_smoother(np.zeros((3, 2)), np.arange(4.0), process_noise=1.0, obs_noise=1.0)

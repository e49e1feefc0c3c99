"""Kalman filter and Rauch-Tung-Striebel smoother for the persona-topic Brownian motion.

Each coordinate alpha[k, p] follows an independent random walk on an irregular time grid:

    alpha_0 ~ N(mu0, v0),   alpha_t | alpha_{t-1} ~ N(alpha_{t-1}, sigma * (s_t - s_{t-1})),
    alpha_hat_t | alpha_t ~ N(alpha_t, w)   (the variational observations, noise w).

All coordinates share the variances, so the variance recursions are scalars per time step and the
means carry any trailing shape, e.g. (T, K, P). Time steps whose observation is missing
(``observed[t] = False``, e.g. a time step without documents) are predicted, not updated.

The backward pass uses the gap between t and t+1 (through P_{t+1} = V_t + sigma * gap_{t+1});
the original DAPPER code used the gap between t-1 and t there.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SmootherResult(NamedTuple):
    filtered_mean: jax.Array  # (T, ...)
    filtered_var: jax.Array  # (T,)
    predicted_var: jax.Array  # (T,)  P_t
    mean: jax.Array  # (T, ...) smoothed
    var: jax.Array  # (T,) smoothed


def kalman_smoother(
    obs: jax.Array,
    time_values: jax.Array,
    *,
    process_noise: float,
    obs_noise: float,
    mu0: jax.Array | float = 0.0,
    v0: float = 1.0,
    observed: jax.Array | None = None,
) -> SmootherResult:
    """Filters and smooths ``obs`` (T, ...) observed at increasing ``time_values`` (T,)."""
    obs = jnp.asarray(obs)
    time_values = jnp.asarray(time_values, obs.dtype)
    num_t = obs.shape[0]
    if time_values.shape != (num_t,):
        raise ValueError(
            f"time_values must have shape ({num_t},) to match obs {obs.shape}, "
            f"got {time_values.shape}"
        )
    if observed is None:
        observed = jnp.ones((num_t,), bool)
    observed = jnp.asarray(observed, bool)
    gaps = jnp.concatenate([jnp.zeros((1,), obs.dtype), jnp.diff(time_values)])
    q = process_noise * gaps  # (T,), q[0] unused
    mu0 = jnp.broadcast_to(jnp.asarray(mu0, obs.dtype), obs.shape[1:])

    def forward(carry, inp):
        m_prev, v_prev, first = carry
        y, q_t, seen = inp
        p = jnp.where(first, v0, v_prev + q_t)
        m_pred = jnp.where(first, mu0, m_prev)
        gain = p / (p + obs_noise)
        m = jnp.where(seen, m_pred + gain * (y - m_pred), m_pred)
        v = jnp.where(seen, obs_noise * gain, p)
        return (m, v, jnp.asarray(False)), (m, v, p)

    init = (mu0, jnp.asarray(v0, obs.dtype), jnp.asarray(True))
    _, (fm, fv, pv) = jax.lax.scan(forward, init, (obs, q, observed))

    def backward(carry, inp):
        a_next, s_next = carry
        m, v, p_next = inp
        j = v / p_next
        a = m + j * (a_next - m)
        s = v + j**2 * (s_next - p_next)
        return (a, s), (a, s)

    last = (fm[-1], fv[-1])
    _, (sm, sv) = jax.lax.scan(backward, last, (fm[:-1], fv[:-1], pv[1:]), reverse=True)
    mean = jnp.concatenate([sm, fm[-1:]], axis=0)
    var = jnp.concatenate([sv, fv[-1:]], axis=0)
    return SmootherResult(fm, fv, pv, mean, var)


def dense_posterior(obs, time_values, *, process_noise, obs_noise, mu0=0.0, v0=1.0, observed=None):
    """Reference: the exact Gaussian posterior of one scalar chain by dense linear algebra.

    Builds the joint prior covariance of alpha_{0:T-1} (Brownian motion started at N(mu0, v0)),
    conditions on the observed entries, and returns ``(mean, marginal_var)``. O(T^3); for tests.
    """
    import numpy as np

    obs = np.asarray(obs, np.float64)
    s = np.asarray(time_values, np.float64)
    num_t = len(s)
    observed = np.ones(num_t, bool) if observed is None else np.asarray(observed, bool)
    elapsed = s - s[0]
    prior_cov = v0 + process_noise * np.minimum.outer(elapsed, elapsed)
    prior_mean = np.full(num_t, float(mu0))
    idx = np.flatnonzero(observed)
    c_xy = prior_cov[:, idx]
    c_yy = prior_cov[np.ix_(idx, idx)] + obs_noise * np.eye(len(idx))
    gain = np.linalg.solve(c_yy, c_xy.T).T
    mean = prior_mean + gain @ (obs[idx] - prior_mean[idx])
    cov = prior_cov - gain @ c_xy.T
    return mean, np.diag(cov)

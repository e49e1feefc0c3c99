"""DAPPER's M-step: global updates from batch statistics, the alpha-hat system and the smoother
(thesis section 3.5.2).

With step size rho_i = (i + tau0)^-kappa for mini-batches and 1 for full batch: lambda and delta
by convex combination with their batch estimates scaled to the corpus; alpha_hat from the
regularized linear system (eq. 3.22); then the Kalman filter and RTS smoother
(:mod:`~flowjax_thesis.models.dap.kalman`) turn alpha_hat into alpha.

The alpha_hat system. Setting to zero the derivative of the alpha terms (3.18) minus the
regularizer (3.20) gives, for each time step t and with Sigma^-1 cancelled,

    (1 + n_p) alpha_hat_p + sum_{q != p} c_pq alpha_hat_q = alpha_hat_{t-1,p} + sum_d tau_dp m_d,

n_p = sum_d tau_dp (the exact expectation E_x ||m - alpha x||^2 = sum_p tau_p ||m - alpha_p||^2),
a linear system A alpha_hat = b per time step. Eq. 3.20 pairs every two personas with weight
D_t rho / 2 in each order, so its derivative gives **c_pq = rho_reg D_t**: that is the thesis's
strength, and ``alpha_hat_form="thesis"`` (the default) uses it.

Positive definiteness and stability. The objective's curvature in alpha_hat is -A, so the
stationary point is the maximum only while A is positive definite; and since alpha_hat_{t-1}
enters the right-hand side with weight 1, A must also satisfy A >= I, or the sequential solve
amplifies alpha_hat_{t-1} at every step (with a persona that holds almost no documents at t,
||A^-1|| grows to 1 / lambda_min; over the 229 years of the State of the Union alpha_hat then
overflowed float32 by year 152). Uniform c = rho D_t fails both for the thesis's own settings:
at equal persona masses n_p = D_t / P, A = (1 + D_t/P - c) I + c 1 1^T is indefinite as soon as
rho > 1/P + 1/D_t (rho = 0.2 with P = 15 or 25 personas, section 3.8.1.5).
:func:`pd_limit` gives the largest uniform c keeping diag(d) + c (1 1^T - I) positive definite.

So ``alpha_hat_form="thesis"`` (the default) keeps eq. 3.22's strength where it can and weights
the pairs by the personas' masses where it cannot:

    c_pq = s sqrt(n_p n_q),   s = min(rho_reg P, 1 - rvi_floor)   (:func:`rvi_strength`).

At equal masses c_pq = min(rho_reg D_t, (1 - rvi_floor) D_t / P): **exactly the thesis's
rho D_t while rho_reg P <= 1 - rvi_floor**, and otherwise the strongest pairing that keeps
A - I = (1 - s) diag(n) + s sqrt(n) sqrt(n)^T >= rvi_floor diag(n) >= 0, i.e. A >= I: positive
definite, no amplification of alpha_hat_{t-1}, and the regularizer removes at most a share
1 - rvi_floor of the documents' curvature in any direction. At the thesis's rho = 0.2 with
P = 15 personas the cap binds (rho P = 3): the strength is (1 - rvi_floor) D_t / P.

Other forms, kept for comparison: ``"printed"`` is eq. 3.22 as printed (sum tau^2 on the
diagonal, (m_d - 1) on the right; capped the same way); ``"released"`` is the released DAPPER
code's c = rho_reg D_t / P (at equal masses P times weaker; not capped, so a persona with few
documents makes it indefinite and full-batch RVI diverges, seen on NewsArticles at 0.2);
``"mass"`` (this package's former default) is c_pq = rho_reg sqrt(n_p n_q), positive definite
for rho_reg <= 1 but rho_reg D_t / P at equal masses, P times weaker than the thesis's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from flowjax_thesis.models.dap.kalman import kalman_smoother
from flowjax_thesis.models.dap.state import DapConfig, DapState, Stats, dirichlet_expectation


def pd_limit(diag: jax.Array) -> jax.Array:
    """The largest c for which diag(diag) + c (1 1^T - I) is positive definite (diag > 0).

    c_max = -1 / lambda_min(S (1 1^T - I) S) with S = diag(diag)^-1/2 (module docstring); +inf
    for a single persona.
    """
    diag = jnp.asarray(diag)
    num_p = diag.shape[-1]
    if num_p == 1:
        return jnp.asarray(jnp.inf, diag.dtype)
    s = 1.0 / jnp.sqrt(diag)
    off = jnp.ones((num_p, num_p), diag.dtype) - jnp.eye(num_p, dtype=diag.dtype)
    lam_min = jnp.linalg.eigvalsh(s[:, None] * off * s[None, :])[0]
    return -1.0 / lam_min


def rvi_strength(cfg: DapConfig) -> float:
    """s = min(rho_reg P, 1 - rvi_floor): the thesis form's pairs c_pq = s sqrt(n_p n_q)."""
    return min(cfg.rho_reg * cfg.num_personas, 1.0 - cfg.rvi_floor)


def solve_alpha_hat(
    cfg: DapConfig,
    tau: jax.Array,
    tau_sq: jax.Array,
    tau_m: jax.Array,
    docs: jax.Array,
    mu0: float | jax.Array = 0.0,
) -> jax.Array:
    """New variational observations alpha_hat (T, K, P) from scaled statistics (eq. 3.22).

    Solved sequentially over time: alpha_hat_{t-1} (mu0 at t = 0) enters the right-hand side.
    """
    num_p = cfg.num_personas
    off = jnp.ones((num_p, num_p)) - jnp.eye(num_p)
    num_k = tau_m.shape[-1]
    prev0 = jnp.broadcast_to(jnp.asarray(mu0, tau_m.dtype), (num_p, num_k))

    def step(prev, inp):
        n, n2, sm, d_t = inp
        n = jnp.maximum(n, 0.0)
        if cfg.alpha_hat_form == "thesis":
            root = jnp.sqrt(n)
            a_mat = jnp.diag(1.0 + n) + rvi_strength(cfg) * jnp.outer(root, root) * off
            rhs = prev + sm
        elif cfg.alpha_hat_form == "printed":
            n2 = jnp.maximum(n2, 0.0)
            root = jnp.sqrt(n2)
            a_mat = jnp.diag(1.0 + n2) + rvi_strength(cfg) * jnp.outer(root, root) * off
            rhs = prev + sm - n[:, None]
        elif cfg.alpha_hat_form == "mass":
            root = jnp.sqrt(n)
            a_mat = jnp.diag(1.0 + n) + cfg.rho_reg * jnp.outer(root, root) * off
            rhs = prev + sm
        else:  # "released"
            a_mat = jnp.diag(1.0 + n) + cfg.rho_reg * d_t / num_p * off
            rhs = prev + sm
        new = jnp.linalg.solve(a_mat, rhs)  # (P, K)
        return new, new

    _, out = jax.lax.scan(step, prev0, (tau, tau_sq, tau_m, docs))
    return out.transpose(0, 2, 1)  # (T, K, P)


def m_step(
    cfg: DapConfig, state: DapState, stats: Stats, scale: jax.Array, rho: jax.Array
) -> DapState:
    """Global update from statistics summed over a batch (pure, jittable).

    ``scale`` = corpus documents / batch documents (1 for full batch); ``rho`` the step size.
    """
    lam = (1 - rho) * state.lam + rho * (cfg.eta_ + scale * stats.beta)
    delta = (1 - rho) * state.delta + rho * (cfg.omega_ + scale * stats.kappa)
    new_hat = solve_alpha_hat(
        cfg,
        scale * stats.tau,
        scale * stats.tau_sq,
        scale * stats.tau_m,
        scale * stats.docs,
        cfg.mu0,
    )
    alpha_hat = (1 - rho) * state.alpha_hat + rho * new_hat
    sm = kalman_smoother(
        alpha_hat,
        state.time_values,
        process_noise=cfg.process_noise,
        obs_noise=cfg.obs_noise,
        mu0=cfg.mu0,
        v0=cfg.v0,
        observed=state.observed,
    )
    return state.replace(
        lam=lam,
        delta=delta,
        alpha_hat=alpha_hat,
        alpha=sm.mean.astype(state.alpha.dtype),
        alpha_var=sm.var.astype(state.alpha_var.dtype),
        step=state.step + 1,
    )


def global_elbo(cfg: DapConfig, state: DapState) -> jax.Array:
    """ELBO terms of the global parameters: beta and kappa (prior + entropy) and the alpha prior.

    alpha enters as a point estimate (its smoothed means) under the Brownian-motion prior.
    """

    def dir_terms(x, prior):
        el = dirichlet_expectation(x)
        dim = x.shape[-1]
        e_log_p = gammaln(dim * prior) - dim * gammaln(prior) + jnp.sum((prior - 1) * el, -1)
        e_log_q = gammaln(jnp.sum(x, -1)) - jnp.sum(gammaln(x), -1) + jnp.sum((x - 1) * el, -1)
        return jnp.sum(e_log_p - e_log_q)

    alpha = state.alpha
    gaps = jnp.diff(state.time_values)
    diffs = alpha[1:] - alpha[:-1]
    var = cfg.process_noise * gaps[:, None, None]
    lp = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * var) - 0.5 * diffs**2 / var)
    lp += jnp.sum(-0.5 * jnp.log(2 * jnp.pi * cfg.v0) - 0.5 * (alpha[0] - cfg.mu0) ** 2 / cfg.v0)
    return dir_terms(state.lam, cfg.eta_) + dir_terms(state.delta, cfg.omega_) + lp


@functools.partial(jax.jit, static_argnums=0)
def m_step_jit(cfg: DapConfig, state: DapState, stats: Stats, scale, rho):
    return m_step(cfg, state, stats, scale, rho)

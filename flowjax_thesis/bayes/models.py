"""Posteriors of Bayesian models as pure log-densities over an unconstrained vector.

Every model is a :class:`BayesModel`: ``log_density(theta)`` takes one unconstrained vector of
shape ``(dim,)`` and returns the unnormalised log posterior *including* the log-Jacobian of the
constraining bijectors (distrax), so that any density on ``R^dim`` (a flow) can approximate it.
``constrain(theta)`` maps back to named constrained parameters.

- :func:`eight_schools` (Rubin 1981), centered and non-centered:
  ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``, ``theta_j ~ N(mu, tau)``, ``y_j ~ N(theta_j, s_j)``.
- :func:`neal_funnel`: ``v ~ N(0, 3)``, ``x_i ~ N(0, exp(v / 2))`` (exact draws available).
- :func:`mrp_model`: a multilevel logistic regression of the MRP kind (varying intercepts for
  state, age group and education, a fixed effect for sex; non-centered) on a synthetic survey drawn
  from known parameters (:func:`make_mrp_data`), and :func:`poststratify`, which turns posterior
  draws into population estimates per state with a census table.
- Exactly solvable checks: :func:`conjugate_gaussian` (Bayesian linear regression with known
  noise: Gaussian posterior and evidence in closed form) and :func:`beta_bernoulli`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats
from jax.scipy.special import gammaln

#: ``R -> (0, inf)``, ``y = exp(x)``, ``log|dy/dx| = x``.
POSITIVE = distrax.Lambda(
    forward=jnp.exp,
    inverse=jnp.log,
    forward_log_det_jacobian=lambda x: x,
    inverse_log_det_jacobian=lambda y: -jnp.log(y),
    event_ndims_in=0,
)
#: ``R -> (0, 1)``.
UNIT_INTERVAL = distrax.Sigmoid()


@dataclass(frozen=True, eq=False)
class BayesModel:
    """A posterior on ``R^dim`` (see the module docstring).

    Attributes:
      exact: closed-form facts about the posterior when known (``mean``, ``cov``,
        ``log_evidence``, ``mean_constrained``...), in the unconstrained space unless named so.
      sample_exact: ``(key, n) -> (n, dim)`` exact posterior draws, when available.
      reference: ``(other_model, to_self)``: the same posterior in another parameterisation that
        samples better (NUTS on ``other_model``, draws mapped by ``to_self``).
      data: the model's data and anything needed downstream (e.g. the census table).
      unconstrain: the inverse of ``constrain`` on the latent sites (a dict of constrained values
        -> ``(dim,)``), when known (models made by :func:`~flowjax_thesis.bayes.from_numpyro`).
    """

    name: str
    dim: int
    names: tuple[str, ...]
    log_density: Callable
    constrain: Callable
    exact: dict | None = None
    sample_exact: Callable | None = None
    reference: tuple | None = None
    data: dict = field(default_factory=dict)
    unconstrain: Callable | None = None

    def __post_init__(self):
        if len(self.names) != self.dim:
            raise ValueError(f"{self.name}: {len(self.names)} names for dim {self.dim}")

    def check(self, theta):
        theta = jnp.asarray(theta)
        if theta.shape != (self.dim,):
            raise ValueError(
                f"{self.name}: log_density takes one unconstrained vector of shape "
                f"({self.dim},); vmap it for a batch. Got shape {theta.shape}"
            )
        return theta


def _positive(x):
    """Constrained value and log-Jacobian of the positive bijector at unconstrained ``x``."""
    return POSITIVE.forward_and_log_det(x)


def _half_cauchy_logpdf(x, scale):
    return jnp.log(2.0) + stats.cauchy.logpdf(x, 0.0, scale)


def _half_normal_logpdf(x, scale):
    return jnp.log(2.0) + stats.norm.logpdf(x, 0.0, scale)


# ---------------------------------------------------------------------------------------------
# Eight schools
# ---------------------------------------------------------------------------------------------

EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(centered: bool = True) -> BayesModel:
    """Eight schools; ``theta = (mu, log tau, theta_1..8)`` (centered) or ``(mu, log tau,
    eta_1..8)`` with ``theta_j = mu + tau eta_j`` (non-centered)."""
    y, sigma = jnp.asarray(EIGHT_SCHOOLS_Y), jnp.asarray(EIGHT_SCHOOLS_SIGMA)
    kind = "centered" if centered else "noncentered"
    latent = "theta" if centered else "eta"

    def log_density(params):
        mu, log_tau, z = params[0], params[1], params[2:]
        tau, log_jac = _positive(log_tau)
        lp = stats.norm.logpdf(mu, 0.0, 5.0) + _half_cauchy_logpdf(tau, 5.0) + log_jac
        if centered:
            theta = z
            lp += jnp.sum(stats.norm.logpdf(theta, mu, tau))
        else:
            theta = mu + tau * z
            lp += jnp.sum(stats.norm.logpdf(z))
        return lp + jnp.sum(stats.norm.logpdf(y, theta, sigma))

    def constrain(params):
        mu, tau, z = params[0], jnp.exp(params[1]), params[2:]
        theta = z if centered else mu + tau * z
        return {"mu": mu, "tau": tau, "theta": theta}

    reference = None
    if centered:
        other = eight_schools(centered=False)

        def to_centered(draws):
            draws = jnp.asarray(draws)
            mu, log_tau, eta = draws[:, :1], draws[:, 1:2], draws[:, 2:]
            return jnp.concatenate([mu, log_tau, mu + jnp.exp(log_tau) * eta], axis=1)

        reference = (other, to_centered)
    names = ("mu", "log_tau") + tuple(f"{latent}[{j}]" for j in range(8))
    return BayesModel(
        f"eight_schools_{kind}",
        10,
        names,
        log_density,
        constrain,
        reference=reference,
        data={"y": EIGHT_SCHOOLS_Y, "sigma": EIGHT_SCHOOLS_SIGMA},
    )


# ---------------------------------------------------------------------------------------------
# Neal's funnel
# ---------------------------------------------------------------------------------------------


def neal_funnel(dim: int = 10, v_scale: float = 3.0) -> BayesModel:
    """Neal's funnel: ``v ~ N(0, v_scale)``, ``x_i | v ~ N(0, exp(v / 2))``, ``i < dim``."""
    if dim < 2:
        raise ValueError(f"the funnel needs dim >= 2, got {dim}")

    def log_density(params):
        v, x = params[0], params[1:]
        return stats.norm.logpdf(v, 0.0, v_scale) + jnp.sum(
            stats.norm.logpdf(x, 0.0, jnp.exp(v / 2))
        )

    def sample_exact(key, n):
        kv, kx = jax.random.split(key)
        v = v_scale * jax.random.normal(kv, (n, 1))
        x = jnp.exp(v / 2) * jax.random.normal(kx, (n, dim - 1))
        return jnp.concatenate([v, x], axis=1)

    x_sd = float(np.exp(v_scale**2 / 4))  # sd of x_i = sqrt(E[exp(v)]) = exp(v_scale^2 / 4)
    exact = {
        "mean": np.zeros(dim),
        "sd": np.array([v_scale] + [x_sd] * (dim - 1)),
        "log_evidence": 0.0,
    }
    names = ("v",) + tuple(f"x[{i}]" for i in range(dim - 1))
    return BayesModel(
        f"funnel_{dim}d",
        dim,
        names,
        log_density,
        lambda p: {"v": p[0], "x": p[1:]},
        exact=exact,
        sample_exact=sample_exact,
    )


# ---------------------------------------------------------------------------------------------
# Multilevel regression and poststratification (MRP)
# ---------------------------------------------------------------------------------------------

MRP_TRUTH = {"alpha": -0.3, "beta_female": 0.4, "sigma_state": 0.6, "sigma_age": 0.4}
MRP_TRUTH["sigma_edu"] = 0.5


def make_mrp_data(
    seed: int = 0,
    num_states: int = 20,
    num_ages: int = 4,
    num_edus: int = 5,
    num_respondents: int = 2000,
) -> dict:
    """A synthetic population (census table), a non-representative survey and the truth.

    The census has one cell per (state, age, education, sex) with a population count. True
    parameters are :data:`MRP_TRUTH` plus group effects drawn from ``N(0, sigma_g)``. Respondents
    are drawn from the population with response rates that rise with age and education (so the
    raw survey is biased and poststratification matters); each answers yes with the cell's true
    probability. The survey is stored as (yes, n) counts per cell.
    """
    rng = np.random.default_rng(seed)
    S, A, E = num_states, num_ages, num_edus
    t = MRP_TRUTH
    effects = {
        "state": rng.normal(0, t["sigma_state"], S),
        "age": rng.normal(0, t["sigma_age"], A),
        "edu": rng.normal(0, t["sigma_edu"], E),
    }
    state, age, edu, female = (
        g.reshape(-1) for g in np.meshgrid(np.arange(S), np.arange(A), np.arange(E), [0, 1])
    )
    order = np.lexsort((female, edu, age, state))
    state, age, edu, female = state[order], age[order], edu[order], female[order]
    # census counts: state sizes x state-specific age and education mixes x 50/50 sex
    state_size = np.exp(rng.normal(np.log(2e5), 0.8, S))
    age_mix = rng.dirichlet(np.full(A, 5.0), S)
    edu_mix = rng.dirichlet(np.full(E, 3.0), S)
    count = state_size[state] * age_mix[state, age] * edu_mix[state, edu] * 0.5
    count = np.maximum(np.round(count), 1.0)
    logit = (
        t["alpha"]
        + t["beta_female"] * female
        + effects["state"][state]
        + effects["age"][age]
        + effects["edu"][edu]
    )
    p_true = 1.0 / (1.0 + np.exp(-logit))
    response = 0.4 + 0.6 * (age / max(A - 1, 1)) * 0.5 + 0.6 * (edu / max(E - 1, 1)) * 0.5
    draw = rng.choice(
        len(count), size=num_respondents, p=count * response / np.sum(count * response)
    )
    n = np.bincount(draw, minlength=len(count)).astype(float)
    yes = rng.binomial(n.astype(int), p_true).astype(float)
    pop_by_state = np.bincount(state, weights=count, minlength=S)
    truth_state = np.bincount(state, weights=count * p_true, minlength=S) / pop_by_state
    n_state = np.bincount(state, weights=n, minlength=S)
    raw_state = np.bincount(state, weights=yes, minlength=S) / np.maximum(n_state, 1)
    return {
        "num_states": S,
        "num_ages": A,
        "num_edus": E,
        "cells": {"state": state, "age": age, "edu": edu, "female": female},
        "census_count": count,
        "survey_n": n,
        "survey_yes": yes,
        "true_effects": effects,
        "true_p": p_true,
        "truth_state": truth_state,
        "raw_survey_state": raw_state,
        "respondents_by_state": n_state,
        "seed": seed,
    }


def mrp_model(data: dict | None = None, **data_kwargs) -> BayesModel:
    """The multilevel logistic regression of MRP, non-centered::

        yes_c ~ Binomial(n_c, logit^-1(alpha + beta female_c + a_state + a_age + a_edu))
        a_g = sigma_g z_g,  z_g ~ N(0, 1),  sigma_g ~ HalfNormal(1),  alpha, beta ~ N(0, 2)

    ``theta = (alpha, beta, log sigma_state, log sigma_age, log sigma_edu, z_state, z_age, z_edu)``.
    """
    data = make_mrp_data(**data_kwargs) if data is None else data
    S, A, E = data["num_states"], data["num_ages"], data["num_edus"]
    cells = {k: jnp.asarray(v) for k, v in data["cells"].items()}
    n, yes = jnp.asarray(data["survey_n"]), jnp.asarray(data["survey_yes"])
    log_binom = jnp.asarray(gammaln(n + 1) - gammaln(yes + 1) - gammaln(n - yes + 1))
    dim = 5 + S + A + E

    def unpack(params):
        alpha, beta = params[0], params[1]
        sigmas, log_jac = _positive(params[2:5])
        z_state = params[5 : 5 + S]
        z_age = params[5 + S : 5 + S + A]
        z_edu = params[5 + S + A :]
        return alpha, beta, sigmas, log_jac, z_state, z_age, z_edu

    def cell_logit(params):
        alpha, beta, sigmas, _, z_state, z_age, z_edu = unpack(params)
        return (
            alpha
            + beta * cells["female"]
            + sigmas[0] * z_state[cells["state"]]
            + sigmas[1] * z_age[cells["age"]]
            + sigmas[2] * z_edu[cells["edu"]]
        )

    def log_density(params):
        alpha, beta, sigmas, log_jac, _, _, _ = unpack(params)
        lp = stats.norm.logpdf(alpha, 0.0, 2.0) + stats.norm.logpdf(beta, 0.0, 2.0)
        lp += jnp.sum(_half_normal_logpdf(sigmas, 1.0) + log_jac)
        lp += jnp.sum(stats.norm.logpdf(params[5:]))
        eta = cell_logit(params)
        loglik = yes * jax.nn.log_sigmoid(eta) + (n - yes) * jax.nn.log_sigmoid(-eta) + log_binom
        return lp + jnp.sum(loglik)

    def constrain(params):
        alpha, beta, sigmas, _, z_state, z_age, z_edu = unpack(params)
        return {
            "alpha": alpha,
            "beta_female": beta,
            "sigma_state": sigmas[0],
            "sigma_age": sigmas[1],
            "sigma_edu": sigmas[2],
            "a_state": sigmas[0] * z_state,
            "a_age": sigmas[1] * z_age,
            "a_edu": sigmas[2] * z_edu,
        }

    names = (
        ("alpha", "beta_female", "log_sigma_state", "log_sigma_age", "log_sigma_edu")
        + tuple(f"z_state[{i}]" for i in range(S))
        + tuple(f"z_age[{i}]" for i in range(A))
        + tuple(f"z_edu[{i}]" for i in range(E))
    )
    model_data = dict(data)
    model_data["cell_logit"] = cell_logit
    return BayesModel(f"mrp_{S}states", dim, names, log_density, constrain, data=model_data)


def poststratify(model: BayesModel, draws, log_weights=None) -> dict:
    """Population estimates per state from posterior ``draws`` (unconstrained, ``(n, dim)``).

    Each draw gives cell probabilities ``p_c``; the state estimate is
    ``sum_c N_c p_c / sum_c N_c`` over the state's census cells. With ``log_weights`` (importance
    weights of the draws) the summaries are self-normalised importance-sampling estimates.
    Returns ``draws`` (``(n, S)``), ``mean`` and ``sd`` per state.
    """
    data = model.data
    if "cell_logit" not in data:
        raise ValueError(f"{model.name} is not an MRP model (no census table)")
    S = data["num_states"]
    state = jnp.asarray(data["cells"]["state"])
    count = jnp.asarray(data["census_count"])
    pop = jax.ops.segment_sum(count, state, num_segments=S)

    @jax.jit
    def by_state(d):
        p = jax.nn.sigmoid(jax.vmap(data["cell_logit"])(d))  # (n, cells)
        return jax.vmap(lambda pc: jax.ops.segment_sum(count * pc, state, num_segments=S))(p) / pop

    est = by_state(jnp.asarray(draws))
    if log_weights is None:
        w = jnp.full(est.shape[0], 1.0 / est.shape[0])
    else:
        w = jax.nn.softmax(jnp.asarray(log_weights))
    mean = jnp.sum(w[:, None] * est, axis=0)
    sd = jnp.sqrt(jnp.sum(w[:, None] * (est - mean) ** 2, axis=0))
    return {"draws": np.asarray(est), "mean": np.asarray(mean), "sd": np.asarray(sd)}


# ---------------------------------------------------------------------------------------------
# Exactly solvable posteriors (for the tests)
# ---------------------------------------------------------------------------------------------


def conjugate_gaussian(
    dim: int = 3, num_obs: int = 20, noise_sd: float = 1.0, prior_sd: float = 2.0, seed: int = 0
) -> BayesModel:
    """Bayesian linear regression ``y = X w + eps``, ``eps ~ N(0, noise_sd^2)``, ``w ~ N(0,
    prior_sd^2 I)``. The posterior is Gaussian; ``exact`` holds its mean, covariance and the log
    evidence ``log N(y; 0, noise_sd^2 I + prior_sd^2 X X^T)``. Columns of ``X`` are correlated so
    the posterior is too (mean-field cannot match it)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(num_obs, 1))
    X = 0.7 * base + 0.5 * rng.normal(size=(num_obs, dim))
    w_true = rng.normal(0, 1, dim)
    y = X @ w_true + noise_sd * rng.normal(size=num_obs)
    precision = X.T @ X / noise_sd**2 + np.eye(dim) / prior_sd**2
    cov = np.linalg.inv(precision)
    mean = cov @ X.T @ y / noise_sd**2
    marg_cov = noise_sd**2 * np.eye(num_obs) + prior_sd**2 * X @ X.T
    sign, logdet = np.linalg.slogdet(marg_cov)
    log_evidence = -0.5 * (y @ np.linalg.solve(marg_cov, y) + logdet + num_obs * np.log(2 * np.pi))
    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def log_density(w):
        return jnp.sum(stats.norm.logpdf(w, 0.0, prior_sd)) + jnp.sum(
            stats.norm.logpdf(yj, Xj @ w, noise_sd)
        )

    chol = np.linalg.cholesky(cov)

    def sample_exact(key, n):
        return jnp.asarray(mean) + jax.random.normal(key, (n, dim)) @ jnp.asarray(chol).T

    return BayesModel(
        f"conjugate_gaussian_{dim}d",
        dim,
        tuple(f"w[{i}]" for i in range(dim)),
        log_density,
        lambda w: {"w": w},
        exact={
            "mean": mean,
            "cov": cov,
            "sd": np.sqrt(np.diag(cov)),
            "log_evidence": float(log_evidence),
        },
        sample_exact=sample_exact,
        data={"X": X, "y": y},
    )


def beta_bernoulli(
    successes=(3, 14), trials=(10, 20), a: float = 2.0, b: float = 2.0
) -> BayesModel:
    """Independent coins ``p_i ~ Beta(a, b)``, ``k_i ~ Binomial(n_i, p_i)`` (Bernoulli trials),
    on the logit scale ``theta_i = logit p_i`` (the sigmoid's Jacobian included). The exact
    posterior is ``Beta(a + k_i, b + n_i - k_i)``; ``exact["mean_constrained"]`` is its mean."""
    k = np.asarray(successes, float)
    n = np.asarray(trials, float)
    if k.shape != n.shape or np.any(k > n) or np.any(k < 0):
        raise ValueError("successes and trials need the same shape and 0 <= k <= n")
    dim = k.size
    post_a, post_b = a + k, b + n - k
    kj, nj = jnp.asarray(k), jnp.asarray(n)

    def log_density(theta):
        _, log_jac = UNIT_INTERVAL.forward_and_log_det(theta)
        log_p, log_1mp = jax.nn.log_sigmoid(theta), jax.nn.log_sigmoid(-theta)
        prior = (a - 1) * log_p + (b - 1) * log_1mp - (gammaln(a) + gammaln(b) - gammaln(a + b))
        lik = kj * log_p + (nj - kj) * log_1mp  # Bernoulli sequence: no binomial coefficient
        return jnp.sum(prior + lik + log_jac)

    def betaln(x, y):
        return gammaln(x) + gammaln(y) - gammaln(x + y)

    log_evidence = float(np.sum(np.asarray(betaln(post_a, post_b) - betaln(a, b))))

    def sample_exact(key, n_draws):
        p = jax.random.beta(key, jnp.asarray(post_a), jnp.asarray(post_b), (n_draws, dim))
        return jnp.log(p) - jnp.log1p(-p)

    return BayesModel(
        f"beta_bernoulli_{dim}",
        dim,
        tuple(f"logit_p[{i}]" for i in range(dim)),
        log_density,
        lambda t: {"p": jax.nn.sigmoid(t)},
        exact={
            "mean_constrained": post_a / (post_a + post_b),
            "log_evidence": log_evidence,
        },
        sample_exact=sample_exact,
    )


MODELS = {
    "eight_schools_centered": lambda **kw: eight_schools(True, **kw),
    "eight_schools_noncentered": lambda **kw: eight_schools(False, **kw),
    "funnel": neal_funnel,
    "mrp": mrp_model,
}


def get_model(name: str, **kwargs) -> BayesModel:
    """A model by name (``eight_schools_centered``, ``eight_schools_noncentered``, ``funnel``,
    ``mrp``); ``kwargs`` go to its constructor."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)

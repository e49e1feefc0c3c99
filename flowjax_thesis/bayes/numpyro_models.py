"""The benchmark posteriors written once in NumPyro, and how to get each as a ``BayesModel``.

- :func:`eight_schools` (centered or not), :func:`funnel`, :func:`mrp` (the non-centered
  multilevel logistic regression of :func:`~flowjax_thesis.bayes.models.mrp_model`, on the same
  synthetic survey) and :func:`varying_intercepts`: a regression ``y_i ~ N(a_{g(i)} + b x_i,
  sigma_y)`` with centered varying intercepts ``a_g ~ N(mu_a, tau)`` over groups of very
  different sizes (:func:`make_varying_intercepts_data`: several groups with one observation,
  some with hundreds), so the posterior is a funnel for the small groups and tight for the large.

:func:`numpyro_posterior` gives each as a :class:`~flowjax_thesis.bayes.models.BayesModel` (via
:func:`~flowjax_thesis.bayes.from_numpyro`) with its reference: exact draws for the funnel, NUTS
on the non-centered twin (mapped back through the constrained sites) for centered eight schools
and the varying intercepts, plain NUTS for MRP. NumPyro is imported when a model runs, so this
module imports without it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flowjax_thesis.bayes.models import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    make_mrp_data,
    neal_funnel,
)
from flowjax_thesis.bayes.numpyro_bridge import from_numpyro, reparameterized_reference


def _np():
    import numpyro
    import numpyro.distributions as dist

    return numpyro, dist


def eight_schools(y=EIGHT_SCHOOLS_Y, sigma=EIGHT_SCHOOLS_SIGMA, centered: bool = True):
    """Eight schools (Rubin 1981): ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``, ``theta_j ~ N(mu,
    tau)`` (non-centered: ``theta_j = mu + tau eta_j``), ``y_j ~ N(theta_j, sigma_j)``."""
    numpyro, dist = _np()
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(y)):
        if centered:
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
        else:
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def funnel(dim: int = 10, v_scale: float = 3.0):
    """Neal's funnel: ``v ~ N(0, v_scale)``, ``x_i ~ N(0, exp(v / 2))`` for ``i < dim``."""
    import jax.numpy as jnp

    numpyro, dist = _np()
    v = numpyro.sample("v", dist.Normal(0.0, v_scale))
    with numpyro.plate("i", dim - 1):
        numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)))


def mrp(data: dict):
    """The MRP model of :func:`~flowjax_thesis.bayes.models.mrp_model` (non-centered), on the
    (yes, n) counts per census cell of ``data`` (:func:`~flowjax_thesis.bayes.make_mrp_data`)."""
    numpyro, dist = _np()
    cells = data["cells"]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.0))
    beta = numpyro.sample("beta_female", dist.Normal(0.0, 2.0))
    effects = []
    for group, size in (
        ("state", data["num_states"]),
        ("age", data["num_ages"]),
        ("edu", data["num_edus"]),
    ):
        sigma = numpyro.sample(f"sigma_{group}", dist.HalfNormal(1.0))
        with numpyro.plate(group, size):
            z = numpyro.sample(f"z_{group}", dist.Normal(0.0, 1.0))
        effects.append(numpyro.deterministic(f"a_{group}", sigma * z)[cells[group]])
    logit = alpha + beta * cells["female"] + sum(effects)
    with numpyro.plate("cell", len(data["survey_n"])):
        numpyro.sample(
            "yes",
            dist.Binomial(total_count=data["survey_n"], logits=logit),
            obs=data["survey_yes"],
        )


def make_varying_intercepts_data(
    seed: int = 0,
    group_sizes=(1, 1, 1, 1, 2, 2, 3, 5, 8, 13, 30, 60, 120, 250),
    mu_a: float = 1.0,
    tau: float = 0.7,
    b: float = 0.5,
    sigma_y: float = 1.0,
) -> dict:
    """Grouped regression data with very unequal group sizes (default: four groups with one
    observation, one with 250), drawn from known parameters (kept under ``"truth"``)."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(group_sizes, int)
    if sizes.ndim != 1 or sizes.size < 2 or np.any(sizes < 1):
        raise ValueError(f"group_sizes must be >= 2 positive integers, got {group_sizes!r}")
    a = rng.normal(mu_a, tau, sizes.size)
    group = np.repeat(np.arange(sizes.size), sizes)
    x = rng.normal(size=group.size)
    y = a[group] + b * x + sigma_y * rng.normal(size=group.size)
    return {
        "group": group,
        "x": x,
        "y": y,
        "num_groups": int(sizes.size),
        "group_sizes": sizes,
        "truth": {"mu_a": mu_a, "tau": tau, "b": b, "sigma_y": sigma_y, "a": a},
    }


def varying_intercepts(data: dict, centered: bool = True):
    """``mu_a ~ N(0, 5)``, ``tau ~ HalfNormal(2)``, ``a_g ~ N(mu_a, tau)`` (centered; the
    non-centered twin has ``a_g = mu_a + tau z_g``), ``b ~ N(0, 2)``, ``sigma_y ~ HalfNormal(2)``,
    ``y_i ~ N(a_{g(i)} + b x_i, sigma_y)``."""
    numpyro, dist = _np()
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    with numpyro.plate("group", data["num_groups"]):
        if centered:
            a = numpyro.sample("a", dist.Normal(mu_a, tau))
        else:
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            a = numpyro.deterministic("a", mu_a + tau * z)
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(2.0))
    with numpyro.plate("obs", len(data["y"])):
        numpyro.sample("y", dist.Normal(a[data["group"]] + b * data["x"], sigma_y), obs=data["y"])


#: the benchmark's models, by name
NUMPYRO_MODELS = ("eight_schools_centered", "funnel", "mrp", "varying_intercepts")


def numpyro_posterior(
    name: str,
    *,
    funnel_dim: int = 10,
    mrp_states: int = 20,
    mrp_respondents: int = 2000,
    seed: int = 0,
):
    """``(BayesModel, numpyro_model, args)``: the benchmark model ``name`` (one of
    :data:`NUMPYRO_MODELS`) with its reference (see the module docstring), the NumPyro model
    function and its positional arguments (for NumPyro's own SVI on the same model)."""
    if name == "eight_schools_centered":
        model, args = eight_schools, (EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA, True)
        other = from_numpyro(eight_schools, EIGHT_SCHOOLS_Y, EIGHT_SCHOOLS_SIGMA, False)
        bm = reparameterized_reference(from_numpyro(model, *args), other)
    elif name == "funnel":
        model, args = funnel, (funnel_dim,)
        exact = neal_funnel(funnel_dim)  # same coordinates (v, x[0..]) as the NumPyro model
        bm = dataclasses.replace(
            from_numpyro(model, *args), sample_exact=exact.sample_exact, exact=exact.exact
        )
    elif name == "mrp":
        data = make_mrp_data(seed=seed, num_states=mrp_states, num_respondents=mrp_respondents)
        model, args = mrp, (data,)
        bm = from_numpyro(model, *args)
    elif name == "varying_intercepts":
        data = make_varying_intercepts_data(seed=seed)
        model, args = varying_intercepts, (data, True)
        bm = reparameterized_reference(
            from_numpyro(model, *args), from_numpyro(varying_intercepts, data, False)
        )
    else:
        raise KeyError(f"unknown NumPyro model {name!r}; available: {', '.join(NUMPYRO_MODELS)}")
    return dataclasses.replace(bm, name=name), model, args

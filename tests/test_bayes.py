"""Tests of flowjax_thesis.bayes: exact posteriors, families, objectives, diagnostics, NUTS,
the bayes-vi experiment (notebook 07 runs in tests/test_e2e.py).

Core tests (models, families, objectives) need neither ArviZ nor NumPyro; the others skip
without them.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from flowjax_thesis.bayes import (
    assess,
    beta_bernoulli,
    conjugate_gaussian,
    draws_and_log_weights,
    eight_schools,
    fit_family,
    iw_elbo,
    make_family,
    make_mrp_data,
    mrp_model,
    neal_funnel,
    poststratify,
)
from flowjax_thesis.bayes.diagnostics import moment_errors, weighted_moments
from flowjax_thesis.bijectors.affine import ElementwiseAffine, TriangularAffine
from flowjax_thesis.flows import Flow
from flowjax_thesis.objectives import elbo

# -- affine layers ------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [ElementwiseAffine(), TriangularAffine()])
def test_affine_layers_round_trip_and_log_det(layer):
    dim = 4
    params = layer.init(jax.random.PRNGKey(0), (dim,))
    keys = jax.random.split(jax.random.PRNGKey(1), len(jax.tree.leaves(params)) + 1)
    leaves, tree = jax.tree.flatten(params)
    params = jax.tree.unflatten(
        tree, [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
    )
    bij = layer.bind(params)
    z = jax.random.normal(keys[-1], (5, dim))
    x, ld = bij.forward_and_log_det(z)
    z2, ild = bij.inverse_and_log_det(x)
    np.testing.assert_allclose(z2, z, atol=1e-5)
    np.testing.assert_allclose(ild, -ld, atol=1e-5)
    jac = jax.jacfwd(lambda v: bij.forward(v))(z[0])
    np.testing.assert_allclose(ld[0], jnp.linalg.slogdet(jac)[1], atol=1e-5)
    with pytest.raises(ValueError, match="rank"):
        layer.init(jax.random.PRNGKey(0), (2, 2))


def test_full_rank_flow_is_the_gaussian_n_shift_llt():
    layer = TriangularAffine()
    flow = Flow((layer,), (3,))
    params = {
        "shift": jnp.array([1.0, -2.0, 0.5]),
        "log_diag": jnp.array([0.1, -0.3, 0.2]),
        "lower": jnp.array([[0.0, 0, 0], [0.7, 0, 0], [-0.4, 0.3, 0]]),
    }
    tril = np.asarray(TriangularAffine.scale_tril(params))
    x = np.random.default_rng(0).normal(size=(6, 3))
    expected = stats.multivariate_normal(np.asarray(params["shift"]), tril @ tril.T).logpdf(x)
    np.testing.assert_allclose(flow.log_prob((params,), x), expected, rtol=1e-5, atol=1e-5)


# -- models -------------------------------------------------------------------------------------


@pytest.mark.parametrize("centered", [True, False])
def test_eight_schools_log_density_matches_scipy(centered):
    model = eight_schools(centered)
    theta = np.random.default_rng(1).normal(size=10)
    mu, tau, z = theta[0], np.exp(theta[1]), theta[2:]
    y, s = model.data["y"], model.data["sigma"]
    lp = stats.norm.logpdf(mu, 0, 5) + stats.halfcauchy.logpdf(tau, 0, 5) + theta[1]
    if centered:
        school = z
        lp += stats.norm.logpdf(z, mu, tau).sum()
    else:
        school = mu + tau * z
        lp += stats.norm.logpdf(z).sum()
    lp += stats.norm.logpdf(y, school, s).sum()
    np.testing.assert_allclose(model.log_density(jnp.asarray(theta)), lp, rtol=1e-5)


def test_centered_and_noncentered_are_the_same_posterior():
    """With theta = mu + tau eta: log p_nc(mu, log tau, eta) = log p_c(mu, log tau, theta) +
    8 log tau (the Jacobian of eta -> theta)."""
    c, nc = eight_schools(True), eight_schools(False)
    _, to_centered = c.reference
    draws = jax.random.normal(jax.random.PRNGKey(0), (7, 10))
    mapped = to_centered(draws)
    lhs = jax.vmap(nc.log_density)(draws)
    rhs = jax.vmap(c.log_density)(mapped) + 8 * draws[:, 1]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-4)


def test_funnel_density_and_exact_draws():
    model = neal_funnel(dim=4)
    theta = np.array([1.2, 0.3, -2.0, 4.0])
    expected = stats.norm.logpdf(1.2, 0, 3) + stats.norm.logpdf(theta[1:], 0, np.exp(0.6)).sum()
    np.testing.assert_allclose(model.log_density(jnp.asarray(theta)), expected, rtol=1e-5)
    draws = np.asarray(model.sample_exact(jax.random.PRNGKey(0), 40000))
    assert abs(draws[:, 0].std() - 3.0) < 0.05
    # log|x_i| = v / 2 + log|e|: its variance is 9/4 + pi^2 / 8 exactly
    np.testing.assert_allclose(np.log(np.abs(draws[:, 1])).var(), 2.25 + np.pi**2 / 8, rtol=0.03)


def test_conjugate_gaussian_closed_form_is_the_posterior():
    """log p~(w) - log N(w; m, S) equals log Z at every w: checks mean, cov and evidence."""
    model = conjugate_gaussian(dim=3)
    ex = model.exact
    w = np.random.default_rng(2).normal(size=(5, 3)) * 3
    diff = np.asarray(jax.vmap(model.log_density)(jnp.asarray(w))) - stats.multivariate_normal(
        ex["mean"], ex["cov"]
    ).logpdf(w)
    np.testing.assert_allclose(diff, ex["log_evidence"], atol=2e-3)


def test_beta_bernoulli_density_integrates_to_the_evidence():
    model = beta_bernoulli(successes=(3,), trials=(10,))
    grid = np.linspace(-20, 20, 40001)
    dens = np.exp(np.asarray(jax.vmap(model.log_density)(jnp.asarray(grid[:, None]))))
    np.testing.assert_allclose(
        np.log(np.trapezoid(dens, grid)), model.exact["log_evidence"], atol=1e-3
    )
    mean_p = np.trapezoid(dens / (1 + np.exp(-grid)), grid) / np.trapezoid(dens, grid)
    np.testing.assert_allclose(mean_p, model.exact["mean_constrained"][0], atol=1e-4)


def test_mrp_poststratification_of_the_truth_is_the_population_truth():
    data = make_mrp_data(seed=3, num_states=6, num_respondents=800)
    model = mrp_model(data)
    from flowjax_thesis.bayes.models import MRP_TRUTH as t

    eff = data["true_effects"]
    sig = np.array([t["sigma_state"], t["sigma_age"], t["sigma_edu"]])
    theta = np.concatenate(
        [
            [t["alpha"], t["beta_female"]],
            np.log(sig),
            eff["state"] / sig[0],
            eff["age"] / sig[1],
            eff["edu"] / sig[2],
        ]
    )
    assert theta.shape == (model.dim,)
    ps = poststratify(model, theta[None])
    np.testing.assert_allclose(ps["mean"], data["truth_state"], atol=1e-5)
    assert data["survey_n"].sum() == 800
    # non-response: older and more educated people are over-represented in the survey
    age = data["cells"]["age"]
    survey_age = np.sum(age * data["survey_n"]) / data["survey_n"].sum()
    census_age = np.sum(age * data["census_count"]) / data["census_count"].sum()
    assert survey_age > census_age
    value, grad = jax.value_and_grad(model.log_density)(jnp.asarray(theta))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="not an MRP model"):
        poststratify(neal_funnel(4), np.zeros((2, 4)))


# -- families on exact posteriors ---------------------------------------------------------------

FLOW_FAMILIES = ["mean_field", "full_rank", "planar", "realnvp", "iaf", "spline"]


@pytest.mark.parametrize("family", FLOW_FAMILIES)
def test_each_family_finds_the_conjugate_posterior_mean(family):
    model = conjugate_gaussian(dim=3)
    fitted = fit_family(
        model,
        family,
        key=jax.random.PRNGKey(0),
        steps=400,
        num_samples=32,
        lr=1e-2,
        family_kwargs=dict(layers=2, hidden=(16,)),
    )
    x, lw = draws_and_log_weights(
        fitted.flow, fitted.params, model.log_density, jax.random.PRNGKey(1), 4000
    )
    mean, _ = weighted_moments(x)
    err = np.abs(mean - model.exact["mean"]) / model.exact["sd"]
    assert err.max() < 0.15, (family, err)
    assert np.mean(lw) <= model.exact["log_evidence"] + 0.02  # the ELBO is a lower bound


def test_full_rank_recovers_a_gaussian_posterior_exactly_and_mean_field_underdisperses():
    model = conjugate_gaussian(dim=3)
    ex = model.exact
    kw = dict(key=jax.random.PRNGKey(0), steps=1500, num_samples=32, lr=2e-2)
    full = fit_family(model, "full_rank", objective="elbo_stl", **kw)
    p = full.params[0]
    tril = np.asarray(TriangularAffine.scale_tril(p))
    np.testing.assert_allclose(p["shift"], ex["mean"], atol=0.02 * ex["sd"].min())
    np.testing.assert_allclose(tril @ tril.T, ex["cov"], rtol=0.05, atol=0.02 * ex["cov"].max())
    # the mean-field optimum of a Gaussian has variances 1 / diag(precision) (too small)
    mf = fit_family(model, "mean_field", objective="elbo_stl", **kw)
    mf_sd = np.exp(np.asarray(mf.params[0]["log_scale"]))
    np.testing.assert_allclose(mf_sd, 1 / np.sqrt(np.diag(np.linalg.inv(ex["cov"]))), rtol=0.05)
    assert np.all(mf_sd < 0.9 * ex["sd"])


@pytest.mark.parametrize("family", ["mean_field", "realnvp"])
def test_beta_bernoulli_posterior_mean(family):
    model = beta_bernoulli()
    fitted = fit_family(
        model,
        family,
        key=jax.random.PRNGKey(0),
        steps=500,
        num_samples=32,
        lr=1e-2,
        family_kwargs=dict(layers=2, hidden=(16,)),
    )
    x, _ = draws_and_log_weights(
        fitted.flow, fitted.params, model.log_density, jax.random.PRNGKey(1), 4000
    )
    np.testing.assert_allclose(
        (1 / (1 + np.exp(-x))).mean(0), model.exact["mean_constrained"], atol=0.02
    )


@pytest.mark.slow
def test_gbnf_family_finds_the_conjugate_posterior_mean():
    model = conjugate_gaussian(dim=3)
    fitted = fit_family(
        model,
        "gbnf",
        key=jax.random.PRNGKey(0),
        steps=400,
        num_samples=32,
        lr=1e-2,
        family_kwargs=dict(layers=2, hidden=(16,)),
    )
    x, lw = draws_and_log_weights(
        fitted.flow, fitted.params, model.log_density, jax.random.PRNGKey(1), 4000
    )
    err = np.abs(x.mean(0) - model.exact["mean"]) / model.exact["sd"]
    assert err.max() < 0.2, err
    assert np.mean(lw) <= model.exact["log_evidence"] + 0.02


def test_unknown_family_and_gbnf_message():
    with pytest.raises(KeyError, match="unknown family"):
        make_family("nope", 3)
    with pytest.raises(NotImplementedError, match="fit_family"):
        make_family("gbnf", 3)


# -- objectives ---------------------------------------------------------------------------------


def _exact_full_rank(model):
    flow = make_family("full_rank", model.dim)
    chol = np.linalg.cholesky(model.exact["cov"])
    params = (
        {
            "shift": jnp.asarray(model.exact["mean"], jnp.float32),
            "log_diag": jnp.log(jnp.asarray(np.diag(chol), jnp.float32)),
            "lower": jnp.asarray(np.tril(chol, -1), jnp.float32),
        },
    )
    return flow, params


def test_iwelbo_and_elbo_equal_log_evidence_at_the_exact_posterior():
    model = conjugate_gaussian(dim=3)
    flow, params = _exact_full_rank(model)
    key = jax.random.PRNGKey(0)
    log_z = model.exact["log_evidence"]
    np.testing.assert_allclose(
        iw_elbo(flow, params, key, model.log_density, 16, 4), log_z, atol=2e-3
    )
    np.testing.assert_allclose(elbo(flow, params, key, model.log_density, 64), log_z, atol=2e-3)


def test_iwelbo_is_tighter_than_elbo_for_an_approximate_q():
    model = conjugate_gaussian(dim=3)
    flow = make_family("mean_field", 3)
    params = flow.init(jax.random.PRNGKey(0))
    params = ({"shift": jnp.asarray(model.exact["mean"]), "log_scale": jnp.full(3, -1.5)},)
    key = jax.random.PRNGKey(1)
    e = float(elbo(flow, params, key, model.log_density, 4096))
    iw = float(iw_elbo(flow, params, key, model.log_density, 32, 128))
    assert e + 0.1 < iw <= model.exact["log_evidence"] + 0.01


def test_iwelbo_training_spreads_mean_field_wider_than_elbo():
    """IWELBO fits are mass-covering: a mean-field q trained on it is wider than the ELBO fit."""
    model = conjugate_gaussian(dim=3)
    kw = dict(key=jax.random.PRNGKey(0), steps=800, num_samples=64, lr=2e-2)
    sd_elbo = np.exp(fit_family(model, "mean_field", **kw).params[0]["log_scale"])
    sd_iw = np.exp(
        fit_family(model, "mean_field", objective="iwelbo", num_importance=16, **kw).params[0][
            "log_scale"
        ]
    )
    assert np.all(sd_iw > sd_elbo)


# -- diagnostics (ArviZ) ------------------------------------------------------------------------


def test_moment_errors_and_weighted_moments():
    errs = moment_errors([1.0, 0.0], [1.0, 2.0], [0.0, 0.0], [2.0, 2.0])
    assert errs == {"mean_err": 0.25, "sd_err": 0.25, "sd_ratio": 0.75}
    x = np.array([[0.0], [2.0]])
    m, s = weighted_moments(x, np.log([3.0, 1.0]))
    np.testing.assert_allclose([m[0], s[0]], [0.5, np.sqrt(0.75)])


def test_psis_khat_separates_wide_and_narrow_proposals():
    pytest.importorskip("arviz")
    from flowjax_thesis.bayes.diagnostics import psis

    rng = np.random.default_rng(0)
    d, n = 5, 4000

    def log_w(scale, shift=0.0):
        x = rng.normal(size=(n, d)) * scale
        log_p = stats.norm.logpdf(x, shift, 1).sum(1)
        return x, log_p - stats.norm.logpdf(x, 0, scale).sum(1)

    _, lw_wide = log_w(1.3)
    _, lw_narrow = log_w(0.6)
    assert psis(lw_wide)[1] < 0.5
    assert psis(np.full(100, -3.0) + 1e-6 * rng.normal(size=100))[1] == 0.0  # q = p exactly
    assert psis(lw_narrow)[1] > 0.7
    # importance correction of a shifted, wide proposal recovers the target mean
    x, lw = log_w(1.5, shift=0.5)
    smoothed, k = psis(lw)
    mean, sd = weighted_moments(x, smoothed)
    assert k < 0.7
    np.testing.assert_allclose(mean, 0.5, atol=0.1)
    np.testing.assert_allclose(sd, 1.0, atol=0.1)


def test_assess_reports_khat_and_reference_errors():
    pytest.importorskip("arviz")
    from flowjax_thesis.bayes.nuts import reference_posterior

    model = conjugate_gaussian(dim=3)
    flow, params = _exact_full_rank(model)
    from flowjax_thesis.bayes.vi import Fitted

    ref = reference_posterior(model, jax.random.PRNGKey(5), num_samples=2000, num_chains=2)
    assert ref.method == "exact"
    a = assess(Fitted("full_rank", flow, params, 0.0, []), model, jax.random.PRNGKey(2), 4000, ref)
    assert a["khat"] < 0.5
    # Vehtari et al. (2024): min(1 - 1/log10(4000), 0.7) = 0.7 at 4,000 draws; 0.5 at 100
    assert a["khat_threshold"] == pytest.approx(0.7) and a["reliable"]
    from flowjax_thesis.bayes.diagnostics import khat_threshold

    assert khat_threshold(100) == pytest.approx(0.5)
    assert a["mean_err"] < 0.1 and a["sd_err"] < 0.1
    np.testing.assert_allclose(a["elbo"], model.exact["log_evidence"], atol=5e-3)


# -- NUTS (NumPyro) -----------------------------------------------------------------------------


def test_nuts_reference_matches_the_conjugate_posterior():
    pytest.importorskip("numpyro")
    from flowjax_thesis.bayes.nuts import nuts

    model = conjugate_gaussian(dim=3)
    ref = nuts(model, jax.random.PRNGKey(0), num_warmup=300, num_samples=600, num_chains=2)
    assert ref.draws.shape == (1200, 3)
    assert ref.diagnostics["divergences"] == 0 and ref.diagnostics["max_rhat"] < 1.05
    err = moment_errors(ref.mean, ref.sd, model.exact["mean"], model.exact["sd"])
    assert err["mean_err"] < 0.15 and err["sd_err"] < 0.15


# -- the experiment (notebook 07 runs once, in tests/test_e2e.py) ----------------------------------


@pytest.mark.e2e
def test_bayes_vi_smoke_through_the_cli(tmp_path):
    pytest.importorskip("numpyro")
    pytest.importorskip("arviz")
    from flowjax_thesis.cli import main

    out = tmp_path / "run"
    sets = [
        'models=["funnel","mrp"]',
        'families=["mean_field","realnvp"]',
        "extra_variants=[]",
        "steps=60",
        "layers=2",
        "hidden=[8]",
        "eval_samples=500",
        "nuts_warmup=60",
        "nuts_samples=60",
        "mrp_states=4",
        "mrp_respondents=300",
    ]
    args = ["run", "bayes-vi", "--profile", "smoke", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["comparison"]
    assert {r["model"] for r in rows} == {"funnel", "mrp"}
    assert len(rows) == 2 * 3  # a reference row and two fits per model
    keys = set(rows[0])
    assert all(set(r) == keys for r in rows)
    fits = [r for r in rows if not r["family"].startswith("reference")]
    assert all(np.isfinite(r["ELBO"]) and np.isfinite(r["k-hat"]) for r in fits)
    mrp_fits = [r for r in fits if r["model"] == "mrp"]
    assert all(r["time / ref"] > 0 and r["poststrat err (pp)"] >= 0 for r in mrp_fits)
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"marginals_funnel.png", "marginals_mrp.png", "poststrat_mrp.png"} <= figures
    assert {"arviz_forest_funnel.png", "arviz_forest_mrp.png"} <= figures


# -- slow: the goals on the real targets ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["funnel", "eight_schools_centered"])
def test_flows_beat_mean_field_on_funnel_and_centered_eight_schools(name):
    pytest.importorskip("arviz")
    pytest.importorskip("numpyro")
    from flowjax_thesis.bayes import get_model
    from flowjax_thesis.bayes.nuts import reference_posterior

    model = get_model(name)
    ref = reference_posterior(
        model, jax.random.PRNGKey(0), num_warmup=500, num_samples=1000, num_chains=2
    )
    results = {}
    for family in ["mean_field", "realnvp"]:
        fitted = fit_family(model, family, key=jax.random.PRNGKey(1), steps=3000, num_samples=64)
        results[family] = assess(fitted, model, jax.random.PRNGKey(2), 10000, ref)
    mf, flow = results["mean_field"], results["realnvp"]
    assert flow["khat"] < mf["khat"]
    assert flow["sd_err"] < mf["sd_err"]
    assert flow["elbo"] > mf["elbo"]

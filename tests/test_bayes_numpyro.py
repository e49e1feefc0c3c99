"""Tests of flowjax_thesis.bayes.from_numpyro, to_inference_data, the NumPyro autoguide bridge,
the benchmark models and a user's model file through the bayes-vi CLI.

References are independent of the code under test: closed-form posteriors and evidences
(conjugate normal, beta-bernoulli; scipy), the hand-written eight-schools log-density, and
ArviZ/NumPyro themselves.
"""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

numpyro = pytest.importorskip("numpyro")
pytest.importorskip("arviz")
import numpyro.distributions as dist  # noqa: E402

from flowjax_thesis.bayes import (  # noqa: E402
    beta_bernoulli,
    conjugate_gaussian,
    eight_schools,
    from_numpyro,
    to_inference_data,
)
from flowjax_thesis.bayes.families import make_family  # noqa: E402
from flowjax_thesis.bayes.vi import Fitted  # noqa: E402


def _points(dim, n=6, seed=1, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), (n, dim))


# -- NumPyro versions of the exactly solvable models --------------------------------------------


def conjugate_normal(X, y, noise_sd=1.0, prior_sd=2.0):
    with numpyro.plate("coef", X.shape[1]):
        w = numpyro.sample("w", dist.Normal(0.0, prior_sd))
    with numpyro.plate("obs", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, noise_sd), obs=y)


def coins(flips_per_coin, a=2.0, b=2.0):
    """Independent coins with Beta(a, b) priors and Bernoulli flips (a list per coin)."""
    with numpyro.plate("coin", len(flips_per_coin)):
        p = numpyro.sample("p", dist.Beta(a, b))
    for i, flips in enumerate(flips_per_coin):
        with numpyro.plate(f"flip_{i}", len(flips)):
            numpyro.sample(f"k_{i}", dist.Bernoulli(probs=p[i]), obs=flips)


def centered_eight_schools(y, sigma):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(y)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def _coin_flips(successes=(3, 14), trials=(10, 20)):
    return [np.array([1.0] * k + [0.0] * (n - k)) for k, n in zip(successes, trials)]


def test_conjugate_normal_log_density_minus_exact_posterior_is_the_log_evidence():
    ref = conjugate_gaussian(dim=3)
    model = from_numpyro(conjugate_normal, ref.data["X"], ref.data["y"])
    assert model.dim == 3 and model.names == ("w[0]", "w[1]", "w[2]")
    w = np.asarray(_points(3)) + ref.exact["mean"]
    log_post = stats.multivariate_normal(ref.exact["mean"], ref.exact["cov"]).logpdf(w)
    diff = np.asarray(jax.vmap(model.log_density)(jnp.asarray(w))) - log_post
    # log p(y, w) - log p(w | y) = log p(y) at every w
    np.testing.assert_allclose(diff, ref.exact["log_evidence"], atol=2e-3)
    assert set(model.data["observed"]) == {"y"}


def test_beta_bernoulli_log_density_is_the_exact_logit_posterior_times_evidence():
    ref = beta_bernoulli()  # Beta(2 + k, 2 + n - k) posteriors, Bernoulli-sequence evidence
    model = from_numpyro(coins, _coin_flips())
    assert model.names == ("logit_p[0]", "logit_p[1]")
    t = np.asarray(_points(2))
    p = 1 / (1 + np.exp(-t))
    post_a, post_b = 2.0 + np.array([3, 14]), 2.0 + np.array([7, 6])
    # density of logit p: Beta pdf of p times dp/dt = p (1 - p)
    log_post = np.sum(stats.beta(post_a, post_b).logpdf(p) + np.log(p * (1 - p)), axis=1)
    diff = np.asarray(jax.vmap(model.log_density)(jnp.asarray(t))) - log_post
    np.testing.assert_allclose(diff, ref.exact["log_evidence"], atol=2e-3)
    np.testing.assert_allclose(model.constrain(jnp.asarray(t[0]))["p"], p[0], rtol=1e-5)


def test_eight_schools_equals_the_hand_written_model_up_to_a_constant():
    hand = eight_schools(centered=True)
    model = from_numpyro(centered_eight_schools, hand.data["y"], hand.data["sigma"])
    assert model.names == hand.names  # mu, log_tau, theta[0..7]
    x = _points(10, n=8, scale=2.0)
    diff = np.asarray(jax.vmap(model.log_density)(x) - jax.vmap(hand.log_density)(x))
    assert np.ptp(diff) < 1e-3
    c_np, c_hand = model.constrain(x[0]), hand.constrain(x[0])
    for k in ("mu", "tau", "theta"):
        np.testing.assert_allclose(c_np[k], c_hand[k], rtol=1e-5)


def test_flattening_order_names_and_unconstrain_round_trip():
    def model():
        numpyro.sample("scale", dist.HalfNormal(1.0))  # positive -> log_
        numpyro.sample("m", dist.Normal(jnp.zeros((2, 3)), 1.0).to_event(2))  # matrix, C order
        numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))  # simplex: 2 unconstrained coords
        numpyro.deterministic("total", 2.0)

    bm = from_numpyro(model)
    assert bm.dim == 1 + 6 + 2
    assert bm.names[:3] == ("log_scale", "m[0,0]", "m[0,1]")
    assert bm.names[6] == "m[1,2]" and bm.names[7:] == ("u_w[0]", "u_w[1]")
    sites = bm.data["sites"]
    assert list(sites) == ["scale", "m", "w"]
    assert sites["w"]["shape"] == (3,) and sites["w"]["unconstrained_shape"] == (2,)
    theta = _points(bm.dim, n=1)[0]
    values = bm.constrain(theta)
    assert set(values) == {"scale", "m", "w", "total"}
    np.testing.assert_allclose(values["scale"], np.exp(theta[0]), rtol=1e-5)
    np.testing.assert_allclose(values["m"], np.reshape(theta[1:7], (2, 3)), rtol=1e-6)
    np.testing.assert_allclose(np.sum(values["w"]), 1.0, rtol=1e-5)
    np.testing.assert_allclose(bm.unconstrain(values), theta, atol=1e-5)
    # NumPyro's init_to_median point, in theta coordinates: log of the HalfNormal(1) median
    assert bm.data["init"].shape == (bm.dim,)
    assert abs(bm.data["init"][0] - np.log(stats.halfnorm.median())) < 0.6
    # the positive site's Jacobian is in the density: log HalfNormal(e^t) + t
    other = bm.log_density(theta.at[0].set(0.3)) - bm.log_density(theta.at[0].set(-0.2))
    expected = stats.halfnorm.logpdf(np.exp(0.3)) + 0.3 - stats.halfnorm.logpdf(np.exp(-0.2)) + 0.2
    np.testing.assert_allclose(other, expected, rtol=1e-4)


def test_bad_models_give_clear_errors():
    def discrete():
        numpyro.sample("k", dist.Poisson(3.0))

    def nothing_latent():
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=1.0)

    with pytest.raises(ValueError, match="discrete latent sites \\['k'\\]"):
        from_numpyro(discrete)
    with pytest.raises(ValueError, match="no latent sample sites"):
        from_numpyro(nothing_latent)
    with pytest.raises(TypeError, match="NumPyro model function"):
        from_numpyro("not a model")
    bm = from_numpyro(centered_eight_schools, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        bm.log_density(jnp.zeros(4))
    with pytest.raises(ValueError, match="missing \\['theta'\\]"):
        bm.unconstrain({"mu": 0.0, "tau": 1.0})


# -- the benchmark models and the reparameterised reference -------------------------------------


def test_benchmark_models_and_the_mapped_reference():
    from flowjax_thesis.bayes.numpyro_models import NUMPYRO_MODELS, numpyro_posterior

    for name in NUMPYRO_MODELS:
        bm, fn, args = numpyro_posterior(name, mrp_states=4, funnel_dim=4)
        assert bm.name == name and np.isfinite(bm.log_density(jnp.zeros(bm.dim)))
    # centered eight schools: NUTS runs on the non-centered twin, draws map via the sites
    bm, _, _ = numpyro_posterior("eight_schools_centered")
    other, to_model = bm.reference
    assert other.names[2] == "eta[0]"
    eta_draws = _points(10, n=4)
    mapped = np.asarray(to_model(eta_draws))
    mu, log_tau, eta = eta_draws[:, 0], eta_draws[:, 1], eta_draws[:, 2:]
    np.testing.assert_allclose(mapped[:, :2], eta_draws[:, :2], atol=1e-5)
    theta = mu[:, None] + np.exp(log_tau)[:, None] * eta
    np.testing.assert_allclose(mapped[:, 2:], theta, rtol=1e-5, atol=1e-5)
    # funnel: the exact draws live in the same coordinates as the NumPyro model
    bm, _, _ = numpyro_posterior("funnel", funnel_dim=4)
    assert bm.names == ("v", "x[0]", "x[1]", "x[2]") and bm.sample_exact is not None


# -- ArviZ output -------------------------------------------------------------------------------


def _gaussian_fitted(mean, cov, shift_sd=0.0, widen=1.0):
    """A full-rank q = N(mean + shift_sd * sd, widen^2 cov) as a Fitted."""
    flow = make_family("full_rank", len(mean))
    chol = np.linalg.cholesky(widen**2 * np.asarray(cov))
    params = (
        {
            "shift": jnp.asarray(mean + shift_sd * np.sqrt(np.diag(cov)), jnp.float32),
            "log_diag": jnp.asarray(np.log(np.diag(chol)), jnp.float32),
            "lower": jnp.asarray(np.tril(chol, -1), jnp.float32),
        },
    )
    return Fitted("full_rank", flow, params, 0.0, [])


def test_to_inference_data_groups_and_psis_correction():
    import arviz as az

    ref = conjugate_gaussian(dim=3)
    model = from_numpyro(conjugate_normal, ref.data["X"], ref.data["y"])
    mean, cov = ref.exact["mean"], ref.exact["cov"]
    sd = np.sqrt(np.diag(cov))
    exact_q = _gaussian_fitted(mean, cov)
    idata = to_inference_data(exact_q, model, 2000, key=jax.random.PRNGKey(3))
    assert set(idata.groups()) >= {"posterior", "sample_stats", "observed_data"}
    assert idata.posterior["w"].shape == (1, 2000, 3)
    assert idata.attrs["khat"] < 0.3 and idata.attrs["family"] == "full_rank"
    lw = idata.sample_stats["log_weight"].values.ravel()
    np.testing.assert_allclose(lw, ref.exact["log_evidence"], atol=1e-2)  # q = p exactly
    summary = az.summary(idata, var_names=["w"], kind="stats")
    np.testing.assert_allclose(summary["mean"].values, mean, atol=0.1 * sd.max())
    # a shifted, widened q: the raw draws are off by ~0.5 sd, the PSIS resample is not
    off_q = _gaussian_fitted(mean, cov, shift_sd=0.5, widen=1.5)
    raw = to_inference_data(off_q, model, 8000, key=jax.random.PRNGKey(4))
    fixed = to_inference_data(off_q, model, 8000, psis=True, key=jax.random.PRNGKey(4))
    raw_err = np.abs(raw.posterior["w"].values.reshape(-1, 3).mean(0) - mean) / sd
    psis_err = np.abs(fixed.posterior["w"].values.reshape(-1, 3).mean(0) - mean) / sd
    assert raw_err.min() > 0.35 and psis_err.max() < 0.15
    psis_sd = fixed.posterior["w"].values.reshape(-1, 3).std(0)
    np.testing.assert_allclose(psis_sd / sd, 1.0, atol=0.15)
    assert fixed.attrs["psis_resampled"] == 1 and "sample_stats" not in fixed.groups()
    with pytest.raises(ValueError, match="num_samples"):
        to_inference_data(exact_q, model, 5)


# -- NumPyro's autoguides assessed in our coordinates --------------------------------------------


def test_autoguide_log_weights_use_the_right_coordinates():
    """Site names whose sorted order differs from the trace order (NumPyro's guides ravel
    latents their own way): an MVN guide set to the exact Gaussian posterior must give
    log-weights equal to the closed-form log evidence, which only holds if the guide's draws
    are reordered into our coordinates correctly."""
    from numpyro import handlers
    from numpyro.infer.autoguide import AutoMultivariateNormal

    from flowjax_thesis.bayes.autoguides import (
        GuideFit,
        autoguide_draws_and_log_weights,
        fit_autoguide,
    )

    ref = conjugate_gaussian(dim=3)
    X, y = ref.data["X"], ref.data["y"]

    def split_coefficients(X, y):
        zeta = numpyro.sample("zeta", dist.Normal(0.0, 2.0))  # w[0]
        with numpyro.plate("rest", 2):
            alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.0))  # w[1], w[2]
        w = jnp.concatenate([zeta[None], alpha])
        with numpyro.plate("obs", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)

    bm = from_numpyro(split_coefficients, X, y)
    assert bm.names == ("zeta", "alpha[0]", "alpha[1]")
    guide = AutoMultivariateNormal(split_coefficients)
    handlers.seed(guide, 0)(X, y)  # builds the guide's prototype (its latent order)
    where = guide._unpack_latent(jnp.arange(3.0))  # site -> positions in the guide's vector
    perm = np.concatenate([np.ravel(where[n]) for n in ("zeta", "alpha")]).astype(int)
    loc, cov = np.empty(3), np.empty((3, 3))
    loc[perm] = ref.exact["mean"]
    cov[np.ix_(perm, perm)] = ref.exact["cov"]
    params = {"auto_loc": jnp.asarray(loc), "auto_scale_tril": jnp.linalg.cholesky(cov)}
    fit = GuideFit("AutoMultivariateNormal", guide, params, 0.0, np.zeros(0))
    x, lw = autoguide_draws_and_log_weights(fit, bm, jax.random.PRNGKey(1), 4000)
    np.testing.assert_allclose(x.mean(0), ref.exact["mean"], atol=0.1)
    np.testing.assert_allclose(lw, ref.exact["log_evidence"], atol=2e-2)
    # and SVI runs through fit_autoguide (a few steps: only the plumbing is checked here)
    g = fit_autoguide(bm, "AutoDiagonalNormal", key=jax.random.PRNGKey(0), steps=20)
    assert g.losses.shape == (20,) and np.all(np.isfinite(g.losses))
    with pytest.raises(KeyError, match="AutoBNAFNormal"):
        fit_autoguide(bm, "AutoNope", key=jax.random.PRNGKey(0), steps=1)
    # NumPyro's autoregressive nets need hidden widths >= dim: IAF's default widens to dim
    from flowjax_thesis.bayes.autoguides import _guide_kwargs

    assert _guide_kwargs("AutoIAFNormal", 34, None)["hidden_dims"] == [34, 34]
    assert _guide_kwargs("AutoIAFNormal", 10, None)["hidden_dims"] == [32, 32]
    assert _guide_kwargs("AutoIAFNormal", 34, {"hidden_dims": [40]})["hidden_dims"] == [40]


# -- a user's model file through the CLI ----------------------------------------------------------

USER_MODEL = """
import numpy as np
import numpyro
import numpyro.distributions as dist

rng = np.random.default_rng(0)
heights = 170 + 8 * rng.normal(size=40)

def height_model():
    mu = numpyro.sample("mu", dist.Normal(170.0, 20.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(20.0))
    with numpyro.plate("person", len(heights)):
        numpyro.sample("h", dist.Normal(mu, sigma), obs=heights)
"""


def test_user_model_spec_errors(tmp_path):
    from flowjax_thesis.experiments.bayes_vi import load_user_model

    path = tmp_path / "m.py"
    path.write_text(textwrap.dedent(USER_MODEL))
    assert load_user_model(f"{path}:height_model").names == ("mu", "log_sigma")
    with pytest.raises(ValueError, match="path/to/file.py:function"):
        load_user_model("nonsense")
    with pytest.raises(ValueError, match="no such file"):
        load_user_model(f"{tmp_path}/missing.py:f")
    with pytest.raises(ValueError, match="no function 'nope'"):
        load_user_model(f"{path}:nope")


@pytest.mark.e2e
def test_user_numpyro_model_through_the_cli(tmp_path):
    from flowjax_thesis.cli import main

    path = tmp_path / "my_model.py"
    path.write_text(textwrap.dedent(USER_MODEL))
    out = tmp_path / "run"
    sets = [
        f"model={path}:height_model",
        'families=["mean_field","realnvp"]',
        "steps=150",
        "layers=2",
        "hidden=[8]",
        "eval_samples=500",
        "nuts_warmup=100",
        "nuts_samples=200",
    ]
    args = ["run", "bayes-vi", "--profile", "smoke", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["comparison"]
    assert [r["family"] for r in rows][1:] == ["mean_field", "realnvp"]
    assert {r["model"] for r in rows} == {"height_model"}
    fits = rows[1:]
    assert all(np.isfinite(r["k-hat"]) and r["sd ratio"] > 0.5 for r in fits)
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"marginals_height_model.png", "arviz_forest_height_model.png"} <= figures

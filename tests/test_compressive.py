"""Compressive flows (chapter 5): PPCA closed forms against independent references, the linear
VAE reaching the PPCA optimum, VAE steps as bounds, mixed flows, image models, bad input, and
(slow) the graceful-degradation check. (The notebook runs in tests/test_e2e.py.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import multivariate_normal
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from flowjax_thesis.bijectors import ActNorm, Conv1x1
from flowjax_thesis.data.images import load_images, uniform_dequantize
from flowjax_thesis.flows import Flow
from flowjax_thesis.models.compressive import (
    CompressiveFlow,
    ConvVAEStep,
    LinearVAEStep,
    PPCAStep,
    VAEStep,
    alpha_schedule,
    dual_base_log_prob,
    ppca,
)
from flowjax_thesis.models.compressive.images import (
    ImageModel,
    build_flow,
    gradient_training,
    intermixed_channels,
    ppca_flow_transition,
)
from flowjax_thesis.train import fit


@pytest.fixture(scope="module")
def digits():
    return jnp.asarray(load_digits().data.astype(np.float32))


def random_ppca(key, D, d, sigma2=0.3):
    k1, k2 = jax.random.split(key)
    return {
        "A": jax.random.normal(k1, (D, d)),
        "mu": jax.random.normal(k2, (D,)),
        "log_sigma2": jnp.log(jnp.asarray(sigma2)),
    }


# ------------------------------------------------------------------------------------------
# PPCA
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 8, 30])
def test_closed_form_fit_equals_sklearn_probabilistic_pca_score(digits, d):
    sk = PCA(n_components=d).fit(np.asarray(digits)).score(np.asarray(digits))
    ours = float(jnp.mean(ppca.log_prob(ppca.fit_ppca(digits, d, ddof=1), digits)))
    assert abs(ours - sk) / abs(sk) < 1e-4
    # ddof=0 is the maximum-likelihood solution: at least as good on the same data
    mle = float(jnp.mean(ppca.log_prob(ppca.fit_ppca(digits, d), digits)))
    assert mle >= ours - 1e-4 * abs(ours)


def test_log_prob_and_posterior_match_dense_gaussian_formulas():
    D, d = 7, 3
    params = random_ppca(jax.random.PRNGKey(0), D, d)
    x = jax.random.normal(jax.random.PRNGKey(1), (11, D)) * 2
    A, mu, s2 = (np.asarray(params[k], np.float64) for k in ("A", "mu", "log_sigma2"))
    s2 = np.exp(s2)
    C = A @ A.T + s2 * np.eye(D)
    dense = multivariate_normal(mu, C).logpdf(np.asarray(x, np.float64))
    np.testing.assert_allclose(ppca.log_prob(params, x), dense, rtol=1e-5, atol=1e-4)
    # Bayes' rule with dense matrices: cov = (I + A^T A / s2)^-1, mean = cov A^T (x - mu) / s2
    cov = np.linalg.inv(np.eye(d) + A.T @ A / s2)
    mean = (np.asarray(x) - mu) @ A @ cov / s2
    m, c = ppca.posterior(params, x)
    np.testing.assert_allclose(m, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c, cov, rtol=1e-4, atol=1e-6)


def _shapes_in_jaxpr(jaxpr):
    for eqn in jaxpr.eqns:
        for v in list(eqn.invars) + list(eqn.outvars):
            if hasattr(v, "aval") and hasattr(v.aval, "shape"):
                yield tuple(v.aval.shape)
        for sub in jax.core.jaxprs_in_params(eqn.params):
            yield from _shapes_in_jaxpr(sub)


def test_no_D_by_D_matrix_is_formed():
    D, d, n = 50, 3, 7
    params = random_ppca(jax.random.PRNGKey(0), D, d)
    x = jnp.ones((n, D))
    for fn in (ppca.log_prob, lambda p, x: ppca.posterior(p, x)[0]):
        jaxpr = jax.make_jaxpr(fn)(params, x).jaxpr
        shapes = set(_shapes_in_jaxpr(jaxpr))
        assert (D, D) not in shapes, "a D x D array appears in the computation"
        assert (d, d) in shapes  # the d x d matrix M is what is factorised


def test_gradient_ascent_from_random_start_reaches_closed_form(digits):
    d = 4
    mle = float(jnp.mean(ppca.log_prob(ppca.fit_ppca(digits, d), digits)))
    p = random_ppca(jax.random.PRNGKey(1), 64, d, 1.0) | {"mu": jnp.zeros(64)}
    loss = lambda p: -jnp.mean(ppca.log_prob(p, digits))
    opt = optax.lbfgs()
    vg = optax.value_and_grad_from_state(loss)

    def body(carry, _):
        p, st = carry
        value, g = vg(p, state=st)
        u, st = opt.update(g, st, p, value=value, grad=g, value_fn=loss)
        return (optax.apply_updates(p, u), st), value

    (p, _), _ = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), None, length=200))(p)
    reached = float(-loss(p))
    assert abs(reached - mle) / abs(mle) < 1e-4


@pytest.mark.integration  # trains a model to a quality threshold
@pytest.mark.parametrize("mode", ["em", "moments"])
def test_minibatch_closed_form_updates_converge_to_the_mle(digits, mode):
    d = 4
    mle = float(jnp.mean(ppca.log_prob(ppca.fit_ppca(digits, d), digits)))
    tr = ppca.em_transition(d, mode=mode, kappa=0.6)
    start = random_ppca(jax.random.PRNGKey(2), 64, d, 1.0)
    res = fit(
        tr,
        tr.init(start),
        digits,
        key=jax.random.PRNGKey(3),
        steps=1500,
        batch_size=256,
        chunk_size=500,
        progress=False,
    )
    reached = float(jnp.mean(ppca.log_prob(res.state.params, digits)))
    assert abs(reached - mle) / abs(mle) < 1e-3, (reached, mle)
    first = float(jnp.mean(ppca.log_prob(start, digits)))
    assert reached > first


def test_exact_term_matches_monte_carlo_marginal_on_ppca_data():
    D, d = 5, 2
    params = random_ppca(jax.random.PRNGKey(4), D, d, 0.5)
    x = ppca.sample(params, jax.random.PRNGKey(5), 4)
    z = jax.random.normal(jax.random.PRNGKey(6), (400_000, d))
    mean = z @ params["A"].T + params["mu"]
    sigma2 = jnp.exp(params["log_sigma2"])

    def mc(xi):
        log_lik = -0.5 * jnp.sum((xi - mean) ** 2, -1) / sigma2 - 0.5 * D * jnp.log(
            2 * jnp.pi * sigma2
        )
        return jax.nn.logsumexp(log_lik) - jnp.log(z.shape[0])

    estimate = jax.vmap(mc)(x)
    step = PPCAStep(d)
    p = step.init(jax.random.PRNGKey(0), (D,)) | params
    np.testing.assert_allclose(step.log_marginal(p, x), estimate, atol=0.02)
    # encoding with the analytic posterior: log N(z) + V equals log p(z') for every draw
    for k in range(3):
        zs, v = step.encode(p, x, jax.random.PRNGKey(10 + k))
        np.testing.assert_allclose(
            v - 0.5 * jnp.sum(zs**2 + jnp.log(2 * jnp.pi), -1),
            step.log_marginal(p, x),
            rtol=1e-4,
            atol=1e-3,
        )


# ------------------------------------------------------------------------------------------
# Linear VAE and VAE steps
# ------------------------------------------------------------------------------------------


def test_linear_vae_reaches_ppca_optimum_and_encoder_matches_posterior(digits):
    x = digits / 16.0
    d = 6
    mle = float(jnp.mean(ppca.log_prob(ppca.fit_ppca(x, d), x)))
    step = LinearVAEStep(d)
    p = step.init(jax.random.PRNGKey(0), (64,))
    loss = lambda p: -jnp.mean(step.elbo(p, x))
    opt = optax.adam(optax.cosine_decay_schedule(1e-2, 3000, 0.01))

    def body(carry, _):
        p, st = carry
        g = jax.grad(loss)(p)
        u, st = opt.update(g, st, p)
        return (optax.apply_updates(p, u), st), None

    (p, _), _ = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), None, length=3000))(p)
    elbo = float(jnp.mean(step.elbo(p, x)))
    exact = float(jnp.mean(step.log_marginal(p, x)))
    assert abs(elbo - mle) / abs(mle) < 1e-3, (elbo, mle)
    assert elbo <= exact + 1e-3  # the ELBO is a bound on the decoder's exact marginal
    # eq. 5.8: encoder = analytic posterior of its own decoder (compared on the data: pixels
    # with no variance leave B's columns unidentified)
    core = {k: p[k] for k in ("A", "mu", "log_sigma2")}
    post_mean, post_cov = ppca.posterior(core, x)
    enc_mean = step.encode_mean(p, x)
    B, Dq = step.encoder_operators(p)
    del B
    err = jnp.linalg.norm(enc_mean - post_mean) / jnp.linalg.norm(post_mean)
    assert err < 2e-2
    np.testing.assert_allclose(Dq, post_cov, atol=2e-2 * float(jnp.abs(post_cov).max()))


@pytest.mark.integration  # a whole conv/flow model: compile-dominated
def test_vae_step_is_a_bound_that_tightens_with_importance_samples():
    D, d = 6, 2
    params = random_ppca(jax.random.PRNGKey(7), D, d, 0.5)
    x = ppca.sample(params, jax.random.PRNGKey(8), 256)
    step = VAEStep(d, hidden=(32, 32))
    p = step.init(jax.random.PRNGKey(0), (D,))
    opt = optax.adam(3e-3)
    loss = lambda p, k: -jnp.mean(step.objective(p, x, k))

    def body(carry, k):
        p, st = carry
        g = jax.grad(loss)(p, k)
        u, st = opt.update(g, st, p)
        return (optax.apply_updates(p, u), st), None

    keys = jax.random.split(jax.random.PRNGKey(1), 800)
    (p, _), _ = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), keys))(p)
    # the VAE's own marginal log p(z') = log int p(z'|z) N(z) dz by quadrature on a z grid
    xs = x[:8]
    g = jnp.linspace(-7, 7, 281)
    zz = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    mean, log_scale = step._decoder(p, zz)
    prior = -0.5 * jnp.sum(zz**2, -1) - jnp.log(2 * jnp.pi) + 2 * jnp.log(g[1] - g[0])
    lik = jax.vmap(
        lambda xi: jax.nn.logsumexp(
            prior
            - 0.5 * jnp.sum(((xi - mean) / jnp.exp(log_scale)) ** 2 + 2 * log_scale, -1)
            - 0.5 * D * jnp.log(2 * jnp.pi)
        )
    )(xs)
    k = jax.random.PRNGKey(2)
    keys = jax.random.split(k, 100)
    elbo = jnp.mean(jax.vmap(lambda k: step.log_marginal(p, xs, k, 1))(keys), 0)
    iwae = jnp.mean(jax.vmap(lambda k: step.log_marginal(p, xs, k, 64))(keys[:20]), 0)
    assert bool(jnp.all(elbo <= iwae + 0.02))
    assert bool(jnp.all(iwae <= lik + 0.02))  # bounds on the model's own marginal
    assert bool(jnp.all(lik - iwae < lik - elbo + 1e-3))  # importance sampling tightens it
    exact = float(jnp.mean(ppca.log_prob(params, x)))
    assert float(jnp.mean(step.log_marginal(p, x, k, 1))) > exact - 1.5  # it learned the data
    z, v = step.encode(p, x, k)
    assert z.shape == (256, d) and v.shape == (256,)
    assert step.decode(p, z).shape == (256, D)


def test_conv_vae_step_shapes_and_errors():
    step = ConvVAEStep(latent_channels=2, width=8)
    p = step.init(jax.random.PRNGKey(0), (4, 4, 8))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 4, 8))
    z, v = step.encode(p, x, jax.random.PRNGKey(2))
    assert z.shape == (3, 4, 4, 2) and v.shape == (3,)
    assert step.decode(p, z, jax.random.PRNGKey(3)).shape == x.shape
    assert step.log_marginal(p, x, jax.random.PRNGKey(4), 4).shape == (3,)
    assert ConvVAEStep(latent_size=32).base_shape((4, 4, 8)) == (4, 4, 2)
    with pytest.raises(ValueError, match="multiple of 16"):
        ConvVAEStep(latent_size=20).base_shape((4, 4, 8))
    with pytest.raises(ValueError, match="latent channels"):
        ConvVAEStep(latent_channels=8).base_shape((4, 4, 8))
    with pytest.raises(ValueError, match="exactly one"):
        ConvVAEStep()


@pytest.mark.parametrize("cls", [PPCAStep, LinearVAEStep, VAEStep])
@pytest.mark.parametrize("d", [64, 65])
def test_latent_size_not_smaller_than_input_is_rejected(cls, d):
    with pytest.raises(ValueError, match=r"d=6[45] >= D=64"):
        cls(d).init(jax.random.PRNGKey(0), (8, 8, 1))
    with pytest.raises(ValueError, match="smaller than its input size"):
        ppca.fit_ppca(jnp.ones((10, 5)), d)


def test_image_architecture_errors_are_clear():
    with pytest.raises(ValueError, match="multiple of 4"):
        intermixed_channels((8, 8, 1), 6, 2)
    with pytest.raises(ValueError, match="latent_size"):
        build_flow((8, 8, 1), "vae", None)
    with pytest.raises(ValueError, match="compression must be"):
        build_flow((8, 8, 1), "pca", 4)
    with pytest.raises(ValueError, match="d=64 >= D=64"):
        build_flow((8, 8, 1), "ppca", 64)
    with pytest.raises(ValueError, match="Squeeze by 2"):
        build_flow((7, 8, 1), "vae", 4, steps_per_level=1)
    model = ImageModel(build_flow((8, 8, 1), "ppca", 8, steps_per_level=0), 17)
    with pytest.raises(ValueError, match=r"\(N, 8, 8, 1\)"):
        model.log_prob_bound(model.init(jax.random.PRNGKey(0)), jnp.zeros((2, 64)), None)


# ------------------------------------------------------------------------------------------
# Mixed flows and objectives
# ------------------------------------------------------------------------------------------


def test_mixed_flow_terms_and_kinds():
    D, d = 6, 2
    x = jax.random.normal(jax.random.PRNGKey(0), (5, D)) * 3 + 1
    flow = CompressiveFlow((ActNorm(), Conv1x1(), PPCAStep(d)), (D,))
    params = flow.init(jax.random.PRNGKey(1))
    params = flow.data_init(params, x)
    total, terms = flow.log_prob_terms(params, x)
    assert set(flow.term_kinds().values()) == {"exact"} and flow.exact
    # by hand: bijective part through the foundation, then the PPCA marginal
    bij = Flow((ActNorm(), Conv1x1()), (D,))
    zp, log_det = bij.bijector(params[:2]).inverse_and_log_det(x)
    np.testing.assert_allclose(total, log_det + ppca.log_prob(params[2], zp), rtol=1e-5)
    assert flow.latent_size == d and math.isclose(flow.compression, 1 - d / D)
    assert flow.sample(params, jax.random.PRNGKey(2), 3).shape == (3, D)
    # a VAE step makes the objective a bound, and intermixed steps are bounds
    vflow = CompressiveFlow((ActNorm(), VAEStep(3, (8,)), ActNorm(), LinearVAEStep(2)), (D,))
    kinds = vflow.term_kinds()
    assert kinds["1:vae"] == "bound" and kinds["3:linear_vae"] == "exact" and not vflow.exact
    assert vflow.term_kinds(train=True)["3:linear_vae"] == "bound"
    vp = vflow.init(jax.random.PRNGKey(3))
    with pytest.raises(ValueError, match="pass a PRNG key"):
        vflow.log_prob(vp, x)
    assert vflow.log_prob(vp, x, jax.random.PRNGKey(4)).shape == (5,)


def test_dual_base_objective_interpolates_between_bijective_and_compressive():
    D = 6
    x = jax.random.normal(jax.random.PRNGKey(0), (5, D))
    flow = CompressiveFlow((ActNorm(), PPCAStep(2)), (D,))
    params = flow.data_init(flow.init(jax.random.PRNGKey(1)), x * 2)
    plain = Flow((ActNorm(),), (D,)).log_prob(params[:1], x)
    at0, terms = dual_base_log_prob(flow, params, x, 0.0)
    np.testing.assert_allclose(at0, plain, rtol=1e-5)
    at1, _ = dual_base_log_prob(flow, params, x, 1.0)
    np.testing.assert_allclose(at1 - at0, flow.log_prob(params, x) - terms["log_det"], rtol=1e-5)
    assert float(alpha_schedule(0, 100)) == 0.0 and float(alpha_schedule(50, 100)) == 0.5
    assert float(alpha_schedule(500, 100)) == 1.0


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------


def test_digits_loader_and_dequantisation():
    data = load_images("digits")
    assert data.train.shape[1:] == (8, 8, 1) and data.num_bins == 17
    assert data.train.dtype == np.uint8 and int(data.train.max()) == 16
    assert "digits" in data.source and "NOT the thesis" in data.source
    fallback = load_images("mnist", data_dir="/nonexistent")
    assert "not found" in fallback.source and fallback.name == "digits"
    with pytest.raises(FileNotFoundError, match="idx3"):
        load_images("mnist", data_dir="/nonexistent", fallback=False)
    y = uniform_dequantize(jax.random.PRNGKey(0), data.train[:10], 17)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    np.testing.assert_array_equal(np.floor(np.asarray(y) * 17), data.train[:10])


@pytest.mark.integration  # a whole conv/flow model: compile-dominated
def test_ppca_flow_transition_alternates_closed_form_and_gradients():
    data = load_images("digits")
    flow = build_flow((8, 8, 1), "ppca", 16, steps_per_level=1, levels=1, width=8)
    model = ImageModel(flow, 17)
    key = jax.random.PRNGKey(0)
    params = model.data_init(model.init(key), data.train[:256], key)
    tr = ppca_flow_transition(model, optax.adam(1e-3), anneal_steps=20)
    res = fit(
        tr,
        tr.init(params),
        data.train,
        key=key,
        steps=40,
        batch_size=32,
        chunk_size=20,
        progress=False,
    )
    state = res.state
    # the closed form owns the PPCA parameters; the optimizer moved the flow
    np.testing.assert_array_equal(state.params["flow"][-1]["A"], state.ppca.params["A"])
    assert res.history[-1]["alpha"] == 1.0
    # better than the uniform density on [0, 1]^64 (log2(17) bits/dim) after 40 steps
    assert np.isfinite(res.history[-1]["bits_per_dim"])
    bpd = model.evaluate(state.params, data.test[:100], key)
    assert 0 < bpd < math.log2(17)


@pytest.mark.integration
def test_variational_dequantisation_and_intermixed_model_train():
    data = load_images("digits")
    flow = build_flow((8, 8, 1), "intermixed", 4, steps_per_level=1, width=8, conv_vae_width=8)
    assert flow.base_shape == (2, 2, 1) and not flow.exact
    model = ImageModel(flow, 17, "variational")
    key = jax.random.PRNGKey(0)
    params = model.data_init(model.init(key), data.train[:256], key)
    tr = gradient_training(model, optax.adam(1e-3))
    res = fit(
        tr,
        tr.init(params),
        data.train,
        key=key,
        steps=40,
        batch_size=32,
        chunk_size=20,
        progress=False,
    )
    assert res.history[-1]["bits_per_dim"] < res.history[0]["bits_per_dim"]
    u, log_q = model.dequantizer.sample(
        res.state.params["deq"], key, jnp.asarray(data.train[:4], jnp.float32) / 17
    )
    assert u.shape == (4, 8, 8, 1) and bool(jnp.all((u > 0) & (u < 1)))
    assert log_q.shape == (4,) and bool(jnp.all(jnp.isfinite(log_q)))


# ------------------------------------------------------------------------------------------
# The slow degradation check (the notebook runs once, in tests/test_e2e.py)
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_graceful_degradation_at_half_compression():
    """50% compression of the digits: the VAE-compressed flow within 10% bits/dim of the
    uncompressed flow of the same parameter count, in either direction (a compressed model that
    is much better would be winning by capacity, not by compression).

    Measured 2026-12-03 (these settings): VAE 2.846 bits/dim (20,952 params), matched
    uncompressed 3.075 (21,068), PPCA 2.705. The thesis's ordering VAE < PPCA does not hold on
    the 8x8 digits since the PPCA flow trains on eq. 5.5 after its annealing; that is reported
    (``compressive-*`` summaries), not asserted here."""
    import dataclasses

    from flowjax_thesis.experiments.compressive import (
        COMPRESSIVE_ARCHITECTURES_CPU,
        matched_uncompressed,
        train_and_evaluate,
    )

    cfg = dataclasses.replace(COMPRESSIVE_ARCHITECTURES_CPU, steps=2000, eval_samples=16)
    data = load_images("digits")
    vae = train_and_evaluate(data, "vae", 32, cfg)
    matched = matched_uncompressed(data, cfg, "vae_d32", 32)
    ppca_bpd = train_and_evaluate(data, "ppca", 32, cfg)["test_bpd"]
    print(vae["test_bpd"], vae["num_params"], matched["test_bpd"], matched["num_params"], ppca_bpd)
    assert abs(matched["num_params"] / vae["num_params"] - 1) <= 0.10
    assert abs(vae["test_bpd"] - matched["test_bpd"]) <= 0.10 * matched["test_bpd"]
    assert np.isfinite(ppca_bpd)

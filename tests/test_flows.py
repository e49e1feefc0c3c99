"""Flows as distributions: normalisation, sampling vs density, temperature, distrax interop."""

from functools import partial

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.bijectors import Chain, Repeat, make_layer
from flowjax_thesis.flows import Flow, planar_flow, realnvp_flow
from flowjax_thesis.grid import log_normalizer_grid


def perturb(params, scale, seed=0):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
    )


FLOWS_2D = {
    "planar": lambda: planar_flow(2, 6),
    "radial": lambda: Flow((Repeat(make_layer("radial"), 4),), (2,)),
    "realnvp": lambda: realnvp_flow(2, 4, hidden=(16,)),
    "spline": lambda: realnvp_flow(2, 2, hidden=(16,), transform="spline"),
    "maf": lambda: Flow(
        (make_layer("maf", hidden=(16,)), make_layer("reverse"), make_layer("maf", hidden=(16,))),
        (2,),
    ),
    "sylvester": lambda: Flow((Repeat(make_layer("sylvester_orthogonal"), 3),), (2,)),
}


@pytest.mark.parametrize("name", sorted(FLOWS_2D))
def test_2d_flow_integrates_to_one(name):
    flow = FLOWS_2D[name]()
    # splines get sharp (grid-unfriendly) features from large random parameters
    params = perturb(flow.init(jax.random.PRNGKey(0)), 0.1 if name == "spline" else 0.3)
    log_mass = log_normalizer_grid(partial(flow.log_prob, params), 20.0, 800)
    assert abs(float(log_mass)) < 1e-3, float(log_mass)


@pytest.mark.parametrize("name", ["planar", "realnvp", "maf"])
def test_sample_and_log_prob_agree(name):
    flow = FLOWS_2D[name]()
    params = perturb(flow.init(jax.random.PRNGKey(0)), 0.3)
    x, log_q = flow.sample_and_log_prob(params, jax.random.PRNGKey(1), 2000)
    np.testing.assert_allclose(flow.log_prob(params, x), log_q, atol=2e-3)
    # and the samples follow the density: E_q[f] by samples vs by grid quadrature
    from flowjax_thesis.grid import grid_2d

    pts, area = grid_2d(20.0, 600)
    dens = jnp.exp(flow.log_prob(params, pts)) * area
    for f in (lambda v: v[:, 0], lambda v: v[:, 1] ** 2, lambda v: jnp.tanh(v[:, 0] * v[:, 1])):
        quad = float(jnp.sum(dens * f(pts)))
        big = flow.sample(params, jax.random.PRNGKey(2), 40000)
        mc = float(jnp.mean(f(big)))
        se = float(jnp.std(f(big))) / np.sqrt(40000)
        assert abs(mc - quad) < 5 * se + 1e-3, (mc, quad, se)


def test_temperature_scales_base_and_density():
    flow = realnvp_flow(2, 2, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))  # identity at init
    x, log_q = flow.sample_and_log_prob(params, jax.random.PRNGKey(1), 20000, temperature=0.5)
    np.testing.assert_allclose(np.std(x, axis=0), 0.5, rtol=0.03)
    ref = distrax.MultivariateNormalDiag(jnp.zeros(2), 0.5 * jnp.ones(2)).log_prob(x)
    np.testing.assert_allclose(log_q, ref, atol=1e-4)
    zero = flow.sample(params, jax.random.PRNGKey(1), 5, temperature=0.0)
    np.testing.assert_allclose(zero, 0.0)


def test_distrax_transformed_matches_log_prob():
    flow = realnvp_flow(3, 3, hidden=(8,))
    params = perturb(flow.init(jax.random.PRNGKey(0)), 0.2)
    dist = flow.distribution(params)
    x = jax.random.normal(jax.random.PRNGKey(3), (10, 3))
    np.testing.assert_allclose(dist.log_prob(x), flow.log_prob(params, x), atol=1e-5)
    s, lp = dist.sample_and_log_prob(seed=jax.random.PRNGKey(4), sample_shape=(7,))
    assert s.shape == (7, 3)
    np.testing.assert_allclose(flow.log_prob(params, s), lp, atol=1e-4)


def test_conditional_flow_context_matters_and_is_checked():
    flow = realnvp_flow(2, 2, hidden=(8,), context_shape=(3,))
    params = perturb(flow.init(jax.random.PRNGKey(0)), 0.3)
    x = jnp.ones((4, 2))
    c1, c2 = jnp.zeros((4, 3)), jnp.ones((4, 3))
    assert not np.allclose(flow.log_prob(params, x, c1), flow.log_prob(params, x, c2))
    samples = flow.sample(params, jax.random.PRNGKey(1), 6, context=jnp.ones(3))
    assert samples.shape == (6, 2)
    with pytest.raises(ValueError, match=r"context of shape \(4, 3\)"):
        flow.log_prob(params, x, jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match="conditional"):
        flow.log_prob(params, x)


def test_wrong_event_shape_is_named():
    flow = realnvp_flow(2, 2, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"event shape \(2,\)"):
        flow.log_prob(params, jnp.zeros((5, 3)))


def test_repeat_scan_equals_unrolled_chain():
    layer = make_layer("affine_coupling", hidden=(8,))
    rep = Repeat(Chain((layer, make_layer("reverse"))), 3)
    params = perturb(rep.init(jax.random.PRNGKey(0), (4,)), 0.3)
    unrolled = [jax.tree.map(lambda a, i=i: a[i], params) for i in range(3)]
    chain = Chain(tuple(Chain((layer, make_layer("reverse"))) for _ in range(3)))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    a = rep.bind(params).inverse_and_log_det(x)
    b = chain.bind(tuple(unrolled)).inverse_and_log_det(x)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=1e-5)


def test_image_flow_with_multiscale_and_actnorm_data_init():
    step = Chain(
        (
            make_layer("actnorm"),
            make_layer("conv1x1"),
            make_layer("affine_coupling", mask="channel", conv_width=8),
        )
    )
    flow = Flow((make_layer("multiscale").__class__(levels=((step,), (step,))),), (8, 8, 1))
    params = flow.init(jax.random.PRNGKey(0))
    x = 2.0 + 3.0 * jax.random.normal(jax.random.PRNGKey(1), (64, 8, 8, 1))
    params = flow.data_init(params, x)
    z = flow.bijector(params).inverse(x)
    assert z.shape == x.shape
    np.testing.assert_allclose(float(jnp.std(z)), 1.0, atol=0.2)
    lp = flow.log_prob(params, x)
    assert lp.shape == (64,) and np.all(np.isfinite(lp))

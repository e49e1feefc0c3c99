"""Flow as the one distribution object: bases as arguments, pytree contexts, broadcasting over
sample axes, one temperature convention, and input checks."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.bijectors import Repeat, make_layer
from flowjax_thesis.flows import Flow, realnvp_flow


def perturb(params, scale, seed=7):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )


def gaussian_posterior(conditional_layers: bool):
    layer = make_layer("affine_coupling", hidden=(8,))
    return Flow(
        (Repeat(layer, 2),),
        (2,),
        context_shape={"mu": (2,), "log_var": (2,), "h": (3,)},
        base=lambda c: distrax.MultivariateNormalDiag(c["mu"], jnp.exp(0.5 * c["log_var"])),
        layer_context=(lambda c: c["h"]) if conditional_layers else (lambda c: None),
    )


def enc(batch=()):
    key = jax.random.PRNGKey(5)
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "mu": jax.random.normal(k1, batch + (2,)),
        "log_var": 0.3 * jax.random.normal(k2, batch + (2,)),
        "h": jax.random.normal(k3, batch + (3,)),
    }


def test_per_example_base_density_is_the_change_of_variables_of_that_base():
    flow = Flow(
        (make_layer("affine_coupling", hidden=(8,)),),
        (2,),
        context_shape={"mu": (2,), "log_var": (2,), "h": (3,)},
        base=lambda c: distrax.MultivariateNormalDiag(c["mu"], jnp.exp(0.5 * c["log_var"])),
        layer_context=lambda c: None,  # the layers are not conditioned
    )
    params = perturb(flow.init(jax.random.PRNGKey(0)), 0.1)
    c = enc()
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
    bij = flow.bijector(params)
    z, ld = bij.inverse_and_log_det(x)
    ref = distrax.MultivariateNormalDiag(c["mu"], jnp.exp(0.5 * c["log_var"])).log_prob(z) + ld
    np.testing.assert_allclose(flow.log_prob(params, x, c), ref, atol=1e-5)
    # and the density integrates to one (2-D grid)
    g = jnp.linspace(-12, 12, 481)
    xx = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = jnp.sum(jnp.exp(flow.log_prob(params, xx, c))) * (g[1] - g[0]) ** 2
    np.testing.assert_allclose(mass, 1.0, atol=5e-3)


def test_sample_and_log_prob_agree_with_log_prob_and_broadcast_over_sample_axes():
    flow = gaussian_posterior(conditional_layers=True)
    params = perturb(flow.init(jax.random.PRNGKey(0)), 0.3)
    c = enc((4,))
    x, lq = flow.sample_and_log_prob(params, jax.random.PRNGKey(2), 6, context=c)
    assert x.shape == (6, 4, 2) and lq.shape == (6, 4)
    np.testing.assert_allclose(flow.log_prob(params, x, c), lq, atol=1e-4)
    one, lq1 = flow.sample_and_log_prob(params, jax.random.PRNGKey(2), None, context=c)
    assert one.shape == (4, 2) and lq1.shape == (4,)
    shared = flow.sample(params, jax.random.PRNGKey(3), 7, context=enc())
    assert shared.shape == (7, 2)
    # the layers see their own part of the context: changing h changes the density
    other = dict(c, h=c["h"] + 1.0)
    assert not np.allclose(flow.log_prob(params, x, other), lq)


def test_moments_of_a_per_example_base_are_right():
    flow = gaussian_posterior(conditional_layers=False)
    params = jax.tree.map(jnp.zeros_like, flow.init(jax.random.PRNGKey(0)))  # identity layers
    c = enc()
    x = flow.sample(params, jax.random.PRNGKey(4), 40000, context=c)
    np.testing.assert_allclose(x.mean(0), c["mu"], atol=0.03)
    np.testing.assert_allclose(x.std(0), jnp.exp(0.5 * c["log_var"]), rtol=0.03)


def test_temperature_scales_any_base_about_its_mean():
    flow = gaussian_posterior(conditional_layers=False)
    params = jax.tree.map(jnp.zeros_like, flow.init(jax.random.PRNGKey(0)))
    c = enc()
    x, lq = flow.sample_and_log_prob(params, jax.random.PRNGKey(4), 20000, c, temperature=0.5)
    sd = 0.5 * jnp.exp(0.5 * c["log_var"])
    np.testing.assert_allclose(x.std(0), sd, rtol=0.03)
    ref = distrax.MultivariateNormalDiag(c["mu"], sd).log_prob(x)
    np.testing.assert_allclose(lq, ref, atol=1e-4)
    x0, lq0 = flow.sample_and_log_prob(params, jax.random.PRNGKey(4), 3, c, temperature=0.0)
    np.testing.assert_allclose(x0, np.broadcast_to(c["mu"], (3, 2)), atol=1e-6)
    assert np.all(np.isposinf(lq0))
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        flow.sample(params, jax.random.PRNGKey(0), 2, c, temperature=-1.0)
    # a traced temperature works under jit and agrees with the static one
    f = jax.jit(lambda t: flow.sample_and_log_prob(params, jax.random.PRNGKey(4), 5, c, t))
    a, b = f(0.5), flow.sample_and_log_prob(params, jax.random.PRNGKey(4), 5, c, 0.5)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)


def test_fixed_distrax_base():
    base = distrax.MultivariateNormalDiag(jnp.array([1.0, -1.0]), jnp.array([0.5, 2.0]))
    flow = Flow((make_layer("affine_coupling", hidden=(8,)),), (2,), base=base)
    params = jax.tree.map(jnp.zeros_like, flow.init(jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    np.testing.assert_allclose(flow.log_prob(params, x), base.log_prob(x), atol=1e-5)
    with pytest.raises(ValueError, match="event shape"):
        Flow((make_layer("affine_coupling"),), (3,), base=base)
    with pytest.raises(TypeError, match="base must be"):
        Flow((make_layer("affine_coupling"),), (2,), base="normal")


def test_list_context_per_scale():
    flow = Flow(
        (make_layer("affine_coupling", hidden=(8,)),),
        (2,),
        context_shape=[(3,), (4,)],
        layer_context=lambda c: jnp.concatenate([c[0], c[1]], -1),
    )
    params = perturb(flow.init(jax.random.PRNGKey(0)), 0.3)
    c = [jnp.ones((5, 3)), jnp.zeros((5, 4))]
    x, lq = flow.sample_and_log_prob(params, jax.random.PRNGKey(1), None, context=c)
    np.testing.assert_allclose(flow.log_prob(params, x, c), lq, atol=1e-4)
    with pytest.raises(ValueError, match="structured like"):
        flow.log_prob(params, x, c[0])
    with pytest.raises(ValueError, match="different batch shapes"):
        flow.log_prob(params, x, [jnp.ones((5, 3)), jnp.zeros((4, 4))])


@pytest.mark.parametrize(
    "call, error, phrase",
    [
        (lambda f, p: f.sample(p, jax.random.PRNGKey(0), -1), ValueError, "positive int"),
        (lambda f, p: f.sample(p, jax.random.PRNGKey(0), 2.0), ValueError, "positive int"),
        (lambda f, p: f.sample(p, 0, 2), TypeError, "PRNG key"),
        (lambda f, p: f.log_prob(p, np.zeros((2, 2), np.complex64)), TypeError, "real numbers"),
        (lambda f, p: f.log_prob(p, np.array([["a", "b"]])), TypeError, "real numbers"),
        (
            lambda f, p: f.log_prob(p, jnp.zeros((2, 2)), jnp.zeros((2, 3))),
            ValueError,
            "unconditional",
        ),
    ],
)
def test_bad_inputs_get_clear_errors(call, error, phrase):
    flow = realnvp_flow(2, 2, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))
    with pytest.raises(error, match=phrase):
        call(flow, params)


def test_integer_and_boolean_data_are_cast_to_float():
    flow = realnvp_flow(2, 2, hidden=(8,))
    params = perturb(flow.init(jax.random.PRNGKey(0)), 0.2)
    ints = np.array([[1, 2], [0, -1]])
    np.testing.assert_allclose(
        flow.log_prob(params, ints), flow.log_prob(params, ints.astype(np.float32)), atol=1e-6
    )
    assert flow.log_prob(params, ints > 0).dtype == jnp.float32


def test_context_batch_must_match_the_trailing_data_batch():
    flow = realnvp_flow(2, 2, hidden=(8,), context_shape=(3,))
    params = flow.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="must equal the data's batch shape"):
        flow.log_prob(params, jnp.zeros((4, 2)), jnp.zeros((5, 3)))
    # a shared context is broadcast
    shared = flow.log_prob(params, jnp.zeros((4, 2)), jnp.ones(3))
    full = flow.log_prob(params, jnp.zeros((4, 2)), jnp.ones((4, 3)))
    np.testing.assert_allclose(shared, full, atol=1e-6)

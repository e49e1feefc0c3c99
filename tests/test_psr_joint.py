"""Joint PSR with the shared embedding: one set of embedding parameters, trained by both terms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax_thesis.flows import Flow
from flowjax_thesis.models.psr import (
    JointPSR,
    bin_centres,
    dequantize,
    downsample_nearest,
    image_psr_flow,
)

NB = 17


def _perturbed(params, scale, seed=7):
    """Zero-initialised parts get small random values, so every path carries gradient."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        treedef,
        [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)],
    )


@pytest.fixture(scope="module")
def joint_model():
    cond = image_psr_flow(
        (8, 8, 1), scale=2, num_levels=1, steps_per_scale=1, conv_width=8, features=4,
        encoder_features=8, growth=4, embedding_channels=1,
    )  # fmt: skip
    joint = JointPSR(cond, NB, prior_steps=1, prior_width=8)
    params = _perturbed(jax.jit(joint.init)(jax.random.PRNGKey(0)), 0.05)
    y_int = jax.random.randint(jax.random.PRNGKey(2), (4, 8, 8, 1), 0, NB)
    y = dequantize(jax.random.PRNGKey(3), y_int, NB)
    x = bin_centres(downsample_nearest(y_int, 2), NB)
    return joint, params, y, x, y_int


@pytest.mark.integration  # the joint conv model: compile-dominated
def test_conditional_sees_x_and_the_priors_first_block(joint_model):
    joint, params, y, x, _ = joint_model
    assert joint.shared_embedding
    # independent path: the prior's first layer as a Flow of its own
    first = Flow((joint.prior_flow.layers[0],), joint.lr_shape)
    e = first.bijector((params["prior"][0],)).inverse(x)
    context = jnp.concatenate([x, e], -1)
    total, cond, prior = jax.jit(joint.log_prob)(params, y, x)
    direct = jax.jit(joint.conditional.log_prob)(params["conditional"], y, context)
    np.testing.assert_allclose(cond, direct, rtol=1e-5)
    direct = jax.jit(joint.prior_flow.log_prob)(params["prior"], x)
    np.testing.assert_allclose(prior, direct, rtol=1e-5)
    np.testing.assert_allclose(total, cond + prior, rtol=1e-6)
    assert not np.allclose(e, x, atol=1e-3)  # a learned map, not the identity


def _grads(joint, params, y, x):
    cond = jax.jit(jax.grad(lambda p: jnp.mean(joint.log_prob(p, y, x)[1])))(params)
    prior = jax.jit(jax.grad(lambda p: jnp.mean(joint.log_prob(p, y, x)[2])))(params)
    return cond, prior


def _norm(tree):
    return float(sum(jnp.sum(a**2) for a in jax.tree.leaves(tree)) ** 0.5)


@pytest.mark.integration  # the joint conv model: compile-dominated
def test_embedding_receives_gradients_from_both_terms(joint_model):
    joint, params, y, x, _ = joint_model
    g_cond, g_prior = _grads(joint, params, y, x)
    assert _norm(g_cond["prior"][0]) > 1e-4  # log p(y | x) reaches the embedding
    assert _norm(g_prior["prior"][0]) > 1e-4  # and so does log p(x)
    assert _norm(g_prior["conditional"]) == 0.0
    assert _norm(g_cond["prior"][1:]) == 0.0  # only the first block is shared
    # the gradient of log p(y | x) along the embedding is the derivative of the function
    # (central finite difference in a random direction of the embedding's parameters)
    leaves, treedef = jax.tree.flatten(params["prior"][0])
    keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
    v = jax.tree.unflatten(treedef, [jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    v = jax.tree.map(lambda a: a / _norm(v), v)

    @jax.jit
    def f(t):
        emb = jax.tree.map(lambda a, d: a + t * d, params["prior"][0], v)
        p = params | {"prior": (emb,) + tuple(params["prior"][1:])}
        return jnp.mean(joint.log_prob(p, y, x)[1])

    h = 1e-2
    fd = (float(f(h)) - float(f(-h))) / (2 * h)
    pairs = zip(jax.tree.leaves(g_cond["prior"][0]), jax.tree.leaves(v), strict=True)
    ad = float(sum(jnp.vdot(a, b) for a, b in pairs))
    assert abs(ad) > 1e-3
    np.testing.assert_allclose(fd, ad, rtol=5e-2, atol=5e-3)


@pytest.mark.integration  # the joint conv model: compile-dominated
def test_joint_training_updates_one_embedding_with_both_gradients(joint_model):
    """One SGD step on the joint loss moves the embedding by -lr (g_cond + g_prior): one set of
    parameters, no copy per term."""
    joint, params, y, x, _ = joint_model
    g_cond, g_prior = _grads(joint, params, y, x)
    lr = 1e-2
    opt = optax.sgd(lr)
    loss = lambda p: -jnp.mean(joint.log_prob(p, y, x)[0])
    updates, _ = opt.update(jax.jit(jax.grad(loss))(params), opt.init(params))
    new = optax.apply_updates(params, updates)
    for a, b, gc, gp in zip(
        jax.tree.leaves(params["prior"][0]),
        jax.tree.leaves(new["prior"][0]),
        jax.tree.leaves(g_cond["prior"][0]),
        jax.tree.leaves(g_prior["prior"][0]),
        strict=True,
    ):
        np.testing.assert_allclose(b - a, lr * (gc + gp), rtol=1e-4, atol=1e-7)
    n_joint = sum(a.size for a in jax.tree.leaves(params))
    n_parts = sum(a.size for a in jax.tree.leaves(params["conditional"])) + sum(
        a.size for a in jax.tree.leaves(params["prior"])
    )
    assert set(params) == {"conditional", "prior"} and n_joint == n_parts


@pytest.mark.integration  # the joint conv model: compile-dominated
def test_shared_embedding_sampling_is_consistent(joint_model):
    joint, params, *_ = joint_model
    sample = jax.jit(joint.sample, static_argnums=2)
    x0, y0 = sample(params, jax.random.PRNGKey(2), 2, 0.0, 0.0)
    e = jnp.zeros((2,) + joint.prior_base_shape)
    z = jnp.zeros((2, 8, 8, 1))
    x1, y1 = jax.jit(joint.sample_from_latents)(params, e, z)
    np.testing.assert_allclose(x0, x1, atol=1e-5)
    np.testing.assert_allclose(y0, y1, atol=1e-5)
    xs, ys = sample(params, jax.random.PRNGKey(1), 3, 0.8, 0.8)
    assert xs.shape == (3, 4, 4, 1) and ys.shape == (3, 8, 8, 1)
    assert np.all(np.isfinite(np.asarray(ys)))


def test_context_channels_must_fit_the_image():
    cond = image_psr_flow(
        (8, 8, 1), scale=2, num_levels=1, steps_per_scale=1, conv_width=8, features=4,
        encoder_features=8, growth=4, embedding_channels=2,
    )  # fmt: skip
    with pytest.raises(ValueError, match="context"):
        JointPSR(cond, NB)
    with pytest.raises(ValueError, match="embedding_channels"):
        image_psr_flow((8, 8, 1), scale=2, embedding_channels=-1)

"""Generic checks for every registered layer (conditional variants included)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowjax_thesis.bijectors import REGISTRY, Chain, Repeat, make_layer

VECTOR, IMAGE, CONTEXT = (5,), (4, 4, 2), (3,)


def cases():
    for name, ctor in sorted(REGISTRY.items()):
        layer = ctor()
        for shape in (VECTOR, IMAGE):
            if layer.event_ranks and len(shape) not in layer.event_ranks:
                continue
            for ctx in (None, CONTEXT) if layer.conditional else (None,):
                yield pytest.param(
                    name, shape, ctx, id=f"{name}-{len(shape)}d-{'ctx' if ctx else 'noctx'}"
                )
    yield pytest.param("repeat_planar", VECTOR, None, id="repeat_planar")
    yield pytest.param("repeat_coupling_chain", VECTOR, CONTEXT, id="repeat_coupling_chain")


def build(name):
    if name == "repeat_planar":
        return Repeat(make_layer("planar"), 3)
    if name == "repeat_coupling_chain":
        return Repeat(Chain((make_layer("affine_coupling"), make_layer("reverse"))), 2)
    return make_layer(name)


def perturbed(layer, shape, ctx, scale=None):
    """Params moved away from the (often identity) initialisation, deterministically."""
    params = layer.init(jax.random.PRNGKey(0), shape, ctx)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), max(len(leaves), 1))
    spline = getattr(layer, "transform", "") == "spline"
    s = scale if scale is not None else (0.05 if spline else 0.2)
    leaves = [a + s * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


def sample_inputs(layer, shape, ctx, batch=()):
    x = jax.random.normal(jax.random.PRNGKey(2), batch + tuple(layer.base_shape(shape)))
    c = None if ctx is None else jax.random.normal(jax.random.PRNGKey(3), batch + ctx)
    return x, c


@pytest.mark.parametrize("name,shape,ctx", list(cases()))
def test_round_trip_and_log_det(name, shape, ctx):
    """Exact math, checked in float64 so that conditioning does not hide or fake errors."""
    layer = build(name)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: a.astype(jnp.float64), perturbed(layer, shape, ctx))
        z, c = sample_inputs(layer, shape, ctx)
        z = z.astype(jnp.float64)
        c = None if c is None else c.astype(jnp.float64)
        bij = layer.bind(params, c)
        x, fwd_ld = jax.jit(bij.forward_and_log_det)(z)
        assert x.shape == shape
        z2, inv_ld = jax.jit(bij.inverse_and_log_det)(x)
        # the spline inverse solves a quadratic per bin: steep bins cost a few digits
        tol = 1e-5 if "spline" in name else 1e-8
        np.testing.assert_allclose(z2, z, atol=tol, rtol=tol)
        np.testing.assert_allclose(inv_ld, -fwd_ld, atol=tol, rtol=tol)
        base_shape = z.shape
        flat_forward = lambda v: bij.forward(v.reshape(base_shape)).reshape(-1)
        jac = jax.jit(jax.jacfwd(flat_forward))(z.reshape(-1))
        _, logabsdet = jnp.linalg.slogdet(jac)
        np.testing.assert_allclose(fwd_ld, logabsdet, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name,shape,ctx", list(cases()))
def test_float32_round_trip_near_init(name, shape, ctx):
    layer = build(name)
    params = perturbed(layer, shape, ctx, scale=0.05)
    z, c = sample_inputs(layer, shape, ctx, batch=(4,))
    bij = layer.bind(params, c)
    x = jax.jit(bij.forward)(z)  # jitted: one compile instead of one per primitive
    np.testing.assert_allclose(jax.jit(bij.inverse)(x), z, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,shape,ctx", list(cases()))
def test_batch_vmap_jit_agree(name, shape, ctx):
    layer = build(name)
    params = perturbed(layer, shape, ctx)
    z, c = sample_inputs(layer, shape, ctx, batch=(3,))

    def fwd(params, z, c):
        return layer.bind(params, c).forward_and_log_det(z)

    batched = jax.jit(fwd)(params, z, c)
    mapped = jax.jit(jax.vmap(fwd, in_axes=(None, 0, 0 if c is not None else None)))(params, z, c)
    first = jax.jit(fwd)(params, z[0], None if c is None else c[0])
    for a, b, d in zip(batched, mapped, first):
        assert a.shape == b.shape
        # float32: batched, vmapped and single-example kernels may sum in different orders
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(a[0], d, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,shape,ctx", list(cases()))
def test_finite_gradients_at_extreme_inputs(name, shape, ctx):
    layer = build(name)
    params = perturbed(layer, shape, ctx)
    z, c = sample_inputs(layer, shape, ctx, batch=(2,))
    z = z.at[0].multiply(1e3).at[1].set(0.0)  # very large and exactly-zero inputs

    def loss(params):
        bij = layer.bind(params, c)
        x, ld = bij.forward_and_log_det(z)
        z2, ild = bij.inverse_and_log_det(jnp.clip(x, -1e4, 1e4))
        return jnp.sum(ld) + jnp.sum(ild) + 1e-3 * jnp.sum(x**2) * 0 + jnp.sum(jnp.tanh(z2))

    grads = jax.jit(jax.grad(loss))(params)
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g)), name


def test_unknown_layer_lists_valid_names():
    with pytest.raises(KeyError, match="affine_coupling"):
        make_layer("no_such_flow")


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"rank 1"):
        make_layer("planar").init(jax.random.PRNGKey(0), (4, 4, 2))
    with pytest.raises(ValueError, match="divisible"):
        make_layer("squeeze").init(jax.random.PRNGKey(0), (5, 4, 2))
    with pytest.raises(ValueError, match="unconditional"):
        make_layer("planar").init(jax.random.PRNGKey(0), (4,), (3,))
    with pytest.raises(ValueError, match="context"):
        layer = make_layer("actnorm")
        layer.bind(layer.init(jax.random.PRNGKey(0), (4,), (3,)))


def test_planar_radial_inverses_exact():
    for name in ("planar", "radial"):
        layer = make_layer(name)
        params = perturbed(layer, (2,), None, scale=1.0)
        bij = layer.bind(params)
        z = 3.0 * jax.random.normal(jax.random.PRNGKey(4), (1000, 2))
        np.testing.assert_allclose(bij.inverse(bij.forward(z)), z, atol=1e-5, rtol=0)


def test_actnorm_data_init_normalises():
    layer = make_layer("actnorm")
    x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(0), (256, 4, 4, 3))
    params = layer.data_init(layer.init(jax.random.PRNGKey(1), (4, 4, 3)), x)
    z = layer.bind(params).inverse(x)
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1.0, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=5, max_size=5),
    st.lists(st.floats(-8, 8), min_size=2, max_size=2),
    st.sampled_from(["planar", "radial"]),
)
def test_scalar_inverses_property(raw, point, name):
    """For any parameters and any point, the root-solve inverses undo the forward map."""
    layer = make_layer(name)
    if name == "planar":
        params = {"u": jnp.array(raw[:2]), "w": jnp.array(raw[2:4]), "b": jnp.array(raw[4])}
    else:
        params = {"z0": jnp.array(raw[:2]), "alpha": jnp.array(raw[2]), "beta": jnp.array(raw[3])}
    bij = layer.bind(params)
    z = jnp.array(point)
    x, ld = bij.forward_and_log_det(z)
    z2, ild = bij.inverse_and_log_det(x)
    # float32: x = z + u h(.) rounds z to the spacing of |x|, which no inverse can undo (e.g.
    # u = 0, w = (0, 1e-5) makes |u_hat| = 3e4, so z in [-8, 8] is kept to about 2e-3)
    atol = 2e-4 * (1 + float(jnp.abs(z).max())) + 16 * np.finfo(np.float32).eps * float(
        jnp.abs(x).max()
    )
    np.testing.assert_allclose(z2, z, atol=atol)
    np.testing.assert_allclose(ild, -ld, atol=1e-4)


def test_actnorm_data_init_does_not_blow_up_a_constant_channel():
    layer = make_layer("actnorm")
    x = jnp.stack([jax.random.normal(jax.random.PRNGKey(0), (64,)), jnp.full((64,), 0.5)], -1)
    params = layer.data_init(layer.init(jax.random.PRNGKey(1), (2,)), x)
    z = layer.bind(params).inverse(x + 1e-3)
    assert float(jnp.max(jnp.abs(z[:, 1]))) < 1.0

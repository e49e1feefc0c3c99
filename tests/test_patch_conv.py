"""``nets.patch_conv``: the same parameters, initial values, outputs and gradients as flax's
``Conv`` and ``ConvTranspose`` (the reference), on every configuration the networks use and on
odd ones (non-square kernels and strides, uneven padding, two batch axes)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.nets import patch_conv as pc

_CASES = {  # name: (keyword arguments, input shape with two batch axes)
    "conv 3x3 same": ("Conv", dict(features=6, kernel_size=(3, 3)), (2, 3, 6, 5, 4)),
    "conv 1x1": ("Conv", dict(features=6, kernel_size=(1, 1)), (2, 3, 4, 4, 3)),
    "conv stride 2 same, odd size": (
        "Conv",
        dict(features=6, kernel_size=(3, 3), strides=(2, 2)),
        (2, 3, 7, 6, 4),
    ),
    "conv stride 2 explicit padding": (
        "Conv",
        dict(features=6, kernel_size=(5, 5), strides=2, padding=((2, 2), (2, 2))),
        (2, 3, 9, 8, 4),
    ),
    "conv full kernel valid": (
        "Conv",
        dict(features=6, kernel_size=(3, 4), padding="VALID"),
        (2, 3, 3, 4, 5),
    ),
    "conv uneven padding, strides (1, 2)": (
        "Conv",
        dict(features=6, kernel_size=(3, 2), strides=(1, 2), padding=((1, 0), (0, 1))),
        (2, 3, 5, 6, 2),
    ),
    "conv zero init, no bias": (
        "Conv",
        dict(features=3, kernel_size=(3, 3), use_bias=False, kernel_init=nn.initializers.zeros),
        (2, 3, 4, 4, 2),
    ),
    "transpose stride 2 k5": (
        "ConvTranspose",
        dict(features=6, kernel_size=(5, 5), strides=(2, 2)),
        (2, 3, 7, 7, 4),
    ),
    "transpose stride 2 k3": (
        "ConvTranspose",
        dict(features=6, kernel_size=(3, 3), strides=(2, 2)),
        (2, 3, 2, 2, 4),
    ),
    "transpose stride 2 k4, strides (2, 3)": (
        "ConvTranspose",
        dict(features=6, kernel_size=(4, 3), strides=(2, 3)),
        (2, 3, 3, 3, 4),
    ),
    "transpose from 1x1 valid": (
        "ConvTranspose",
        dict(features=6, kernel_size=(3, 4), padding="VALID"),
        (2, 3, 1, 1, 5),
    ),
    "transpose stride 1 valid": (
        "ConvTranspose",
        dict(features=6, kernel_size=(3, 2), padding="VALID"),
        (2, 3, 4, 5, 3),
    ),
    "transpose stride 1 same, even kernel": (
        "ConvTranspose",
        dict(features=6, kernel_size=(4, 3)),
        (2, 3, 5, 5, 3),
    ),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_same_parameters_outputs_and_gradients_as_flax(case):
    cls, kw, shape = _CASES[case]
    ref, mine = getattr(nn, cls)(**kw), getattr(pc, cls)(**kw)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    params = ref.init(jax.random.PRNGKey(0), x)
    mine_params = mine.init(jax.random.PRNGKey(0), x)
    assert jax.tree.structure(mine_params) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(mine_params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    out_ref, out = ref.apply(params, x), mine.apply(params, x)
    assert out.shape == out_ref.shape
    np.testing.assert_allclose(out, out_ref, atol=1e-5)

    def loss(f):
        return lambda p, x: jnp.sum(jnp.sin(f.apply(p, x)))

    g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
    g = jax.grad(loss(mine), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_a_network_keeps_its_parameter_tree_when_it_swaps_in_the_drop_ins():
    """Auto-named submodules get flax's names (``Conv_0``, ``ConvTranspose_0``)."""

    def net(conv, conv_t):
        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                return conv_t(3, (3, 3), strides=(2, 2))(nn.relu(conv(4, (3, 3))(x)))

        return Net()

    x = jnp.ones((2, 4, 4, 1))
    ours = net(pc.Conv, pc.ConvTranspose).init(jax.random.PRNGKey(0), x)
    ref = net(nn.Conv, nn.ConvTranspose).init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, ref)


def test_what_is_not_computed_is_refused_by_name():
    x = jnp.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="padding must be 'SAME', 'VALID'"):
        pc.Conv(3, (3, 3), padding="CIRCULAR").init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="strided conv_transpose takes padding 'SAME'"):
        pc.ConvTranspose(3, (3, 3), strides=2, padding="VALID").init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="strides must be an int or a pair"):
        pc.Conv(3, (3, 3), strides=(1, 1, 1)).init(jax.random.PRNGKey(0), x)

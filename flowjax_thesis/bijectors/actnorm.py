"""ActNorm (Kingma & Dhariwal, 2018), unconditional and conditional.

Per-channel (last axis) affine map. The parameters have the event's rank (``(C,)`` for vectors,
``(1, 1, C)`` for images) so that binding needs nothing but the parameters.
The map is ``forward(z) = z * exp(log_scale) + shift``; the density
direction ``inverse(x) = (x - shift) * exp(-log_scale)`` normalises. ``log|det| = (number of
positions) * sum(log_scale)``. :meth:`ActNorm.data_init` sets ``shift`` to the per-channel mean
and ``log_scale`` to the log standard deviation of a batch (floored at ``min_std``, so that a
constant channel is not amplified a millionfold), so the batch leaves the layer (in the density
direction) with zero mean and unit variance per channel.

Conditional variant (chapter 6): with a context, ``shift`` and ``log_scale`` get a per-example
offset from a zero-initialised MLP of the (flattened) context.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from flowjax_thesis.bijectors.base import EventBijector, Layer, event_size
from flowjax_thesis.nets import MLP
from flowjax_thesis.nets.checks import check_real, check_widths


@dataclass(frozen=True)
class ActNorm(Layer):
    hidden: tuple[int, ...] = (32,)
    min_std: float = 1e-2  # data_init floor: a constant channel must not be blown up
    conditional = True

    def __post_init__(self):
        object.__setattr__(self, "hidden", check_widths("ActNorm", "hidden", self.hidden))
        check_real("ActNorm", "min_std", self.min_std, positive=True)

    def init(self, key, event_shape, context_shape=None):
        event_shape = self.check_shapes(event_shape, context_shape)
        c = event_shape[-1]
        shape = (1,) * (len(event_shape) - 1) + (c,)
        params = {"shift": jnp.zeros(shape), "log_scale": jnp.zeros(shape)}
        if context_shape is not None:
            net = MLP(self.hidden, 2 * c, "tanh")
            params["net"] = net.init(key, jnp.zeros(event_size(context_shape)))
        return params

    def data_init(self, params, x, context=None):
        shape = params["shift"].shape
        flat = x.reshape(-1, shape[-1])
        mean = jnp.mean(flat, axis=0).reshape(shape)
        std = jnp.std(flat, axis=0).reshape(shape)
        return params | {"shift": mean, "log_scale": jnp.log(jnp.maximum(std, self.min_std))}

    def bind(self, params, context=None):
        c = params["shift"].shape[-1]
        net = MLP(self.hidden, 2 * c, "tanh") if "net" in params else None
        if (net is None) != (context is None):
            raise ValueError(
                "ActNorm: a context is needed exactly when the layer was initialised with one"
            )

        def shift_log_scale(ctx):
            shift, log_scale = params["shift"], params["log_scale"]
            if net is not None:
                need = params["net"]["params"]["Dense_0"]["kernel"].shape[0]
                if ctx.size != need:
                    raise ValueError(
                        f"ActNorm: each example's context must have {need} values (as at "
                        f"init), got one of shape {ctx.shape}"
                    )
                out = net.apply(params["net"], ctx.reshape(-1))
                shift, log_scale = shift + out[:c], log_scale + out[c:]
            return shift, log_scale

        def forward(z, ctx):
            shift, log_scale = shift_log_scale(ctx)
            return z * jnp.exp(log_scale) + shift, (z.size // c) * jnp.sum(log_scale)

        def inverse(x, ctx):
            shift, log_scale = shift_log_scale(ctx)
            return (x - shift) * jnp.exp(-log_scale), -(x.size // c) * jnp.sum(log_scale)

        return EventBijector(
            forward,
            inverse,
            params["shift"].ndim,
            context=context,
            is_constant_jacobian=net is None,
            name="ActNorm",
        )

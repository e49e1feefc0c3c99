"""Coupling layers: affine (RealNVP), additive (NICE) and rational-quadratic spline couplings.

``y = x`` on the masked (conditioning) coordinates; the others go through an elementwise
distrax bijector whose parameters a conditioner network computes from the masked coordinates
(and the context, for the conditional variant):

- ``"affine"``: ``distrax.ScalarAffine(shift, log_scale)`` with the bounded log-scale
  ``scale_bound * tanh(raw / scale_bound)``; ``scale_bound = 2`` is eq. 6.8's ``exp(2 tanh(s/2))``;
- ``"additive"``: shift only (volume preserving, NICE);
- ``"spline"``: ``distrax.RationalQuadraticSpline`` with ``num_bins`` bins on
  ``[-spline_range, spline_range]`` and identity tails.

Vector events ``(D,)`` use an MLP conditioner (tanh by default, as in the thesis); image events
``(H, W, C)`` a small convolutional network. A vector context is concatenated to the MLP input,
or broadcast over pixels for images; an image context with the same ``H, W`` is concatenated
along channels. Conditioners start at zero output (identity layer for affine/additive).
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import Layer
from flowjax_thesis.bijectors.masks import IMAGE_MASKS, VECTOR_MASKS, coupling_mask
from flowjax_thesis.bijectors.static import Static
from flowjax_thesis.nets import MLP, ConvNet
from flowjax_thesis.nets.checks import check_choice, check_int, check_real, check_widths
from flowjax_thesis.nets.mlp import ACTIVATIONS

TRANSFORMS = ("affine", "additive", "spline")


def bounded_log_scale(raw, bound: float):
    return bound * jnp.tanh(raw / bound)


@dataclass(frozen=True)
class Coupling(Layer):
    transform: str = "affine"
    mask: str | None = None  # default: "half" for vectors, "checkerboard" for images
    parity: int = 0
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    scale_bound: float = 2.0
    num_bins: int = 8
    spline_range: float = 4.0
    conv_width: int = 32
    conv_depth: int = 2
    event_ranks = (1, 3)
    conditional = True

    def __post_init__(self):
        name = "Coupling"
        check_choice(name, "transform", self.transform, TRANSFORMS)
        if self.mask is not None:
            check_choice(name, "mask", self.mask, VECTOR_MASKS + IMAGE_MASKS)
        check_choice(name, "parity", self.parity, (0, 1))
        object.__setattr__(self, "hidden", check_widths(name, "hidden", self.hidden))
        check_choice(name, "activation", self.activation, tuple(sorted(ACTIVATIONS)))
        check_real(name, "scale_bound", self.scale_bound, positive=True)
        check_int(name, "num_bins", self.num_bins, minimum=2)
        check_real(name, "spline_range", self.spline_range, positive=True)
        check_int(name, "conv_width", self.conv_width)
        check_int(name, "conv_depth", self.conv_depth, minimum=0)

    @property
    def params_per_dim(self) -> int:
        return {"affine": 2, "additive": 1, "spline": 3 * self.num_bins + 1}[self.transform]

    def _mask(self, event_shape):
        kind = self.mask or ("half" if len(event_shape) == 1 else "checkerboard")
        valid = VECTOR_MASKS if len(event_shape) == 1 else IMAGE_MASKS + VECTOR_MASKS
        if kind not in valid:
            raise ValueError(f"mask {kind!r} does not apply to event {event_shape}; use {valid}")
        return coupling_mask(kind, event_shape, self.parity)

    def _net(self, event_shape):
        if len(event_shape) == 1:
            return MLP(self.hidden, event_shape[0] * self.params_per_dim, self.activation)
        return ConvNet(
            self.conv_width, event_shape[-1] * self.params_per_dim, self.conv_depth, "relu"
        )

    @staticmethod
    def _net_input(x, context, event_ndims: int):
        if context is None:
            return x
        if event_ndims == 1:
            ctx = context.reshape(context.shape[: context.ndim - 1] + (-1,))
            batch = jnp.broadcast_shapes(x.shape[:-1], ctx.shape[:-1])
            return jnp.concatenate(
                [
                    jnp.broadcast_to(x, batch + x.shape[-1:]),
                    jnp.broadcast_to(ctx, batch + ctx.shape[-1:]),
                ],
                -1,
            )
        # images: an image context (same H, W) is concatenated on channels, a vector broadcast
        spatial = x.shape[-3:-1]
        if context.ndim >= 3 and context.shape[-3:-1] == spatial:
            ctx = context
        else:
            ctx = context[..., None, None, :]
            ctx = jnp.broadcast_to(ctx, ctx.shape[:-3] + spatial + ctx.shape[-1:])
        batch = jnp.broadcast_shapes(x.shape[:-3], ctx.shape[:-3])
        return jnp.concatenate(
            [
                jnp.broadcast_to(x, batch + x.shape[-3:]),
                jnp.broadcast_to(ctx, batch + ctx.shape[-3:]),
            ],
            -1,
        )

    def init(self, key, event_shape, context_shape=None):
        event_shape = self.check_shapes(event_shape, context_shape)
        self._mask(event_shape)  # validates the mask kind for this shape
        context = None if context_shape is None else jnp.zeros(context_shape)
        x = self._net_input(jnp.zeros(event_shape), context, len(event_shape))
        return {"net": self._net(event_shape).init(key, x), "event_shape": Static(event_shape)}

    @staticmethod
    def _net_input_size(net_params) -> int:
        """Features (vectors) or channels (images) the conditioner's first layer reads."""
        first = net_params["params"]
        first = first["Dense_0"] if "Dense_0" in first else first["Conv_0"]
        return int(first["kernel"].shape[-2])

    def _check_context(self, net_params, event_shape, context):
        """A clear error when the context does not match what ``init`` was given."""
        ndims = len(event_shape)
        extra = self._net_input_size(net_params) - event_shape[-1]
        if context is None:
            if extra:
                raise ValueError(
                    f"Coupling was initialised with a context ({extra} extra conditioner "
                    "inputs) and needs one: pass context= to bind (or to the Flow's methods)"
                )
            return
        if not extra:
            raise ValueError(
                "Coupling was initialised without a context (context_shape=None); "
                "do not pass one to bind"
            )
        if ndims == 1:
            got = context.shape[-1] if context.ndim else 1
            what = "features on its last axis"
        elif context.ndim >= 3 and context.shape[-3:-1] == tuple(event_shape[:2]):
            got, what = context.shape[-1], "channels"
        else:
            got, what = (context.shape[-1] if context.ndim else 1), "features on its last axis"
        if got != extra:
            raise ValueError(
                f"Coupling: the context must have {extra} {what} (as at init), "
                f"got context shape {context.shape}"
            )

    def bind(self, params, context=None):
        net_params = params["net"]
        event_shape = params["event_shape"].value
        ndims = len(event_shape)
        context = None if context is None else jnp.asarray(context)
        self._check_context(net_params, event_shape, context)
        ppd = self.params_per_dim

        def inner(p):
            if self.transform == "affine":
                return distrax.ScalarAffine(
                    shift=p[..., 0], log_scale=bounded_log_scale(p[..., 1], self.scale_bound)
                )
            if self.transform == "additive":
                return distrax.ScalarAffine(shift=p[..., 0])
            return distrax.RationalQuadraticSpline(
                p, -self.spline_range, self.spline_range, boundary_slopes="identity"
            )

        net = self._net(event_shape)

        def conditioner(x):
            out = net.apply(net_params, self._net_input(x, context, ndims))
            return out.reshape(out.shape[:-1] + (event_shape[-1], ppd))

        mask = jnp.asarray(self._mask(event_shape))
        return distrax.MaskedCoupling(mask, conditioner, inner, event_ndims=ndims)

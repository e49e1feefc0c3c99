"""Masked autoregressive (MAF) and inverse autoregressive (IAF) flows with MADE conditioners.

Both are built on one map, parallel in its input ``v``::

    P(v)_i = v_i * exp(a_i(v_<i)) + b_i(v_<i),      log|det dP/dv| = sum_i a_i(v_<i)

with ``(b, a) = MADE(v, context)`` and the bounded log-scale ``a = bound * tanh(raw / bound)``.
Its inverse is sequential: ``D`` passes of ``v = (P - b(v)) * exp(-a(v))`` fill in one more
coordinate each.

- IAF (Kingma et al., 2016): ``forward = P`` (sampling is one pass, density needs ``D``);
  the variational-posterior flow of the VAEs.
- MAF (Papamakarios et al., 2017): ``forward = P^{-1}`` i.e. ``inverse = P`` (density is one
  pass, sampling needs ``D``); the density-estimation flow. Built with ``distrax.Inverse``.
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import EventBijector, Layer, event_size
from flowjax_thesis.bijectors.coupling import bounded_log_scale
from flowjax_thesis.nets import MADE
from flowjax_thesis.nets.checks import check_choice, check_real, check_widths
from flowjax_thesis.nets.mlp import ACTIVATIONS


@dataclass(frozen=True)
class Autoregressive(Layer):
    kind: str = "maf"  # "maf" or "iaf"
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    scale_bound: float = 2.0
    event_ranks = (1,)
    conditional = True

    def __post_init__(self):
        name = "Autoregressive"
        check_choice(name, "kind", self.kind, ("maf", "iaf"))
        # a MADE without hidden layers would silently ignore a context: at least one is needed
        hidden = check_widths(name, "hidden", self.hidden, allow_empty=False)
        object.__setattr__(self, "hidden", hidden)
        check_choice(name, "activation", self.activation, tuple(sorted(ACTIVATIONS)))
        check_real(name, "scale_bound", self.scale_bound, positive=True)

    def _made(self, dim):
        return MADE(dim, self.hidden, 2, self.activation)

    def init(self, key, event_shape, context_shape=None):
        (dim,) = self.check_shapes(event_shape, context_shape)
        ctx = None if context_shape is None else jnp.zeros((event_size(context_shape),))
        return {"made": self._made(dim).init(key, jnp.zeros(dim), ctx)}

    def bind(self, params, context=None):
        made_params = params["made"]
        dim = made_params["params"]["MaskedDense_0"]["kernel"].shape[0]
        made = self._made(dim)
        has_context = "Dense_0" in made_params["params"]
        if has_context and context is None:
            raise ValueError("this autoregressive layer is conditional and needs a context")
        if context is not None and not has_context:
            raise ValueError("this autoregressive layer was initialised without a context")

        ctx_size = made_params["params"]["Dense_0"]["kernel"].shape[0] if has_context else 0

        def shift_log_scale(v, ctx):
            flat_ctx = None if ctx is None else ctx.reshape(-1)
            if flat_ctx is not None and flat_ctx.shape[0] != ctx_size:
                raise ValueError(
                    f"{self.kind.upper()}: each example's context must have {ctx_size} values "
                    f"(as at init), got one of shape {ctx.shape}"
                )
            shift, raw = made.apply(made_params, v, flat_ctx)
            return shift, bounded_log_scale(raw, self.scale_bound)

        def parallel(v, ctx):
            shift, log_scale = shift_log_scale(v, ctx)
            return v * jnp.exp(log_scale) + shift, jnp.sum(log_scale)

        def sequential(p, ctx):
            def fill(_, v):
                shift, log_scale = shift_log_scale(v, ctx)
                return (p - shift) * jnp.exp(-log_scale)

            v = jax.lax.fori_loop(0, dim, fill, jnp.zeros_like(p))
            _, log_scale = shift_log_scale(v, ctx)
            return v, -jnp.sum(log_scale)

        bij = EventBijector(parallel, sequential, 1, context=context, name=self.kind.upper())
        return bij if self.kind == "iaf" else distrax.Inverse(bij)

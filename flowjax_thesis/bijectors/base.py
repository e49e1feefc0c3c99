"""The layer protocol and the per-event bijector every custom layer binds to.

A *layer* is a frozen dataclass of hyperparameters with two pure functions::

    params = layer.init(key, event_shape, context_shape=None)
    bijector = layer.bind(params, context=None)          # a distrax.Bijector

Sign convention (as in distrax): ``forward`` maps base -> data (the sampling direction) and
``inverse`` maps data -> base (the density direction). ``event_shape`` is always the shape on the
*data side* of the layer; :meth:`Layer.base_shape` gives the shape on its base side (they differ
only for shape-changing layers such as squeeze).

Layers that need data-dependent initialisation (ActNorm) override :meth:`Layer.data_init`, which
receives a batch on the layer's data side and returns new params.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import distrax
import jax
import jax.numpy as jnp

Params = Any
Shape = tuple[int, ...]


class Layer:
    """Base class of all layers (subclasses are frozen dataclasses)."""

    #: event ranks (len(event_shape)) the layer accepts; () means "any".
    event_ranks: tuple[int, ...] = ()
    #: whether the layer accepts a context (conditional variant).
    conditional: bool = False

    def init(self, key, event_shape: Shape, context_shape: Shape | None = None) -> Params:
        raise NotImplementedError

    def bind(self, params: Params, context=None) -> distrax.Bijector:
        raise NotImplementedError

    def base_shape(self, event_shape: Shape) -> Shape:
        """Shape on the base side of the layer for ``event_shape`` on its data side."""
        return tuple(event_shape)

    def data_init(self, params: Params, x, context=None) -> Params:
        """Data-dependent initialisation from a batch ``x`` on the data side (default: none)."""
        del x, context
        return params

    # -- shared validation -------------------------------------------------------------------
    def check_shapes(self, event_shape: Shape, context_shape: Shape | None) -> Shape:
        event_shape = tuple(int(s) for s in event_shape)
        name = type(self).__name__
        if self.event_ranks and len(event_shape) not in self.event_ranks:
            raise ValueError(
                f"{name} expects an event of rank {' or '.join(map(str, self.event_ranks))} "
                f"(e.g. (D,) for vectors, (H, W, C) for images), got event_shape={event_shape}"
            )
        if any(s < 1 for s in event_shape):
            raise ValueError(f"{name}: event_shape must be positive, got {event_shape}")
        if context_shape is not None and not self.conditional:
            raise ValueError(
                f"{name} is unconditional but was given context_shape={context_shape}; "
                "use a conditional layer (coupling, ActNorm, 1x1 convolution, autoregressive)"
            )
        return event_shape


class EventBijector(distrax.Bijector):
    """A distrax bijector defined by functions on a single event, mapped over batch dims.

    ``forward_fn(x, context) -> (y, log_det)`` and ``inverse_fn(y, context) -> (x, log_det)``
    act on one event (and one context event, or ``None``). Any leading batch dims of ``x`` are
    handled with ``vmap``; a context must have the same leading batch dims as ``x`` (broadcast
    a shared context yourself), so its event shape is whatever follows them.
    """

    def __init__(
        self,
        forward_fn: Callable,
        inverse_fn: Callable | None,
        event_ndims_in: int,
        event_ndims_out: int | None = None,
        context=None,
        is_constant_jacobian: bool = False,
        name: str = "EventBijector",
    ):
        super().__init__(
            event_ndims_in=event_ndims_in,
            event_ndims_out=event_ndims_out,
            is_constant_jacobian=is_constant_jacobian,
        )
        self._forward_fn = forward_fn
        self._inverse_fn = inverse_fn
        self._context = None if context is None else jnp.asarray(context)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def _map(self, fn: Callable, x, ndims: int):
        batch_shape = x.shape[: x.ndim - ndims]
        flat = x.reshape((-1,) + x.shape[x.ndim - ndims :])
        ctx = self._context
        if ctx is None:
            y, ld = jax.vmap(lambda e: fn(e, None))(flat)
        else:
            if ctx.shape[: len(batch_shape)] != batch_shape:
                raise ValueError(
                    f"{self._name}: the context must have the input's batch shape {batch_shape} "
                    f"in front of its event shape; got context shape {ctx.shape}"
                )
            c = ctx.reshape((-1,) + ctx.shape[len(batch_shape) :])
            y, ld = jax.vmap(fn)(flat, c)
        return y.reshape(batch_shape + y.shape[1:]), ld.reshape(batch_shape)

    def forward_and_log_det(self, x):
        return self._map(self._forward_fn, jnp.asarray(x), self.event_ndims_in)

    def inverse_and_log_det(self, y):
        if self._inverse_fn is None:
            raise NotImplementedError(f"{self._name} has no inverse")
        return self._map(self._inverse_fn, jnp.asarray(y), self.event_ndims_out)


def event_size(event_shape: Sequence[int]) -> int:
    return math.prod(event_shape)


# --------------------------------------------------------------------------------------------
# A scalar monotone root solver shared by planar, Sylvester (and anything of the same form).
# --------------------------------------------------------------------------------------------


def solve_tanh_equation(t, c, a, d, iters: int = 60):
    """Solves ``x + c * tanh(a * x + d) = t`` for ``x``, given ``c * a > -1``.

    The left side is strictly increasing in ``x`` (its derivative is ``1 + c a (1 - tanh^2) > 0``)
    and lies within ``c`` of ``x``, so the root is bracketed by ``[t - |c|, t + |c|]``. Bisection
    runs ``iters`` times, then one Newton step: at a converged point that step makes the result's
    derivative with respect to every input equal to the implicit-function derivative, so
    gradients through the inverse are exact.
    """
    lo = t - jnp.abs(c)
    hi = t + jnp.abs(c)

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        above = mid + c * jnp.tanh(a * mid + d) > t
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    x = jax.lax.stop_gradient(0.5 * (lo + hi))
    th = jnp.tanh(a * x + d)
    f = x + c * th - t
    fprime = 1.0 + c * a * (1.0 - th**2)
    return x - f / fprime

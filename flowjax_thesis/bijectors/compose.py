"""Composition of layers: :class:`Chain` (a sequence) and :class:`Repeat` (stacked copies).

Layers are listed as in ``distrax.Chain``: the first one is nearest the data (applied last when
sampling, first when evaluating a density). :class:`Repeat` stores ``n`` copies of one layer's
parameters stacked along a leading axis and applies them with ``jax.lax.scan``, so compile time
does not grow with depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import Layer
from flowjax_thesis.nets.checks import check_int


@dataclass(frozen=True)
class Chain(Layer):
    layers: tuple[Layer, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("Chain needs at least one layer")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"Chain: layers[{i}] must be a Layer (e.g. make_layer(...)), got {layer!r}"
                )

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return any(layer.conditional for layer in self.layers)

    def base_shape(self, event_shape):
        for layer in self.layers:
            event_shape = layer.base_shape(event_shape)
        return tuple(event_shape)

    def init(self, key, event_shape, context_shape=None):
        keys = jax.random.split(key, len(self.layers))
        params = []
        for k, layer in zip(keys, self.layers, strict=True):
            ctx = context_shape if layer.conditional else None
            params.append(layer.init(k, event_shape, ctx))
            event_shape = layer.base_shape(event_shape)
        return tuple(params)

    def bind(self, params, context=None):
        return distrax.Chain(
            [
                layer.bind(p, context if layer.conditional else None)
                for layer, p in zip(self.layers, params, strict=True)
            ]
        )

    def data_init(self, params, x, context=None):
        new = []
        for layer, p in zip(self.layers, params, strict=True):
            ctx = context if layer.conditional else None
            p = layer.data_init(p, x, ctx)
            x = layer.bind(p, ctx).inverse(x)
            new.append(p)
        return tuple(new)


class _Scan(distrax.Bijector):
    def __init__(self, layer: Layer, params, context, event_ndims: int, n: int, unroll: int):
        super().__init__(event_ndims_in=event_ndims)
        self._layer, self._params, self._context = layer, params, context
        self._n, self._unroll = n, unroll

    def _run(self, x, forward: bool):
        batch_shape = x.shape[: x.ndim - self.event_ndims_in]

        def body(carry, p):
            x, total = carry
            bij = self._layer.bind(p, self._context)
            x, ld = bij.forward_and_log_det(x) if forward else bij.inverse_and_log_det(x)
            return (x, total + ld), None

        init = (x, jnp.zeros(batch_shape, x.dtype))
        (x, total), _ = jax.lax.scan(
            body, init, self._params, length=self._n, reverse=forward, unroll=self._unroll
        )
        return x, total

    def forward_and_log_det(self, x):
        return self._run(x, True)

    def inverse_and_log_det(self, y):
        return self._run(y, False)


@dataclass(frozen=True)
class Repeat(Layer):
    """``n`` copies of a shape-preserving ``layer`` applied with ``lax.scan``.

    ``unroll`` is passed to ``lax.scan``: 1 keeps compile time flat in ``n``; larger values trade
    compile time for less loop overhead on tiny layers. On XLA:CPU, convolutions inside a scan
    run an order of magnitude slower than unrolled ones (measured 11-25x by the super-resolution
    work), so image flows on CPU should use ``unroll=n`` or a ``Chain``.
    """

    layer: Layer = None  # type: ignore[assignment]
    n: int = 1
    unroll: int = 1

    def __post_init__(self):
        if not isinstance(self.layer, Layer):
            raise TypeError(f"Repeat needs a Layer, got {self.layer!r}")
        check_int("Repeat", "n", self.n)
        check_int("Repeat", "unroll", self.unroll)

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return self.layer.conditional

    def init(self, key, event_shape, context_shape=None):
        event_shape = tuple(event_shape)
        if self.layer.base_shape(event_shape) != event_shape:
            raise ValueError(f"Repeat needs a shape-preserving layer; {self.layer} changes shapes")
        keys = jax.random.split(key, self.n)
        return jax.vmap(lambda k: self.layer.init(k, event_shape, context_shape))(keys)

    def bind(self, params, context=None):
        first = jax.tree.map(lambda a: a[0], params)
        ndims = self.layer.bind(first, context).event_ndims_in
        return _Scan(self.layer, params, context, ndims, self.n, self.unroll)

    def data_init(self, params, x, context=None):
        def body(x, p):
            p = self.layer.data_init(p, x, context)
            return self.layer.bind(p, context).inverse(x), p

        _, params = jax.lax.scan(body, x, params, length=self.n)
        return params

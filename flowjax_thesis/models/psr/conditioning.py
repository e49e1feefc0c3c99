"""How the low-resolution input reaches the flow steps: a trainable encoder in front of the
layers (:class:`Encoded`) and the choice of per-scale features (:class:`AtScale`).

A PSR flow is a :class:`~flowjax_thesis.flows.Flow` whose context is the LR input ``x`` itself.
Its one layer is ``Encoded(steps, encoder)``: ``bind(params, x)`` computes the features
``encoder(x)`` (an array, or a list with one entry per scale of a multi-scale flow) and binds the
steps to them, so the encoder's parameters live in the flow's params and are trained with it, and
everything ``Flow`` does (shape checks, broadcasting a shared ``x`` over draws, temperature,
``data_init``) applies unchanged. ``AtScale(layer, scales)`` hands a layer the entry ``scales``
of such a list (or the sub-list for a tuple of scales, e.g. for ``MultiScale``).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import Layer


@dataclass(frozen=True)
class Encoded(Layer):
    """``layer`` conditioned on ``encoder(context)`` (a flax module, trained with the flow).

    Params: ``{"encoder": encoder variables, "layer": layer params}``. The encoder must accept a
    context with any leading batch dims and keep them in its output(s).
    """

    layer: Layer = None  # type: ignore[assignment]
    encoder: nn.Module = None  # type: ignore[assignment]

    def __post_init__(self):
        if not isinstance(self.layer, Layer) or not self.layer.conditional:
            raise TypeError(f"Encoded needs a conditional Layer, got {self.layer!r}")
        if not isinstance(self.encoder, nn.Module):
            raise TypeError(f"Encoded needs a flax.linen encoder Module, got {self.encoder!r}")

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return True

    def base_shape(self, event_shape):
        return self.layer.base_shape(event_shape)

    def init(self, key, event_shape, context_shape=None):
        if context_shape is None:
            raise ValueError("Encoded needs a context_shape (the shape of the encoder's input)")
        k_enc, k_layer = jax.random.split(key)
        dummy = jnp.zeros(tuple(context_shape))
        enc = self.encoder.init(k_enc, dummy)
        features = jax.eval_shape(self.encoder.apply, enc, dummy)
        feature_shape = jax.tree.map(lambda a: tuple(a.shape), features)
        return {"encoder": enc, "layer": self.layer.init(k_layer, event_shape, feature_shape)}

    def encode(self, params, context):
        return self.encoder.apply(params["encoder"], context)

    def bind(self, params, context=None):
        return self.layer.bind(params["layer"], self.encode(params, context))

    def data_init(self, params, x, context=None):
        layer = self.layer.data_init(params["layer"], x, self.encode(params, context))
        return params | {"layer": layer}


@dataclass(frozen=True)
class AtScale(Layer):
    """``layer`` given entry ``scales`` of a per-scale context list (a list of entries for a
    tuple of scales)."""

    layer: Layer = None  # type: ignore[assignment]
    scales: int | tuple[int, ...] = 0

    def __post_init__(self):
        if not isinstance(self.layer, Layer):
            raise TypeError(f"AtScale needs a Layer, got {self.layer!r}")

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return self.layer.conditional

    def _pick(self, context):
        if context is None or not self.layer.conditional:
            return None
        if not isinstance(context, (list, tuple)):
            raise ValueError(
                f"AtScale({self.scales}) needs a per-scale context list, got {type(context)}"
            )
        if isinstance(self.scales, int):
            return context[self.scales]
        return [context[i] for i in self.scales]

    def base_shape(self, event_shape):
        return self.layer.base_shape(event_shape)

    def init(self, key, event_shape, context_shape=None):
        # a list of shapes: one entry per scale (a bare tuple would be a single shape)
        return self.layer.init(key, event_shape, self._pick(context_shape))

    def bind(self, params, context=None):
        return self.layer.bind(params, self._pick(context))

    def data_init(self, params, x, context=None):
        return self.layer.data_init(params, x, self._pick(context))

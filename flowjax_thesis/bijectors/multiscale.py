"""The multi-scale architecture of RealNVP / Glow as one layer.

In the density direction (data -> base), level ``l`` squeezes (``(H, W, C) -> (H/2, W/2, 4C)``),
applies its steps, and, except at the last level, factors out half of the channels, which go
straight to the base; the other half continues to level ``l + 1``. Each level then puts the
factored-out half back beside what the deeper levels returned and unsqueezes, so the base side
has the data's shape ``(H, W, C)`` (a fixed rearrangement of the usual flat latent) and the
layer is shape preserving. ``forward`` (base -> data) runs the same in reverse.

``levels`` is a tuple of step tuples, one per level; steps are any shape-preserving layers
(``Repeat`` of a Glow step, say). A context is passed unchanged to every conditional step, or,
if it is a list, entry ``l`` goes to level ``l`` (for per-scale features as in chapter 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.base import Layer
from flowjax_thesis.bijectors.compose import Chain
from flowjax_thesis.bijectors.squeeze import Squeeze, squeeze, unsqueeze


def _level_shapes(event_shape, num_levels: int):
    """Shapes seen by each level's steps, and the size factored out after each level."""
    shapes, factored = [], []
    h, w, c = event_shape
    for level in range(num_levels):
        h, w, c = Squeeze().base_shape((h, w, c))
        shapes.append((h, w, c))
        if level < num_levels - 1:
            if c % 2:
                raise ValueError(f"multi-scale split needs an even channel count, got {c}")
            factored.append(h * w * (c // 2))
            c = c // 2
    return shapes, factored


@dataclass(frozen=True)
class MultiScale(Layer):
    levels: tuple[tuple[Layer, ...], ...] = ()
    event_ranks = (3,)

    def __post_init__(self):
        levels = tuple(tuple(steps) for steps in self.levels)
        if not levels or not all(levels):
            raise ValueError("MultiScale needs at least one level, each with at least one step")
        for i, steps in enumerate(levels):
            for j, step in enumerate(steps):
                if not isinstance(step, Layer):
                    raise TypeError(f"MultiScale: levels[{i}][{j}] must be a Layer, got {step!r}")
        object.__setattr__(self, "levels", levels)

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return any(step.conditional for steps in self.levels for step in steps)

    def base_shape(self, event_shape):
        _level_shapes(event_shape, len(self.levels))
        return tuple(event_shape)

    def _chains(self):
        return [Chain(steps) for steps in self.levels]

    @staticmethod
    def _context_for(context, level):
        return context[level] if isinstance(context, list) else context

    def init(self, key, event_shape, context_shape=None):
        event_shape = self.check_shapes(event_shape, None)
        shapes, _ = _level_shapes(event_shape, len(self.levels))
        keys = jax.random.split(key, len(self.levels))
        params = []
        for level, (k, chain, shape) in enumerate(zip(keys, self._chains(), shapes, strict=True)):
            ctx = self._context_for(context_shape, level) if chain.conditional else None
            params.append(chain.init(k, shape, ctx))
        return tuple(params)

    def bind(self, params, context=None):
        bijectors = [
            chain.bind(p, self._context_for(context, level) if chain.conditional else None)
            for level, (chain, p) in enumerate(zip(self._chains(), params, strict=True))
        ]
        return _MultiScaleBijector(bijectors)

    def data_init(self, params, x, context=None):
        new = []
        for level, (chain, p) in enumerate(zip(self._chains(), params, strict=True)):
            ctx = self._context_for(context, level) if chain.conditional else None
            h = squeeze(x)
            p = chain.data_init(p, h, ctx)
            h = chain.bind(p, ctx).inverse(h)
            x = h[..., h.shape[-1] // 2 :]
            new.append(p)
        return tuple(new)


class _MultiScaleBijector(distrax.Bijector):
    def __init__(self, bijectors):
        super().__init__(event_ndims_in=3)
        self._bijectors = bijectors

    def _inverse(self, y, level):
        h, total = self._bijectors[level].inverse_and_log_det(squeeze(y))
        if level + 1 < len(self._bijectors):
            c = h.shape[-1] // 2
            rest, ld = self._inverse(h[..., c:], level + 1)
            h, total = jnp.concatenate([h[..., :c], rest], -1), total + ld
        return unsqueeze(h), total

    def _forward(self, x, level):
        h = squeeze(x)
        total = jnp.zeros(x.shape[:-3], x.dtype)
        if level + 1 < len(self._bijectors):
            c = h.shape[-1] // 2
            rest, total = self._forward(h[..., c:], level + 1)
            h = jnp.concatenate([h[..., :c], rest], -1)
        h, ld = self._bijectors[level].forward_and_log_det(h)
        return unsqueeze(h), total + ld

    def inverse_and_log_det(self, y):
        return self._inverse(y, 0)

    def forward_and_log_det(self, x):
        return self._forward(x, 0)

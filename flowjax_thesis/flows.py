"""A flow: a standard-normal base distribution and a stack of layers.

``forward`` maps base -> data (sampling), ``inverse`` maps data -> base (density). Layers are
listed as in ``distrax.Chain``: the first is nearest the data. Repeated identical layers go in a
:class:`~flowjax_thesis.bijectors.Repeat` (stacked params, ``lax.scan``).

Everything is a pure function of a params pytree::

    flow = Flow((Repeat(Planar(), 32),), event_shape=(2,))
    params = flow.init(jax.random.PRNGKey(0))
    x, log_q = flow.sample_and_log_prob(params, key, 128)
    flow.log_prob(params, x)                       # = log_q
    flow.distribution(params)                      # a distrax.Transformed
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import distrax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.bijectors import Chain, Layer, Repeat, make_layer


@dataclass(frozen=True)
class Flow:
    layers: tuple[Layer, ...]
    event_shape: tuple[int, ...]
    context_shape: tuple[int, ...] | None = None

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("a Flow needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Flow layers must be Layer instances, got {layer!r}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "event_shape", tuple(int(s) for s in self.event_shape))
        if self.context_shape is not None:
            object.__setattr__(self, "context_shape", tuple(int(s) for s in self.context_shape))
            if not self.chain.conditional:
                raise ValueError("context_shape was given but no layer of the flow is conditional")
        self.chain.base_shape(self.event_shape)  # validates shapes through the layers early

    @property
    def chain(self) -> Chain:
        return Chain(self.layers)

    @property
    def base_shape(self) -> tuple[int, ...]:
        return self.chain.base_shape(self.event_shape)

    @property
    def conditional(self) -> bool:
        return self.context_shape is not None

    # -- params -------------------------------------------------------------------------------
    def init(self, key) -> tuple:
        return self.chain.init(key, self.event_shape, self.context_shape)

    def data_init(self, params, x, context=None):
        """Data-dependent initialisation (ActNorm) from a batch ``x``."""
        x, context = self.check_inputs(x, context)
        return self.chain.data_init(params, x, context)

    # -- distributions ------------------------------------------------------------------------
    def base_distribution(self, temperature: float = 1.0) -> distrax.Distribution:
        shape = self.base_shape
        normal = distrax.Normal(jnp.zeros(shape), temperature * jnp.ones(shape))
        return distrax.Independent(normal, reinterpreted_batch_ndims=len(shape))

    def bijector(self, params, context=None) -> distrax.Bijector:
        return self.chain.bind(params, context)

    def distribution(self, params, context=None, temperature: float = 1.0) -> distrax.Transformed:
        """The flow as a ``distrax.Transformed`` (context fixed to ``context``)."""
        return distrax.Transformed(
            self.base_distribution(temperature), self.bijector(params, context)
        )

    def log_prob(self, params, x, context=None):
        """``log p(x)`` for ``x`` of shape ``batch + event_shape``."""
        x, context = self.check_inputs(x, context)
        z, log_det = self.bijector(params, context).inverse_and_log_det(x)
        return self.base_distribution().log_prob(z) + log_det

    def sample_and_log_prob(
        self, params, key, n: int | None = None, context=None, temperature: float = 1.0
    ):
        """``n`` samples (or one if ``n`` is None) and their log-density under the flow.

        At ``temperature`` T the base is N(0, T^2 I) and the log-density is that of the tempered
        flow (at T = 0 the samples are the flow's image of the origin and the log-density is
        not finite). A context without batch dims is shared by all samples; otherwise its
        leading dim must be ``n``.
        """
        context = self._sample_context(context, n)
        base = self.base_distribution(temperature)
        shape = () if n is None else (n,)
        z = base.sample(seed=key, sample_shape=shape)
        x, log_det = self.bijector(params, context).forward_and_log_det(z)
        return x, base.log_prob(z) - log_det

    def sample(self, params, key, n: int | None = None, context=None, temperature: float = 1.0):
        return self.sample_and_log_prob(params, key, n, context, temperature)[0]

    # -- input checks (shapes are static, so these cost nothing under jit) ---------------------
    def check_inputs(self, x, context=None):
        """Validates data (and context) shapes against the flow; returns them as arrays."""
        x = jnp.asarray(x)
        k = len(self.event_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k :]) != self.event_shape:
            raise ValueError(
                f"expected data of shape (..., {', '.join(map(str, self.event_shape))}) "
                f"(batch dims then the event shape {self.event_shape}), got {tuple(x.shape)}"
            )
        if self.context_shape is None:
            if context is not None:
                raise ValueError("this flow is unconditional; do not pass a context")
            return x, None
        if context is None:
            raise ValueError(
                f"this flow is conditional: pass a context of shape (..., {self.context_shape})"
            )
        context = jnp.asarray(context)
        batch = x.shape[: x.ndim - k]
        expected = batch + self.context_shape
        if context.shape != expected:
            raise ValueError(
                f"expected a context of shape {expected} (the data's batch shape {batch} then "
                f"context_shape {self.context_shape}), got {tuple(context.shape)}"
            )
        return x, context

    def _sample_context(self, context, n):
        if self.context_shape is None:
            if context is not None:
                raise ValueError("this flow is unconditional; do not pass a context")
            return None
        if context is None:
            raise ValueError(
                f"this flow is conditional: pass a context of shape {self.context_shape}"
            )
        context = jnp.asarray(context)
        if context.shape == self.context_shape and n is not None:
            return jnp.broadcast_to(context, (n,) + self.context_shape)
        expected = ((n,) if n is not None else ()) + self.context_shape
        if context.shape != expected:
            raise ValueError(f"expected a context of shape {expected}, got {tuple(context.shape)}")
        return context


# -- ready-made flows -------------------------------------------------------------------------


def planar_flow(dim: int, num_layers: int, unroll: int = 1) -> Flow:
    """``num_layers`` planar layers (the blog's and Rezende & Mohamed's VI flow)."""
    return Flow((Repeat(make_layer("planar"), num_layers, unroll=unroll),), (dim,))


def realnvp_flow(
    dim: int,
    num_layers: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    context_shape: tuple[int, ...] | None = None,
    transform: str = "affine",
    unroll: int = 1,
) -> Flow:
    """``num_layers`` couplings alternating which half is transformed (RealNVP).

    Pairs of couplings with opposite parity are stacked in a ``Repeat``; an odd count adds one
    more coupling.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if dim < 2:
        raise ValueError(f"RealNVP needs at least 2 dimensions, got {dim}")
    make = lambda parity: make_layer(
        f"{transform}_coupling", parity=parity, hidden=tuple(hidden), activation=activation
    )
    layers: list[Layer] = []
    if num_layers >= 2:
        layers.append(Repeat(Chain((make(0), make(1))), num_layers // 2, unroll=unroll))
    if num_layers % 2:
        layers.append(make(0))
    return Flow(tuple(layers), (dim,), context_shape)


def check_finite(x, name: str = "data") -> np.ndarray:
    """Host-side check for user data: a clear error on NaN or inf (never silently trained on)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(arr.shape[0], -1) if arr.ndim else bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite values (NaN or inf), e.g. in rows "
            f"{rows[:5].tolist()}; clean or drop them before training"
        )
    return arr

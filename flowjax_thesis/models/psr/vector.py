"""The vector PSR flow (MLP encoder and couplings; the student of section 6.4)."""

from __future__ import annotations

from dataclasses import dataclass

import distrax
import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors import ActNorm, Chain, Conv1x1, Coupling, Repeat
from flowjax_thesis.flows import Flow
from flowjax_thesis.nets import MLP


def _check_batch(y, x, y_shape, x_shape, what_y="y", what_x="x"):
    y = jnp.asarray(y)
    x = jnp.asarray(x)
    ky, kx = len(y_shape), len(x_shape)
    if y.ndim < ky or tuple(y.shape[y.ndim - ky :]) != tuple(y_shape):
        raise ValueError(
            f"expected {what_y} of shape (..., {', '.join(map(str, y_shape))}), got {y.shape}"
        )
    if x.ndim < kx or tuple(x.shape[x.ndim - kx :]) != tuple(x_shape):
        raise ValueError(
            f"expected {what_x} of shape (..., {', '.join(map(str, x_shape))}), got {x.shape}"
        )
    if y.shape[: y.ndim - ky] != x.shape[: x.ndim - kx]:
        raise ValueError(
            f"{what_y} and {what_x} must have the same batch shape, got {y.shape[: y.ndim - ky]} "
            f"and {x.shape[: x.ndim - kx]}"
        )
    return y, x


def _tempered_normal(shape, temperature):
    return distrax.Independent(
        distrax.Normal(jnp.zeros(shape), temperature * jnp.ones(shape)), len(shape)
    )


@dataclass(frozen=True)
class VectorPSR:
    """Conditional PSR flow ``p(y | x)`` for ``y in R^D`` and ``x in R^d``.

    ``h`` is an MLP encoder of ``x`` to ``features`` units; each of the ``num_steps`` steps is a
    conditional ActNorm, a conditional invertible linear map (the 1x1 convolution of a vector)
    and two conditional affine couplings (opposite halves) with MLP conditioners and the bounded
    scale of eq. 6.8.
    """

    event_dim: int
    context_dim: int
    num_steps: int = 8
    hidden: tuple[int, ...] = (64, 64)
    encoder_hidden: tuple[int, ...] = (64,)
    features: int = 16
    cond_hidden: tuple[int, ...] = (32,)
    scale_bound: float = 2.0
    activation: str = "tanh"

    def __post_init__(self):
        if self.event_dim < 2:
            raise ValueError(f"VectorPSR needs event_dim >= 2 (couplings), got {self.event_dim}")
        if self.context_dim < 1:
            raise ValueError(f"context_dim must be >= 1, got {self.context_dim}")

    @property
    def encoder(self) -> MLP:
        return MLP(tuple(self.encoder_hidden), self.features, self.activation, zero_init=False)

    @property
    def flow(self) -> Flow:
        coupling = lambda parity: Coupling(
            "affine",
            mask="half",
            parity=parity,
            hidden=tuple(self.hidden),
            activation=self.activation,
            scale_bound=self.scale_bound,
        )
        step = Chain(
            (
                ActNorm(hidden=tuple(self.cond_hidden)),
                Conv1x1(hidden=tuple(self.cond_hidden)),
                coupling(0),
                coupling(1),
            )
        )
        return Flow((Repeat(step, self.num_steps),), (self.event_dim,), (self.features,))

    def init(self, key):
        k1, k2 = jax.random.split(key)
        return {
            "encoder": self.encoder.init(k1, jnp.zeros(self.context_dim)),
            "flow": self.flow.init(k2),
        }

    def check(self, y, x):
        return _check_batch(y, x, (self.event_dim,), (self.context_dim,), "y", "context x")

    def encode(self, params, x):
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.context_dim:
            raise ValueError(
                f"expected a context x of shape (..., {self.context_dim}), got {x.shape}"
            )
        return self.encoder.apply(params["encoder"], x)

    def data_init(self, params, y, x):
        y, x = self.check(y, x)
        return params | {"flow": self.flow.data_init(params["flow"], y, self.encode(params, x))}

    def log_prob(self, params, y, x):
        """``log p(y | x)`` for ``y`` of shape ``batch + (D,)`` and ``x`` of ``batch + (d,)``."""
        y, x = self.check(y, x)
        return self.flow.log_prob(params["flow"], y, self.encode(params, x))

    def sample_and_log_prob(self, params, key, x, temperature: float = 1.0):
        """One sample of ``y`` per row of ``x`` (shape ``(n, d)``) at ``temperature``."""
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[-1] != self.context_dim:
            raise ValueError(
                f"expected a context x of shape (n, {self.context_dim}), got {x.shape}"
            )
        ctx = self.encode(params, x)
        return self.flow.sample_and_log_prob(params["flow"], key, x.shape[0], ctx, temperature)

    def sample(self, params, key, x, temperature: float = 1.0):
        return self.sample_and_log_prob(params, key, x, temperature)[0]

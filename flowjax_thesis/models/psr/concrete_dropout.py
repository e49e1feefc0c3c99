"""Concrete dropout (Gal, Hron & Kendall, 2017): the dropout baseline of the thesis's Table 11.

Every hidden layer learns its own dropout probability ``p``. The Bernoulli mask is relaxed with
the concrete (relaxed Bernoulli) distribution at temperature ``t`` so that ``p`` gets gradients::

    drop = sigmoid((log p - log(1 - p) + log u - log(1 - u)) / t),   u ~ U(0, 1)
    x_tilde = x * (1 - drop) / (1 - p)

(``drop > 1/2`` exactly when the logistic noise exceeds ``-logit p``, which has probability
``p`` at every temperature). The loss is the Gaussian NLL of the data plus, per layer with input
size ``K`` and weight matrix ``W`` (eq. 3 of the paper, as in the authors' code)::

    l^2 / N * ||W||^2 / (1 - p)   +   2 / N * K * (p log p + (1 - p) log(1 - p))

``l`` the prior length-scale, ``N`` the number of training points. The first term favours small
``p``, the second (the negative entropy of the Bernoulli, scaled by 1/N) pulls ``p`` towards 1/2;
with more data the likelihood dominates and the learned rates fall.

:class:`ConcreteDropoutStudent` has the interface of the fixed-rate
:class:`~flowjax_thesis.models.psr.baselines.DropoutStudent` (``predictive``, ``predict``,
``sample``, ``log_prob`` by Monte Carlo over masks); :meth:`ConcreteDropoutStudent.rates` reads
the learned probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax_thesis.models.psr.baselines import DropoutStudent

EPS = 1e-7


def concrete_mask(key, p, shape, temperature: float = 0.1):
    """The relaxed keep-mask ``1 - drop`` of the module docstring (values in (0, 1))."""
    u = jax.random.uniform(key, shape)
    logit = (
        jnp.log(p + EPS) - jnp.log1p(-p + EPS) + jnp.log(u + EPS) - jnp.log1p(-u + EPS)
    ) / temperature
    return 1.0 - jax.nn.sigmoid(logit)


class ConcreteDropoutDense(nn.Module):
    """Concrete dropout on the input, then a dense layer. Parameter ``logit_p`` (a scalar)."""

    features: int
    init_rate: float = 0.1
    temperature: float = 0.1

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        logit_p = self.param(
            "logit_p", nn.initializers.constant(math.log(self.init_rate / (1 - self.init_rate))), ()
        )
        if not deterministic:
            p = jax.nn.sigmoid(logit_p)
            keep = concrete_mask(self.make_rng("dropout"), p, x.shape, self.temperature)
            x = x * keep / (1.0 - p)
        return nn.Dense(self.features, name="dense")(x)


class ConcreteDropoutNet(nn.Module):
    """MLP with concrete dropout before every layer after the first (on every hidden layer's
    output, as :class:`~flowjax_thesis.models.psr.baselines.DropoutNet`); outputs a mean and a
    log-variance per output dim."""

    hidden: tuple[int, ...]
    out: int
    init_rate: float = 0.1
    temperature: float = 0.1

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        x = nn.relu(nn.Dense(self.hidden[0], name="input")(x))
        widths = tuple(self.hidden[1:]) + (2 * self.out,)
        for i, width in enumerate(widths):
            layer = ConcreteDropoutDense(width, self.init_rate, self.temperature, name=f"cd_{i}")
            x = layer(x, deterministic)
            if i < len(widths) - 1:
                x = nn.relu(x)
        return x[..., : self.out], jnp.clip(x[..., self.out :], -10.0, 5.0)


def concrete_regularizer(params, n: int, length_scale: float = 1e-4):
    """Sum over concrete-dropout layers of the module docstring's regulariser."""
    total = 0.0
    for name, layer in params["params"].items():
        if not name.startswith("cd_"):
            continue
        p = jax.nn.sigmoid(layer["logit_p"])
        kernel = layer["dense"]["kernel"]
        k = kernel.shape[0]
        weight = length_scale**2 / n * jnp.sum(kernel**2) / (1.0 - p)
        entropy = p * jnp.log(p + EPS) + (1.0 - p) * jnp.log(1.0 - p + EPS)
        total = total + weight + 2.0 / n * k * entropy
    return total


@dataclass(frozen=True)
class ConcreteDropoutStudent(DropoutStudent):
    """Concrete-dropout regression network: ``n_train`` (the ``N`` of the regulariser) is
    required; ``rate`` is the initial dropout probability of every layer."""

    n_train: int = 0
    length_scale: float = 1e-4
    temperature: float = 0.1

    def __post_init__(self):
        if isinstance(self.n_train, bool) or not isinstance(self.n_train, int) or self.n_train < 1:
            raise ValueError(
                f"ConcreteDropoutStudent needs n_train, the number of training points (a positive "
                f"int), got {self.n_train!r}"
            )
        if not 0.0 < self.rate < 1.0:
            raise ValueError(
                f"rate (the initial dropout probability) must be in (0, 1), got {self.rate}"
            )
        if len(self.hidden) < 1:
            raise ValueError("ConcreteDropoutStudent needs at least one hidden layer")

    @property
    def net(self) -> ConcreteDropoutNet:  # type: ignore[override]
        return ConcreteDropoutNet(tuple(self.hidden), self.out_dim, self.rate, self.temperature)

    def loss(self, params, batch, key):
        """Gaussian NLL of ``batch = (y, x)`` (one relaxed mask per example) plus the
        regulariser of the module docstring."""
        nll = super().loss(params, batch, key)
        return nll + concrete_regularizer(params, self.n_train, self.length_scale)

    def rates(self, params) -> dict[str, float]:
        """The learned dropout probability of each layer."""
        return {
            name: float(jax.nn.sigmoid(layer["logit_p"]))
            for name, layer in params["params"].items()
            if name.startswith("cd_")
        }


__all__ = [
    "concrete_mask",
    "ConcreteDropoutDense",
    "ConcreteDropoutNet",
    "concrete_regularizer",
    "ConcreteDropoutStudent",
]

"""Baseline students: a Gaussian process with a Matern kernel and an MC-dropout network."""

from __future__ import annotations

import math
from dataclasses import dataclass

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class GPStudent:
    """scikit-learn ``GaussianProcessRegressor`` with ``C * Matern(nu) + White`` kernel, one GP
    for all output dims (shared kernel). ``predict`` gives the predictive mean; ``sample``
    draws ``mean + std * e`` per output dim (std includes the fitted noise)."""

    def __init__(self, nu: float = 1.5, seed: int = 0):
        self.nu, self.seed = nu, seed
        self.gp = None

    def fit(self, x, y):
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        kernel = ConstantKernel(1.0) * Matern(length_scale=1.0, nu=self.nu) + WhiteKernel(0.5)
        self.gp = GaussianProcessRegressor(
            kernel, normalize_y=True, random_state=self.seed, n_restarts_optimizer=0
        )
        self.gp.fit(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return self

    def _mean_std(self, x):
        if self.gp is None:
            raise RuntimeError("GPStudent: call fit first")
        mean, std = self.gp.predict(np.asarray(x, np.float64), return_std=True)
        mean = mean.reshape(len(x), -1)
        std = np.broadcast_to(np.asarray(std).reshape(len(x), -1), mean.shape)
        return mean, std

    def predict(self, x):
        return self._mean_std(x)[0]

    def sample(self, rng: np.random.Generator, x):
        mean, std = self._mean_std(x)
        return mean + std * rng.standard_normal(mean.shape)

    def log_prob(self, y, x):
        from scipy.stats import norm

        mean, std = self._mean_std(x)
        return np.sum(norm.logpdf(np.asarray(y), mean, std), -1)


class DropoutNet(nn.Module):
    """MLP with dropout after every hidden layer; outputs a mean and a log-variance per dim
    (heteroscedastic Gaussian likelihood, as in Gal & Ghahramani's MC dropout regression)."""

    hidden: tuple[int, ...]
    out: int
    rate: float = 0.1

    @nn.compact
    def __call__(self, x, deterministic: bool = False):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
            x = nn.Dropout(self.rate, deterministic=deterministic)(x)
        out = nn.Dense(2 * self.out)(x)
        return out[..., : self.out], jnp.clip(out[..., self.out :], -10.0, 5.0)


@dataclass(frozen=True)
class DropoutStudent:
    """MC-dropout regression network (flax) trained on the Gaussian NLL with dropout on.

    ``predict`` averages ``num_passes`` stochastic passes; ``sample`` takes one stochastic pass
    per input and adds the predicted noise (a draw from the MC-dropout predictive)."""

    out_dim: int
    hidden: tuple[int, ...] = (64, 64)
    rate: float = 0.1

    @property
    def net(self) -> DropoutNet:
        return DropoutNet(tuple(self.hidden), self.out_dim, self.rate)

    def init(self, key, in_dim: int):
        return self.net.init({"params": key}, jnp.zeros((1, in_dim)), deterministic=True)

    def predictive(self, params, key, x) -> distrax.Distribution:
        """The Gaussian of one stochastic pass (dropout on) for each row of ``x``."""
        mean, log_var = self.net.apply(params, x, rngs={"dropout": key})
        return distrax.MultivariateNormalDiag(mean, jnp.exp(0.5 * log_var))

    def loss(self, params, batch, key):
        """The Gaussian negative log-likelihood of ``batch = (y, x)`` with dropout on."""
        y, x = batch
        return -jnp.mean(self.predictive(params, key, x).log_prob(y))

    def passes(self, params, key, x, num_passes: int):
        keys = jax.random.split(key, num_passes)
        return jax.vmap(lambda k: self.net.apply(params, x, rngs={"dropout": k}))(keys)

    def predict(self, params, key, x, num_passes: int = 50):
        mean, _ = self.passes(params, key, x, num_passes)
        return jnp.mean(mean, 0)

    def sample(self, params, key, x):
        k1, k2 = jax.random.split(key)
        return self.predictive(params, k1, x).sample(seed=k2)

    def log_prob(self, params, key, y, x, num_passes: int = 50):
        """MC estimate of the predictive log-density (log-mean-exp over dropout passes)."""
        keys = jax.random.split(key, num_passes)
        lp = jax.vmap(lambda k: self.predictive(params, k, x).log_prob(y))(keys)
        return jax.nn.logsumexp(lp, 0) - math.log(num_passes)

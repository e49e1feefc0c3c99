"""Dimension-changing (compressive) flow steps: PPCA, linear VAE, Gaussian VAE (MLP and conv).

A step maps ``z'`` (its data side, shape ``event_shape``, size ``D``) to ``z`` (its base side,
shape ``base_shape(event_shape)``, size ``d < D``) and can generate ``z'`` from ``z``. Like the
foundation's layers it is a frozen dataclass of hyperparameters with pure functions of a params
pytree:

- ``init(key, event_shape) -> params``; ``base_shape(event_shape)`` (validates ``d < D``);
- ``log_marginal(params, zp, key, num_samples=1) -> (...,)``: ``log p(z')`` when the step's base
  is ``z ~ N(0, I_d)``; exact for PPCA and the linear VAE (both give the PPCA marginal of their
  decoder), an ELBO (``num_samples=1``) or importance-weighted bound otherwise;
- ``objective(params, zp, key) -> (...,)``: the training term (PPCA: the exact marginal; linear
  VAE: the closed-form ELBO of eq. 5.11, tight when the encoder is the analytic posterior; VAE:
  ``-KL(q || N(0, I)) + log p(z' | z)`` with one reparameterised ``z ~ q``);
- ``encode(params, zp, key) -> (z, V)``: ``z ~ q(z | z')`` and the likelihood contribution
  ``V = log p(z' | z) - log q(z | z')`` of eq. 5.13, for steps followed by more layers; then
  ``log p(z') >= E[log p_Z(z) + V]``;
- ``decode(params, z, key=None, temperature=1.0)``: ``z' ~ p(z' | z)`` (the mean if no key).

Class attributes ``exact`` (``log_marginal`` is exact) and ``kind`` (a short label) let a
:class:`~flowjax_thesis.models.compressive.flow.CompressiveFlow` report which of its terms are
exact and which are bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors.static import Static
from flowjax_thesis.models.compressive import ppca
from flowjax_thesis.nets import MLP
from flowjax_thesis.nets.patch_conv import Conv

LOG_2PI = math.log(2.0 * math.pi)


def _size(shape) -> int:
    return int(math.prod(shape))


def _flat(x, event_shape):
    k = len(event_shape)
    return x.reshape(x.shape[: x.ndim - k] + (-1,))


def diag_normal_log_prob(x, mean, log_scale):
    """Sum over the last axis of ``log N(x; mean, exp(log_scale)^2)``."""
    z = (x - mean) * jnp.exp(-log_scale)
    return -0.5 * jnp.sum(z * z + 2.0 * log_scale + LOG_2PI, -1)


def std_normal_log_prob(z):
    return -0.5 * jnp.sum(z * z + LOG_2PI, -1)


def bounded(raw, bound: float = 6.0):
    """Soft bound of a log-scale to ``(-bound, bound)``."""
    return bound * jnp.tanh(raw / bound)


class CompressiveStep:
    """Base class (see the module docstring). Subclasses are frozen dataclasses."""

    exact: bool = False
    kind: str = "step"

    def base_shape(self, event_shape) -> tuple[int, ...]:
        raise NotImplementedError

    def init(self, key, event_shape):
        raise NotImplementedError

    def data_init(self, params, zp):
        """Data-dependent initialisation from a batch on the data side (default: none)."""
        del zp
        return params

    def log_marginal(self, params, zp, key, num_samples: int = 1):
        raise NotImplementedError

    def objective(self, params, zp, key):
        return self.log_marginal(params, zp, key)

    def encode(self, params, zp, key):
        raise NotImplementedError

    def decode(self, params, z, key=None, temperature: float = 1.0):
        raise NotImplementedError

    def encode_mean(self, params, zp):
        raise NotImplementedError


# ------------------------------------------------------------------------------------------
# Linear-Gaussian steps
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PPCAStep(CompressiveStep):
    """PPCA (section 5.4.1) on the flattened input: exact marginal, analytic posterior.

    Params ``{"A": (D, d), "mu": (D,), "log_sigma2": (), "event_shape": Static}``. Trained by
    gradients or by the closed-form mini-batch updates of
    :func:`~flowjax_thesis.models.compressive.training.ppca_flow_transition`.
    """

    latent_size: int = 2
    exact = True
    kind = "ppca"

    def base_shape(self, event_shape):
        ppca.check_latent_size(self.latent_size, _size(event_shape), type(self).__name__)
        return (self.latent_size,)

    def init(self, key, event_shape):
        self.base_shape(event_shape)
        D, d = _size(event_shape), self.latent_size
        A = jax.random.normal(key, (D, d)) / math.sqrt(D)
        return {
            "A": A,
            "mu": jnp.zeros(D),
            "log_sigma2": jnp.zeros(()),
            "event_shape": Static(tuple(event_shape)),
        }

    @staticmethod
    def _core(params):
        return {k: params[k] for k in ("A", "mu", "log_sigma2")}

    def data_init(self, params, zp):
        x = _flat(jnp.asarray(zp), params["event_shape"].value)
        return params | ppca.fit_ppca(x.reshape(-1, x.shape[-1]), self.latent_size)

    def log_marginal(self, params, zp, key=None, num_samples: int = 1):
        del key, num_samples
        return ppca.log_prob(self._core(params), _flat(zp, params["event_shape"].value))

    def encode_mean(self, params, zp):
        return ppca.posterior(self._core(params), _flat(zp, params["event_shape"].value))[0]

    def encode(self, params, zp, key):
        """``z`` from the exact posterior; then ``log N(z) + V = log p(z')`` for every ``z``."""
        core = self._core(params)
        x = _flat(zp, params["event_shape"].value)
        mean, cov = ppca.posterior(core, x)
        chol = jnp.linalg.cholesky(cov)
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        z = mean + eps @ chol.T
        sigma = jnp.exp(0.5 * core["log_sigma2"])
        recon = z @ core["A"].T + core["mu"]
        log_p = diag_normal_log_prob(x, recon, jnp.full_like(x, jnp.log(sigma)))
        log_q = std_normal_log_prob(eps) - jnp.sum(jnp.log(jnp.diag(chol)))
        return z, log_p - log_q

    def decode(self, params, z, key=None, temperature: float = 1.0):
        shape = params["event_shape"].value
        x = z @ params["A"].T + params["mu"]
        if key is not None:
            sigma = jnp.exp(0.5 * params["log_sigma2"])
            x = x + temperature * sigma * jax.random.normal(key, x.shape, x.dtype)
        return x.reshape(x.shape[:-1] + shape)


def _lower(raw):
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))


@dataclass(frozen=True)
class LinearVAEStep(CompressiveStep):
    """Linear VAE (section 5.4.2): decoder ``N(A z + mu, sigma^2 I)``, encoder
    ``q(z | z') = N(B (z' - mu), Dq)`` with a shared full covariance ``Dq = L L^T``.

    ``objective`` is the closed-form ELBO of eq. 5.11 (no Monte Carlo):
    ``-KL = -(tr Dq - log|Dq| + |B r|^2 - d) / 2`` and
    ``E_q log p(z'|z) = -(tr(A Dq A^T) + |A B r - r|^2) / (2 sigma^2) - D/2 log(2 pi sigma^2)``,
    ``r = z' - mu``. It is a bound, tight exactly when ``B = M^{-1} A^T`` and
    ``Dq = sigma^2 M^{-1}`` (eq. 5.8). ``log_marginal`` is the exact PPCA marginal of the decoder
    (``exact = True``), which the ELBO reaches at its optimum.
    """

    latent_size: int = 2
    exact = True
    kind = "linear_vae"

    def base_shape(self, event_shape):
        ppca.check_latent_size(self.latent_size, _size(event_shape), type(self).__name__)
        return (self.latent_size,)

    def init(self, key, event_shape):
        self.base_shape(event_shape)
        D, d = _size(event_shape), self.latent_size
        k1, k2 = jax.random.split(key)
        return {
            "A": jax.random.normal(k1, (D, d)) / math.sqrt(D),
            "mu": jnp.zeros(D),
            "log_sigma2": jnp.zeros(()),
            "B": jax.random.normal(k2, (d, D)) / math.sqrt(D),
            "L": jnp.zeros((d, d)),
            "event_shape": Static(tuple(event_shape)),
        }

    def data_init(self, params, zp):
        x = _flat(jnp.asarray(zp), params["event_shape"].value)
        return params | {"mu": jnp.mean(x.reshape(-1, x.shape[-1]), 0)}

    def elbo(self, params, zp):
        A, mu, B = params["A"], params["mu"], params["B"]
        sigma2 = jnp.exp(params["log_sigma2"])
        D, d = A.shape
        L = _lower(params["L"])
        r = _flat(zp, params["event_shape"].value) - mu
        br = r @ B.T
        kl = 0.5 * (jnp.sum(L * L) - 2.0 * jnp.sum(jnp.diag(params["L"])) + jnp.sum(br**2, -1) - d)
        resid = br @ A.T - r
        trace = jnp.sum((A @ L) ** 2)
        recon = -(trace + jnp.sum(resid**2, -1)) / (2.0 * sigma2) - 0.5 * D * (
            LOG_2PI + params["log_sigma2"]
        )
        return recon - kl

    def objective(self, params, zp, key=None):
        del key
        return self.elbo(params, zp)

    def log_marginal(self, params, zp, key=None, num_samples: int = 1):
        del key, num_samples
        core = {k: params[k] for k in ("A", "mu", "log_sigma2")}
        return ppca.log_prob(core, _flat(zp, params["event_shape"].value))

    def encode_mean(self, params, zp):
        return (_flat(zp, params["event_shape"].value) - params["mu"]) @ params["B"].T

    def encode(self, params, zp, key):
        x = _flat(zp, params["event_shape"].value)
        mean = (x - params["mu"]) @ params["B"].T
        L = _lower(params["L"])
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        z = mean + eps @ L.T
        log_q = std_normal_log_prob(eps) - jnp.sum(params["L"].diagonal())
        sigma = jnp.exp(0.5 * params["log_sigma2"])
        log_p = diag_normal_log_prob(
            x, z @ params["A"].T + params["mu"], jnp.full_like(x, jnp.log(sigma))
        )
        return z, log_p - log_q

    def decode(self, params, z, key=None, temperature: float = 1.0):
        return PPCAStep.decode(self, params, z, key, temperature)

    def encoder_operators(self, params):
        """``(B, Dq)`` to compare with the analytic posterior of eq. 5.8."""
        L = _lower(params["L"])
        return params["B"], L @ L.T


# ------------------------------------------------------------------------------------------
# Nonlinear Gaussian VAE steps
# ------------------------------------------------------------------------------------------


def _gaussian_head(out, size):
    mean, raw = out[..., :size], out[..., size:]
    return mean, bounded(raw)


def _iw_bound(log_w, num_samples):
    return jax.nn.logsumexp(log_w, 0) - math.log(num_samples)


class _VAEBase(CompressiveStep):
    exact = False

    def _encoder(self, params, zp):
        raise NotImplementedError

    def _decoder(self, params, z):
        raise NotImplementedError

    def encode_mean(self, params, zp):
        return self._encoder(params, zp)[0]

    def _sample_q(self, params, zp, key):
        mean, log_scale = self._encoder(params, zp)
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        z = mean + jnp.exp(log_scale) * eps
        k = len(self.latent_event(params))
        log_q = std_normal_log_prob(eps.reshape(eps.shape[: eps.ndim - k] + (-1,))) - jnp.sum(
            log_scale.reshape(log_scale.shape[: log_scale.ndim - k] + (-1,)), -1
        )
        return z, log_q, mean, log_scale

    def _log_lik(self, params, zp, z):
        mean, log_scale = self._decoder(params, z)
        shape = params["event_shape"].value
        return diag_normal_log_prob(_flat(zp, shape), _flat(mean, shape), _flat(log_scale, shape))

    def latent_event(self, params):
        return self.base_shape(params["event_shape"].value)

    def encode(self, params, zp, key):
        z, log_q, _, _ = self._sample_q(params, zp, key)
        return z, self._log_lik(params, zp, z) - log_q

    def objective(self, params, zp, key):
        """``E_q[log p(z'|z)] - KL(q || N(0, I))`` with one reparameterised sample and the KL in
        closed form (the same bound as eq. 5.14, lower variance)."""
        z, _, mean, log_scale = self._sample_q(params, zp, key)
        k = len(self.latent_event(params))
        flat = lambda a: a.reshape(a.shape[: a.ndim - k] + (-1,))
        kl = 0.5 * jnp.sum(
            flat(jnp.exp(2 * log_scale)) + flat(mean) ** 2 - 1.0 - 2.0 * flat(log_scale), -1
        )
        return self._log_lik(params, zp, z) - kl

    def log_marginal(self, params, zp, key, num_samples: int = 1):
        """Importance-weighted bound with ``num_samples`` draws (1: the ELBO of eq. 5.14)."""
        k = len(self.latent_event(params))

        def one(key):
            z, v = self.encode(params, zp, key)
            return std_normal_log_prob(z.reshape(z.shape[: z.ndim - k] + (-1,))) + v

        log_w = jax.vmap(one)(jax.random.split(key, num_samples))
        return _iw_bound(log_w, num_samples)

    def decode(self, params, z, key=None, temperature: float = 1.0):
        mean, log_scale = self._decoder(params, z)
        if key is None:
            return mean
        return mean + temperature * jnp.exp(log_scale) * jax.random.normal(key, mean.shape)


@dataclass(frozen=True)
class VAEStep(_VAEBase):
    """Gaussian VAE step with MLP encoder and decoder (section 5.4.3; thesis: two ReLU hidden
    layers, [512, 256] in the encoder and mirrored in the decoder). Acts on the flattened input;
    base ``(latent_size,)``. Log-scales are softly bounded to (-6, 6)."""

    latent_size: int = 2
    hidden: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    kind = "vae"

    def base_shape(self, event_shape):
        ppca.check_latent_size(self.latent_size, _size(event_shape), type(self).__name__)
        return (self.latent_size,)

    def _nets(self, D):
        enc = MLP(tuple(self.hidden), 2 * self.latent_size, self.activation, zero_init=True)
        dec = MLP(tuple(self.hidden)[::-1], 2 * D, self.activation, zero_init=True)
        return enc, dec

    def init(self, key, event_shape):
        self.base_shape(event_shape)
        D = _size(event_shape)
        enc, dec = self._nets(D)
        k1, k2 = jax.random.split(key)
        return {
            "encoder": enc.init(k1, jnp.zeros(D)),
            "decoder": dec.init(k2, jnp.zeros(self.latent_size)),
            "event_shape": Static(tuple(event_shape)),
        }

    def _encoder(self, params, zp):
        shape = params["event_shape"].value
        enc, _ = self._nets(_size(shape))
        return _gaussian_head(enc.apply(params["encoder"], _flat(zp, shape)), self.latent_size)

    def _decoder(self, params, z):
        shape = params["event_shape"].value
        D = _size(shape)
        _, dec = self._nets(D)
        mean, log_scale = _gaussian_head(dec.apply(params["decoder"], z), D)
        reshape = lambda a: a.reshape(a.shape[:-1] + shape)
        return reshape(mean), reshape(log_scale)


class _ConvEncoder(nn.Module):
    width: int
    out: int
    depth: int = 2

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.relu(Conv(self.width, (3, 3))(x))
        return Conv(
            self.out, (1, 1), kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros
        )(x)


@dataclass(frozen=True)
class ConvVAEStep(_VAEBase):
    """Convolutional Gaussian VAE step for compression intermixed between scales.

    Keeps the spatial grid and compresses channels: ``(H, W, C) -> (H, W, latent_channels)``.
    The thesis's conv VAE pools to a 1x1 vector and decodes with transposed convolutions; on the
    small images used here the next scale's convolutions need a spatial latent, so encoder and
    decoder are fully convolutional (``depth`` 3x3 ReLU convolutions of ``width`` channels and a
    1x1 output; no batch normalisation, which would make the step depend on the batch).
    Give ``latent_channels``, or ``latent_size`` (must be a multiple of ``H * W``).
    """

    latent_channels: int | None = None
    latent_size: int | None = None
    width: int = 32
    depth: int = 2
    kind = "conv_vae"

    def __post_init__(self):
        if (self.latent_channels is None) == (self.latent_size is None):
            raise ValueError("ConvVAEStep needs exactly one of latent_channels or latent_size")

    def base_shape(self, event_shape):
        event_shape = tuple(int(s) for s in event_shape)
        if len(event_shape) != 3:
            raise ValueError(
                f"ConvVAEStep needs an image event (H, W, C), got event_shape={event_shape}"
            )
        h, w, c = event_shape
        if self.latent_size is not None:
            if self.latent_size % (h * w):
                raise ValueError(
                    f"ConvVAEStep keeps the {h}x{w} spatial grid of its {event_shape} input and "
                    f"compresses channels, so latent_size must be a multiple of {h * w}; got "
                    f"latent_size={self.latent_size}"
                )
            lc = self.latent_size // (h * w)
        else:
            lc = self.latent_channels
        if lc < 1 or lc >= c:
            raise ValueError(
                f"ConvVAEStep: latent channels must be in [1, {c - 1}] for an input with {c} "
                f"channels (d < D), got {lc}"
            )
        return (h, w, lc)

    def init(self, key, event_shape):
        h, w, lc = self.base_shape(event_shape)
        c = event_shape[-1]
        k1, k2 = jax.random.split(key)
        enc = _ConvEncoder(self.width, 2 * lc, self.depth)
        dec = _ConvEncoder(self.width, 2 * c, self.depth)
        return {
            "encoder": enc.init(k1, jnp.zeros(tuple(event_shape))),
            "decoder": dec.init(k2, jnp.zeros((h, w, lc))),
            "event_shape": Static(tuple(int(s) for s in event_shape)),
        }

    def _encoder(self, params, zp):
        lc = self.base_shape(params["event_shape"].value)[-1]
        out = _ConvEncoder(self.width, 2 * lc, self.depth).apply(params["encoder"], zp)
        return _gaussian_head(out, lc)

    def _decoder(self, params, z):
        c = params["event_shape"].value[-1]
        out = _ConvEncoder(self.width, 2 * c, self.depth).apply(params["decoder"], z)
        return _gaussian_head(out, c)


__all__ = [
    "CompressiveStep",
    "PPCAStep",
    "LinearVAEStep",
    "VAEStep",
    "ConvVAEStep",
    "diag_normal_log_prob",
    "std_normal_log_prob",
]

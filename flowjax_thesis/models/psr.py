"""Probabilistic super-resolution (PSR) flows, chapter 6.

``x = pi(y)`` is a low-resolution (LR) or coarsened version of ``y``. A *conditional PSR flow*
models ``p(y | x)`` (eq. 6.4): the LR input goes through an encoder ``h`` (not invertible, so any
network), per-scale upsampling networks ``u_l`` turn ``h(x)`` into features ``v_l`` shaped like
the flow's latent at scale ``l``, and every flow step is conditioned on ``v_l`` (eq. 6.8)::

    Cond. ActNorm:   s, b = c(v);  y = s * z + b
    Cond. 1x1 conv:  W = c(v);     y = W z
    Cond. coupling:  y_a = exp(2 tanh(s(z_b, v) / 2)) * z_a + t(z_b, v),  y_b = z_b

(the foundation's ``ActNorm``, ``Conv1x1`` and ``Coupling(scale_bound=2)``). Sign convention as
everywhere in the package: ``forward`` maps base -> data (sampling), ``inverse`` data -> base.

- :class:`VectorPSR`: vectors ``y in R^D`` given ``x in R^d``, an MLP encoder and MLP couplings
  (the student of the student-teacher evaluation, section 6.4).
- :class:`ImagePSR`: images ``(H, W, C)`` given an LR image ``(H/s, W/s, C)``: a small
  DenseNet-style encoder, transposed-convolution upsamplers, one full-resolution scale with
  checkerboard couplings, then the foundation's ``MultiScale`` (squeeze, channel couplings,
  factor out half the channels) for the remaining scales; uniform dequantisation of the pixels.
- :class:`JointPSR`: ``p(x, y) = p(y | x) p(x)`` (eqs. 6.5-6.7) with an unconditional prior flow
  on the LR image (checkerboard scale, squeeze, channel scale, no slicing), trained jointly with
  an optional ridge penalty; :meth:`JointPSR.sample` is the generative process of eq. 6.6 with
  separate temperatures for the prior and the conditional flow (Figure 28).

Everything is a pure function of a params pytree (``init``/``log_prob``/``sample``), so ``jit``,
``vmap`` and the foundation's ``fit`` engine apply unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.bijectors import ActNorm, Chain, Conv1x1, Coupling, MultiScale, Repeat, Squeeze
from flowjax_thesis.flows import Flow
from flowjax_thesis.nets import MLP

# ---------------------------------------------------------------------------------------------
# Networks: LR encoder (DenseNet-style) and per-scale upsamplers (transposed convolutions)
# ---------------------------------------------------------------------------------------------


class DenseNetEncoder(nn.Module):
    """``h(x)``: a 3x3 stem, ``blocks`` dense blocks of ``layers`` 3x3 convolutions each
    (every layer sees the concatenation of all earlier feature maps and adds ``growth``
    channels), a 1x1 transition after each block; ``features`` output channels at LR size."""

    features: int = 32
    growth: int = 16
    layers: int = 2
    blocks: int = 2

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(2 * self.growth, (3, 3))(x - 0.5)
        for _ in range(self.blocks):
            for _ in range(self.layers):
                h = jnp.concatenate([h, nn.Conv(self.growth, (3, 3))(nn.relu(h))], -1)
            h = nn.Conv(self.features, (1, 1))(nn.relu(h))
        return h


class Upsampler(nn.Module):
    """``u_l``: reshapes LR features ``(h, w, F)`` to ``(size, size', F)`` with stride-2
    transposed convolutions (or stride-2 convolutions when the scale is coarser than the LR
    input), then a 3x3 convolution that refines the features for this scale."""

    target_hw: tuple[int, int]
    features: int = 16

    @nn.compact
    def __call__(self, h):
        size = h.shape[-3]
        target = self.target_hw[0]
        while size < target:
            h = nn.relu(nn.ConvTranspose(self.features, (3, 3), strides=(2, 2))(h))
            size *= 2
        while size > target:
            h = nn.relu(nn.Conv(self.features, (3, 3), strides=(2, 2))(h))
            size //= 2
        return nn.Conv(self.features, (3, 3))(nn.relu(h))


def _glow_steps(n: int, mask: str, conv_width: int, cond_hidden, scale_bound: float):
    """A chain of ``n`` Glow-style steps: (cond.) ActNorm -> (cond.) 1x1 conv -> two (cond.) affine
    couplings of opposite parity (the thesis's coupling + TupleFlip)."""
    step = Chain(
        (
            ActNorm(hidden=tuple(cond_hidden)),
            Conv1x1(hidden=tuple(cond_hidden)),
            Coupling(
                "affine", mask=mask, parity=0, hidden=(), conv_width=conv_width,
                scale_bound=scale_bound,
            ),
            Coupling(
                "affine", mask=mask, parity=1, hidden=(), conv_width=conv_width,
                scale_bound=scale_bound,
            ),
        )
    )  # fmt: skip
    # A Chain of n copies rather than ``Repeat``: with convolutional conditioners a lax.scan over
    # the steps is 10-25x slower per training step on XLA:CPU (measured: 0.28 s vs 0.011 s for one
    # step at batch 64), and these flows are shallow enough that compile time does not matter.
    return Chain((step,) * n)


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


# ---------------------------------------------------------------------------------------------
# Vector PSR flow (MLP version)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Image PSR flow (conditional multi-scale)
# ---------------------------------------------------------------------------------------------


def downsample_nearest(y, scale: int):
    """Nearest-neighbour coarsening: keeps every ``scale``-th pixel (the top-left one of each
    ``scale x scale`` block, as ``torch.nn.functional.interpolate(mode="nearest")``)."""
    y = jnp.asarray(y)
    if y.ndim < 3:
        raise ValueError(f"expected images of shape (..., H, W, C), got {y.shape}")
    h, w = y.shape[-3], y.shape[-2]
    if h % scale or w % scale:
        raise ValueError(f"image size {(h, w)} is not divisible by the scale factor {scale}")
    return y[..., ::scale, ::scale, :]


def upsample_nearest(x, scale: int):
    return jnp.repeat(jnp.repeat(jnp.asarray(x), scale, axis=-3), scale, axis=-2)


def upsample_bicubic(x, scale: int):
    """Bicubic upsampling with ``jax.image.resize`` (Keys kernel, half-pixel centres)."""
    x = jnp.asarray(x)
    shape = x.shape[:-3] + (x.shape[-3] * scale, x.shape[-2] * scale, x.shape[-1])
    return jax.image.resize(x, shape, "bicubic")


@dataclass(frozen=True)
class ImagePSR:
    """Conditional PSR flow ``p(y | x)`` for images ``y`` of ``hr_shape = (H, W, C)`` given the
    LR image ``x`` of shape ``(H/scale, W/scale, C)``, both in ``[0, 1]``.

    Scale 0 works at full resolution with checkerboard couplings; then ``num_levels`` levels of
    the foundation's ``MultiScale`` (squeeze -> channel couplings -> factor out half the
    channels; the last level keeps all). Each scale gets its own upsampled features
    ``u_l(h(x))`` of shape ``(H_l, W_l, features)``. Pixel values are integers in
    ``[0, num_bins)``; :meth:`dequantize` maps them to ``[0, 1]`` with uniform noise.
    """

    hr_shape: tuple[int, int, int]
    scale: int = 2
    num_levels: int = 2
    steps_per_scale: int = 2
    conv_width: int = 32
    features: int = 16
    encoder_features: int = 32
    growth: int = 16
    dense_layers: int = 2
    dense_blocks: int = 2
    cond_hidden: tuple[int, ...] = (32,)
    scale_bound: float = 2.0
    num_bins: int = 256

    def __post_init__(self):
        object.__setattr__(self, "hr_shape", tuple(int(s) for s in self.hr_shape))
        if len(self.hr_shape) != 3:
            raise ValueError(f"hr_shape must be (H, W, C), got {self.hr_shape}")
        h, w, _ = self.hr_shape
        if self.scale < 2 or self.scale & (self.scale - 1):
            raise ValueError(f"scale must be a power of 2 (2, 4, 8, ...), got {self.scale}")
        if h % self.scale or w % self.scale:
            raise ValueError(
                f"the HR size {(h, w)} must be divisible by the scale factor {self.scale}"
            )
        f = 2**self.num_levels
        if h % f or w % f:
            raise ValueError(
                f"{self.num_levels} multi-scale levels need H and W divisible by {f}, got {(h, w)}"
            )

    # -- shapes ----------------------------------------------------------------------------
    @property
    def lr_shape(self) -> tuple[int, int, int]:
        h, w, c = self.hr_shape
        return (h // self.scale, w // self.scale, c)

    def scale_sizes(self) -> list[tuple[int, int]]:
        h, w, _ = self.hr_shape
        return [(h // 2**level, w // 2**level) for level in range(self.num_levels + 1)]

    def context_shapes(self) -> list[tuple[int, int, int]]:
        return [(a, b, self.features) for a, b in self.scale_sizes()]

    # -- modules ---------------------------------------------------------------------------
    @property
    def encoder(self) -> DenseNetEncoder:
        return DenseNetEncoder(
            self.encoder_features, self.growth, self.dense_layers, self.dense_blocks
        )

    def upsamplers(self) -> list[Upsampler]:
        return [Upsampler(hw, self.features) for hw in self.scale_sizes()]

    @property
    def top(self):
        return _glow_steps(
            self.steps_per_scale, "checkerboard", self.conv_width, self.cond_hidden,
            self.scale_bound,
        )  # fmt: skip

    @property
    def multiscale(self) -> MultiScale | None:
        if self.num_levels == 0:
            return None
        steps = _glow_steps(
            self.steps_per_scale, "channel", self.conv_width, self.cond_hidden, self.scale_bound
        )
        return MultiScale(levels=tuple((steps,) for _ in range(self.num_levels)))

    # -- params ----------------------------------------------------------------------------
    def init(self, key):
        keys = jax.random.split(key, 4)
        feats = self.encoder.init(keys[0], jnp.zeros(self.lr_shape))
        h = self.encoder.apply(feats, jnp.zeros(self.lr_shape))
        ups = self.upsamplers()
        ups = [u.init(k, h) for u, k in zip(ups, jax.random.split(keys[1], len(ups)), strict=True)]
        shapes = self.context_shapes()
        params = {
            "encoder": feats,
            "upsamplers": ups,
            "top": self.top.init(keys[2], self.hr_shape, shapes[0]),
        }
        if self.multiscale is not None:
            params["multiscale"] = self.multiscale.init(keys[3], self.hr_shape, list(shapes[1:]))
        return params

    def check(self, y, x):
        y, x = _check_batch(
            y, x, self.hr_shape, self.lr_shape, "high-resolution y", "low-resolution x"
        )
        return y, x

    def contexts(self, params, x):
        """The per-scale conditioning features ``[u_l(h(x))]`` (batch dims kept)."""
        x = jnp.asarray(x)
        if x.ndim < 3 or tuple(x.shape[-3:]) != self.lr_shape:
            raise ValueError(
                f"expected a low-resolution x of shape (..., {', '.join(map(str, self.lr_shape))})"
                f" (= hr_shape {self.hr_shape} / scale {self.scale}), got {x.shape}"
            )
        batch = x.shape[:-3]
        flat = x.reshape((-1,) + self.lr_shape)
        h = self.encoder.apply(params["encoder"], flat)
        out = []
        for u, p in zip(self.upsamplers(), params["upsamplers"], strict=True):
            v = u.apply(p, h)
            out.append(v.reshape(batch + v.shape[1:]))
        return out

    def bijector(self, params, x) -> distrax.Bijector:
        ctx = self.contexts(params, x)
        layers = [self.top.bind(params["top"], ctx[0])]
        if self.multiscale is not None:
            layers.append(self.multiscale.bind(params["multiscale"], list(ctx[1:])))
        return distrax.Chain(layers)  # nearest the data first

    def data_init(self, params, y, x):
        """ActNorm initialisation from a batch of continuous ``y`` and LR ``x``."""
        y, x = self.check(y, x)
        ctx = self.contexts(params, x)
        top = self.top.data_init(params["top"], y, ctx[0])
        params = params | {"top": top}
        if self.multiscale is not None:
            h = self.top.bind(top, ctx[0]).inverse(y)
            ms = self.multiscale.data_init(params["multiscale"], h, list(ctx[1:]))
            params = params | {"multiscale": ms}
        return params

    # -- densities and samples -------------------------------------------------------------
    def log_prob(self, params, y, x):
        """``log p(y | x)`` of continuous ``y`` in ``[0, 1]`` (density w.r.t. that scale)."""
        y, x = self.check(y, x)
        z, log_det = self.bijector(params, x).inverse_and_log_det(y)
        return _tempered_normal(self.hr_shape, 1.0).log_prob(z) + log_det

    def dequantize(self, key, y_int):
        """Uniform dequantisation: ``(y + u) / num_bins`` with ``u ~ U[0, 1)``."""
        y_int = jnp.asarray(y_int, jnp.float32)
        return (y_int + jax.random.uniform(key, y_int.shape)) / self.num_bins

    def to_unit(self, x_int):
        """An integer LR image as the flow's context: bin centres ``(x + 1/2) / num_bins``."""
        return (jnp.asarray(x_int, jnp.float32) + 0.5) / self.num_bins

    def bits_per_dim(self, log_prob):
        from flowjax_thesis.objectives import bits_per_dim

        return bits_per_dim(log_prob, math.prod(self.hr_shape), self.num_bins)

    def sample_from_latent(self, params, z, x):
        """``y = f(z; x)`` for latents ``z`` of ``batch + hr_shape`` and ``x`` of matching batch."""
        z, x = _check_batch(z, x, self.hr_shape, self.lr_shape, "latent z", "low-resolution x")
        return self.bijector(params, x).forward(z)

    def sample_and_log_prob(self, params, key, x, temperature: float = 1.0):
        """One HR sample per LR image in ``x`` (shape ``(n, h, w, C)``) at ``temperature``;
        ``temperature=0`` gives ``f(0; x)``."""
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(
                f"expected a batch of low-resolution images of shape (n,) + {self.lr_shape}, "
                f"got {x.shape}"
            )
        base = _tempered_normal(self.hr_shape, jnp.maximum(temperature, 1e-12))
        z = temperature * jax.random.normal(key, (x.shape[0],) + self.hr_shape)
        y, log_det = self.bijector(params, x).forward_and_log_det(z)
        return y, base.log_prob(z) - log_det

    def sample(self, params, key, x, temperature: float = 1.0):
        return self.sample_and_log_prob(params, key, x, temperature)[0]

    def loss(self, params, y_int, x_int, key):
        """Mean negative log-likelihood of dequantised ``y`` given the integer LR ``x``."""
        y = self.dequantize(key, y_int)
        return -jnp.mean(self.log_prob(params, y, self.to_unit(x_int)))


# ---------------------------------------------------------------------------------------------
# Joint PSR: p(x, y) = p(y | x) p(x)
# ---------------------------------------------------------------------------------------------


def prior_flow(lr_shape, steps: int = 2, conv_width: int = 16, scale_bound: float = 2.0) -> Flow:
    """The unconditional prior ``p(x)`` of joint PSR: a checkerboard scale at LR size, a
    squeeze, a channel scale; no slicing (as in section 6.3.2)."""
    h, w, c = lr_shape
    layers = [_glow_steps(steps, "checkerboard", conv_width, (), scale_bound)]
    if h % 2 == 0 and w % 2 == 0 and h >= 2:
        layers += [Squeeze(), _glow_steps(steps, "channel", conv_width, (), scale_bound)]
    return Flow(tuple(layers), tuple(lr_shape))


@dataclass(frozen=True)
class JointPSR:
    """Joint PSR flow (eqs. 6.5-6.7): ``log p(x, y) = log p(y | x) + log p(x)``.

    ``prior`` is an unconditional flow on the LR image (default :func:`prior_flow`); the loss
    adds ``ridge * ||params||^2`` (the thesis's ``alpha (||phi||^2 + ||theta||^2)``).
    """

    conditional: ImagePSR
    prior: Flow | None = None
    ridge: float = 0.0
    prior_steps: int = 2
    prior_width: int = 16
    _prior: Flow = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        prior = self.prior or prior_flow(
            self.conditional.lr_shape, self.prior_steps, self.prior_width
        )
        if prior.event_shape != self.conditional.lr_shape:
            raise ValueError(
                f"the prior's event shape {prior.event_shape} must be the LR shape "
                f"{self.conditional.lr_shape}"
            )
        object.__setattr__(self, "_prior", prior)

    @property
    def prior_flow(self) -> Flow:
        return self._prior

    @property
    def prior_base_shape(self) -> tuple[int, ...]:
        """Shape of the prior's base draws ``eps`` (the squeezed LR shape)."""
        return self._prior.base_shape

    def init(self, key):
        k1, k2 = jax.random.split(key)
        return {"conditional": self.conditional.init(k1), "prior": self._prior.init(k2)}

    def data_init(self, params, y, x):
        return {
            "conditional": self.conditional.data_init(params["conditional"], y, x),
            "prior": self._prior.data_init(params["prior"], x),
        }

    def log_prob(self, params, y, x):
        """``(log p(x, y), log p(y | x), log p(x))`` for continuous ``y`` and ``x``."""
        cond = self.conditional.log_prob(params["conditional"], y, x)
        prior = self._prior.log_prob(params["prior"], x)
        return cond + prior, cond, prior

    def loss(self, params, y_int, x_int, key):
        """Eq. 6.7 (mean joint NLL of dequantised data) plus the ridge penalty."""
        k1, k2 = jax.random.split(key)
        psr = self.conditional
        y = psr.dequantize(k1, y_int)
        x = psr.dequantize(k2, x_int)
        joint, _, _ = self.log_prob(params, y, x)
        loss = -jnp.mean(joint)
        if self.ridge:
            loss = loss + self.ridge * ridge_norm(params)
        return loss

    def sample(self, params, key, n: int, prior_temperature=1.0, temperature=1.0):
        """Eq. 6.6: ``eps ~ N(0, t_x^2 I)``, ``x = g(eps)``, ``z ~ N(0, t_y^2 I)``,
        ``y = f(z; x)``. Returns ``(x, y)``."""
        k1, k2 = jax.random.split(key)
        x = self._prior.sample(params["prior"], k1, n, temperature=prior_temperature)
        x = jnp.clip(x, 0.0, 1.0)
        y = self.conditional.sample(params["conditional"], k2, x, temperature)
        return x, y

    def sample_from_latents(self, params, eps, z):
        """``x = g(eps)``, ``y = f(z; x)`` for given base draws (temperature grids, Figure 28):
        ``eps`` of shape ``batch + prior_base_shape``, ``z`` of ``batch + hr_shape``."""
        eps = jnp.asarray(eps)
        k = len(self.prior_base_shape)
        if eps.ndim < k or tuple(eps.shape[eps.ndim - k :]) != self.prior_base_shape:
            raise ValueError(
                f"expected prior base draws eps of shape (..., {self.prior_base_shape}), "
                f"got {eps.shape}"
            )
        x = self._prior.bijector(params["prior"]).forward(eps)
        x = jnp.clip(x, 0.0, 1.0)
        return x, self.conditional.sample_from_latent(params["conditional"], z, x)


def ridge_norm(params) -> jnp.ndarray:
    return sum(jnp.sum(a**2) for a in jax.tree.leaves(params))


__all__ = [
    "DenseNetEncoder",
    "Upsampler",
    "VectorPSR",
    "ImagePSR",
    "JointPSR",
    "prior_flow",
    "downsample_nearest",
    "upsample_nearest",
    "upsample_bicubic",
    "ridge_norm",
    "GPStudent",
    "DropoutStudent",
    "rmse",
    "emd",
    "psnr",
    "ssim",
    "pixel_diversity",
]


# ---------------------------------------------------------------------------------------------
# Baseline students: a Gaussian process with a Matern kernel and an MC-dropout network
# ---------------------------------------------------------------------------------------------


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
        mean, std = self._mean_std(x)
        z = (np.asarray(y) - mean) / std
        return np.sum(-0.5 * z**2 - np.log(std) - 0.5 * math.log(2 * math.pi), -1)


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

    def loss(self, params, batch, key):
        y, x = batch
        mean, log_var = self.net.apply(params, x, rngs={"dropout": key})
        return jnp.mean(jnp.sum(0.5 * (y - mean) ** 2 * jnp.exp(-log_var) + 0.5 * log_var, -1))

    def passes(self, params, key, x, num_passes: int):
        keys = jax.random.split(key, num_passes)
        return jax.vmap(lambda k: self.net.apply(params, x, rngs={"dropout": k}))(keys)

    def predict(self, params, key, x, num_passes: int = 50):
        mean, _ = self.passes(params, key, x, num_passes)
        return jnp.mean(mean, 0)

    def sample(self, params, key, x):
        k1, k2 = jax.random.split(key)
        mean, log_var = self.net.apply(params, x, rngs={"dropout": k1})
        return mean + jnp.exp(0.5 * log_var) * jax.random.normal(k2, mean.shape)

    def log_prob(self, params, key, y, x, num_passes: int = 50):
        """MC estimate of the predictive log-density (log-mean-exp over dropout passes)."""
        mean, log_var = self.passes(params, key, x, num_passes)
        lp = jnp.sum(
            -0.5 * (y - mean) ** 2 * jnp.exp(-log_var)
            - 0.5 * log_var
            - 0.5 * math.log(2 * math.pi),
            -1,
        )
        return jax.nn.logsumexp(lp, 0) - math.log(num_passes)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def rmse(y, y_hat) -> float:
    """Root mean squared error over all entries."""
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(y_hat)) ** 2)))


def emd(a, b) -> tuple[float, str]:
    """Earth mover's (Wasserstein-1, Euclidean ground cost) distance between two equal-weight
    samples. Uses POT's exact network-simplex solver (``ot.emd2``) when installed, otherwise
    scipy's ``linear_sum_assignment`` (exact for equal-size samples). Returns
    ``(distance, solver)``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"emd needs (n, D) and (m, D) samples, got {a.shape} and {b.shape}")
    cost = np.sqrt(np.sum((a[:, None, :] - b[None, :, :]) ** 2, -1))
    try:
        import ot
    except ImportError:
        ot = None
    if ot is not None:
        wa = np.full(len(a), 1.0 / len(a))
        wb = np.full(len(b), 1.0 / len(b))
        return float(ot.emd2(wa, wb, cost, numItermax=10_000_000)), "pot"
    if len(a) != len(b):
        raise ValueError(
            "without POT (pip install pot) the EMD uses scipy's assignment solver, which needs "
            f"equal sample sizes; got {len(a)} and {len(b)}"
        )
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean()), "scipy-assignment"


def psnr(y, y_hat, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio per image (``10 log10(range^2 / MSE)``) of ``(n, H, W, C)``."""
    y = np.asarray(y, np.float64)
    y_hat = np.asarray(y_hat, np.float64)
    mse = np.mean((y - y_hat) ** 2, axis=(-3, -2, -1))
    return 10 * np.log10(data_range**2 / np.maximum(mse, 1e-12))


def ssim(y, y_hat, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity per image with scikit-image's ``structural_similarity`` (the
    maintained reference implementation; 7x7 window, or the largest odd window that fits)."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError as err:
        raise ImportError(
            "SSIM needs scikit-image: pip install 'scikit-image>=0.22' "
            "(or the package's [psr] extra)"
        ) from err
    y = np.asarray(y, np.float64)
    y_hat = np.asarray(y_hat, np.float64)
    win = min(7, y.shape[-3], y.shape[-2])
    win -= 1 - win % 2
    return np.array(
        [
            structural_similarity(a, b, data_range=data_range, channel_axis=-1, win_size=win)
            for a, b in zip(y, y_hat, strict=True)
        ]
    )


def have_ssim() -> bool:
    try:
        import skimage.metrics  # noqa: F401
    except ImportError:
        return False
    return True


def pixel_diversity(samples) -> float:
    """Mean over images and pixels of the standard deviation across samples; ``samples`` has
    shape ``(num_samples, n, H, W, C)`` (several SR samples of each of ``n`` LR images)."""
    return float(np.mean(np.std(np.asarray(samples), axis=0)))

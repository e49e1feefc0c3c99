"""Compressive flows for images: architectures (Figure 17), dequantisation, bits/dim, training.

Architectures (:func:`build_flow`), on an image ``(H, W, C)`` scaled to ``[0, 1]``:

- ``"none"``: a Glow-style multi-scale bijective flow (the foundation's
  :class:`~flowjax_thesis.bijectors.MultiScale`, ``levels`` scales of ``steps_per_level`` steps
  ActNorm -> 1x1 convolution -> affine coupling, squeeze first, half the channels factored out
  between scales);
- ``"ppca"``, ``"linear_vae"``, ``"vae"``: *bijective then compress*: the same multi-scale flow
  (or none when ``steps_per_level = 0``) followed by one compressive step on the flattened
  latent to ``latent_size`` dimensions;
- ``"intermixed"``: *compress intermixed at each scale*: per scale, squeeze -> steps -> a
  convolutional VAE step that reduces the channels, keeping a fraction ``(d / D)^(1 / levels)`` of
  them, the last scale hitting ``latent_size`` exactly (which must then be a multiple of the last
  scale's ``H * W``; a clear error otherwise).

:class:`ImageModel` adds dequantisation: uniform (``u ~ U(0, 1)``) or variational (a conditional
coupling flow ``q(u | x)`` through a sigmoid, Ho et al. 2019). ``log_prob_bound`` returns, per
image, a lower bound ``E_q[log p((x + u) / K) - log q(u | x)]`` on the continuous-density scale;
:func:`flowjax_thesis.objectives.bits_per_dim` with ``num_bins = K`` turns it into bits/dim of the
discrete data (an upper bound).

Training: :func:`gradient_training` (all parameters by gradients; the linear VAE's and VAEs'
closed-form/ELBO objectives) and :func:`ppca_flow_transition` (closed-form mini-batch PPCA updates
alternating with gradient steps on the bijective flow, with the dual-base objective of eq. 5.6 and
``alpha`` annealed from 0 to 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from flowjax_thesis.bijectors import ActNorm, Chain, Conv1x1, Coupling, MultiScale, Repeat, Squeeze
from flowjax_thesis.flows import Flow
from flowjax_thesis.models.compressive import ppca
from flowjax_thesis.models.compressive.flow import (
    CompressiveFlow,
    alpha_schedule,
    dual_base_log_prob,
)
from flowjax_thesis.models.compressive.steps import (
    ConvVAEStep,
    LinearVAEStep,
    PPCAStep,
    VAEStep,
)
from flowjax_thesis.objectives import bits_per_dim
from flowjax_thesis.train.gradient import TrainState, gradient_transition
from flowjax_thesis.train.transition import Transition

COMPRESSIONS = ("none", "ppca", "linear_vae", "vae", "intermixed")


def glow_step(width: int = 32, depth: int = 2):
    """ActNorm -> invertible 1x1 convolution -> affine coupling (channel mask, conv net)."""
    return Chain(
        (
            ActNorm(),
            Conv1x1(),
            Coupling(
                transform="affine", mask="channel", hidden=(), conv_width=width, conv_depth=depth
            ),
        )
    )


def multiscale(levels: int, steps_per_level: int, width: int = 32) -> MultiScale:
    # unrolled: on XLA:CPU a convolution inside a lax.scan body is an order of magnitude slower
    step = Repeat(glow_step(width), steps_per_level, unroll=steps_per_level)
    return MultiScale(levels=tuple((step,) for _ in range(levels)))


def intermixed_channels(image_shape, latent_size: int, levels: int) -> list[int | None]:
    """Channels kept by the conv VAE of each scale (None: no compression at that scale)."""
    h, w, c = image_shape
    D = h * w * c
    ppca.check_latent_size(latent_size, D, "intermixed compression")
    keep = (latent_size / D) ** (1.0 / levels)
    out = []
    for level in range(levels):
        if h % 2 or w % 2:
            raise ValueError(f"scale {level}: cannot squeeze a {h}x{w} grid (needs even H, W)")
        h, w, c = h // 2, w // 2, 4 * c
        if level == levels - 1:
            if latent_size % (h * w):
                raise ValueError(
                    f"intermixed compression: the last scale has a {h}x{w} grid, so the latent "
                    f"size must be a multiple of {h * w}; got latent_size={latent_size}"
                )
            lc = latent_size // (h * w)
            if lc > c:
                raise ValueError(
                    f"intermixed compression: latent_size={latent_size} needs {lc} channels at "
                    f"the last scale, which has only {c}; use fewer scales or a smaller size"
                )
        else:
            lc = max(1, round(c * keep))
        out.append(lc if lc < c else None)
        c = lc
    return out


def build_flow(
    image_shape,
    compression: str = "vae",
    latent_size: int | None = None,
    steps_per_level: int = 2,
    levels: int = 2,
    width: int = 32,
    vae_hidden=(512, 256),
    conv_vae_width: int = 32,
) -> CompressiveFlow:
    """A compressive flow for images of ``image_shape`` (see the module docstring)."""
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if steps_per_level < 0:
        raise ValueError(f"steps_per_level must be >= 0, got {steps_per_level}")
    D = math.prod(image_shape)
    if compression == "none":
        if steps_per_level < 1:
            raise ValueError("an uncompressed flow needs steps_per_level >= 1")
        return CompressiveFlow((multiscale(levels, steps_per_level, width),), image_shape)
    if latent_size is None:
        raise ValueError(f"compression {compression!r} needs a latent_size < {D}")
    if compression == "intermixed":
        stages: list = []
        for lc in intermixed_channels(image_shape, latent_size, levels):
            stages.append(Squeeze())
            if steps_per_level:
                stages.append(Repeat(glow_step(width), steps_per_level, unroll=steps_per_level))
            if lc is not None:
                stages.append(ConvVAEStep(latent_channels=lc, width=conv_vae_width))
        return CompressiveFlow(tuple(stages), image_shape)
    step = {
        "ppca": lambda: PPCAStep(latent_size),
        "linear_vae": lambda: LinearVAEStep(latent_size),
        "vae": lambda: VAEStep(latent_size, tuple(vae_hidden)),
    }[compression]()
    stages = (multiscale(levels, steps_per_level, width),) if steps_per_level else ()
    return CompressiveFlow(stages + (step,), image_shape)


# ------------------------------------------------------------------------------------------
# Dequantisation and the image model
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariationalDequantizer:
    """``q(u | x)``: ``u = sigmoid(g(eps; x))`` with ``eps ~ N(0, I)`` and ``g`` conditional
    affine couplings (checkerboard, both parities, ``num_pairs`` times) on the image grid, the
    scaled image as context."""

    num_pairs: int = 2
    width: int = 16

    def flow(self, image_shape) -> Flow:
        layers = []
        for _ in range(self.num_pairs):
            for parity in (0, 1):
                layers.append(
                    Coupling(mask="checkerboard", parity=parity, hidden=(), conv_width=self.width)
                )
        return Flow(tuple(layers), image_shape, context_shape=image_shape)

    def sample(self, params, key, x01):
        """``u`` in (0, 1) of ``x01``'s shape and ``log q(u | x)``."""
        flow = self.flow(x01.shape[1:])
        h, log_q = flow.sample_and_log_prob(params, key, None, context=x01)  # one per image
        log_sig = -jax.nn.softplus(-h) - jax.nn.softplus(h)  # log sigmoid'(h)
        return jax.nn.sigmoid(h), log_q - jnp.sum(log_sig, axis=(1, 2, 3))


@dataclass(frozen=True)
class ImageModel:
    flow: CompressiveFlow
    num_bins: int
    dequantization: str = "uniform"
    dequantizer: VariationalDequantizer = VariationalDequantizer()

    def __post_init__(self):
        if self.dequantization not in ("uniform", "variational"):
            raise ValueError(
                f"dequantization must be 'uniform' or 'variational', got {self.dequantization!r}"
            )

    @property
    def num_dims(self) -> int:
        return math.prod(self.flow.event_shape)

    def init(self, key):
        k1, k2 = jax.random.split(key)
        params = {"flow": self.flow.init(k1)}
        if self.dequantization == "variational":
            params["deq"] = self.dequantizer.flow(self.flow.event_shape).init(k2)
        return params

    def _check(self, x_int):
        x_int = jnp.asarray(x_int)
        if x_int.ndim != 4 or tuple(x_int.shape[1:]) != self.flow.event_shape:
            shape = ", ".join(map(str, self.flow.event_shape))
            raise ValueError(
                f"expected integer images of shape (N, {shape}), got {tuple(x_int.shape)}"
            )
        return x_int.astype(jnp.float32)

    def dequantize(self, params, x_int, key):
        """Continuous ``y = (x + u) / K`` in [0, 1] and ``log q(u | x)`` (0 if uniform)."""
        x = self._check(x_int)
        if self.dequantization == "uniform":
            u = jax.random.uniform(key, x.shape)
            log_q = jnp.zeros(x.shape[0])
        else:
            u, log_q = self.dequantizer.sample(params["deq"], key, (x + 0.5) / self.num_bins)
        return (x + u) / self.num_bins, log_q

    def data_init(self, params, x_int, key):
        y, _ = self.dequantize(params, x_int, key)
        return params | {"flow": self.flow.data_init(params["flow"], y, key)}

    def log_prob_bound(self, params, x_int, key, train: bool = False, num_samples: int = 1):
        """Per image: ``log p(y) - log q(u | x)`` (one dequantisation draw; see module doc)."""
        self._check(x_int)
        k1, k2 = jax.random.split(key)
        y, log_q = self.dequantize(params, x_int, k1)
        if train:
            lp, terms = self.flow.log_prob_terms(params["flow"], y, k2, train=True)
        else:
            lp, terms = self.flow.log_prob_terms(params["flow"], y, k2, num_samples)
        return lp - log_q, terms

    def bits_per_dim(self, log_prob_bound):
        return bits_per_dim(log_prob_bound, self.num_dims, self.num_bins)

    def evaluate(self, params, x_int, key, num_samples: int = 1, batch_size: int = 500):
        """Mean bits/dim on ``x_int`` (upper bound; one dequantisation draw per image)."""
        fn = jax.jit(lambda p, x, k: self.log_prob_bound(p, x, k, num_samples=num_samples)[0])
        values = []
        for i in range(0, len(x_int), batch_size):
            values.append(fn(params, x_int[i : i + batch_size], jax.random.fold_in(key, i)))
        return float(jnp.mean(self.bits_per_dim(jnp.concatenate(values))))


def gradient_training(model: ImageModel, optimizer) -> Transition:
    """All parameters by gradients on ``-mean bound / D`` (nats per dimension)."""

    def loss(params, batch, key):
        lp, _ = model.log_prob_bound(params, batch, key, train=True)
        value = -jnp.mean(lp) / model.num_dims
        return value, {"bits_per_dim": jnp.mean(model.bits_per_dim(lp))}

    return gradient_transition(loss, optimizer, has_aux=True)


@flax.struct.dataclass
class PPCAFlowState:
    params: Any
    opt_state: Any
    ppca: ppca.PPCAState


def ppca_flow_transition(
    model: ImageModel,
    optimizer: optax.GradientTransformation,
    anneal_steps: int = 20000,
    dual_base: bool = True,
    kappa: float = 0.6,
    rho_min: float = 0.02,
) -> Transition:
    """Closed-form mini-batch PPCA updates alternating with gradient steps on the flow.

    Each step: dequantise the batch; push it through the bijective stages (no gradient) to get
    ``z'``; one online-EM update of the PPCA step (:func:`ppca.em_transition`, rate
    ``max((t+1)^-kappa, rho_min)`` so it tracks the moving ``z'``); then one optimizer step on the
    other parameters with the PPCA parameters held fixed, on eq. 5.6 with
    ``alpha = min(1, t / anneal_steps)`` while the annealing runs (``dual_base``) and on the exact
    eq. 5.5 (``log|det J| + log N(z'; mu, A A^T + sigma^2 I)``, the model's log-likelihood) once
    it has ended (``t >= anneal_steps``), or on eq. 5.5 throughout (``dual_base=False``). The
    metric ``eq55`` is 1 on the steps that trained on eq. 5.5.
    """
    flow = model.flow
    step_layer = flow.stages[-1]
    if not isinstance(step_layer, PPCAStep):
        raise ValueError("ppca_flow_transition needs a flow whose last stage is a PPCAStep")
    d = step_layer.latent_size
    em = ppca.em_transition(d, "em", kappa, rho_min)
    core_keys = ("A", "mu", "log_sigma2")

    def with_ppca(params, core):
        fp = params["flow"]
        return params | {"flow": fp[:-1] + (fp[-1] | core,)}

    def loss(params, batch, key, alpha, eq55):
        # ``key`` is the dequantisation key of the EM update: the same z' for both updates
        fixed = jax.lax.stop_gradient(params["flow"][-1])
        params = params | {"flow": params["flow"][:-1] + (fixed,)}
        y, log_q = model.dequantize(params, batch, key)
        obj, terms = dual_base_log_prob(flow, params["flow"], y, alpha)
        exact = terms["log_det"] + terms["ppca"]
        obj = jnp.where(eq55, exact, obj)
        exact = exact - log_q
        metrics = {
            "bits_per_dim": jnp.mean(model.bits_per_dim(exact)),
            **{k: jnp.mean(v) for k, v in terms.items()},
        }
        return -jnp.mean(obj - log_q) / model.num_dims, metrics

    def init(params) -> PPCAFlowState:
        core = {k: params["flow"][-1][k] for k in core_keys}
        return PPCAFlowState(params, optimizer.init(params), em.init(core))

    def step(state: PPCAFlowState, batch, key):
        k_deq = key
        params = state.params
        y, _ = model.dequantize(params, batch, k_deq)
        zp, _ = flow.compressive_input(params["flow"], y)
        zp = jax.lax.stop_gradient(zp.reshape(zp.shape[0], -1))
        em_state, em_metrics = em.step(state.ppca, zp, None)
        params = with_ppca(params, em_state.params)
        alpha = alpha_schedule(em_state.t, anneal_steps) if dual_base else jnp.ones(())
        eq55 = em_state.t >= anneal_steps if dual_base else jnp.ones((), bool)
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(
            params, batch, k_deq, alpha, eq55
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        params = with_ppca(params, em_state.params)  # the closed form owns the PPCA parameters
        metrics = {
            "loss": value,
            "alpha": alpha,
            "eq55": eq55.astype(jnp.float32),
            "ppca_log_lik": em_metrics["log_lik"],
            "grad_norm": optax.global_norm(grads),
            **aux,
        }
        return PPCAFlowState(params, opt_state, em_state), metrics

    return Transition(init, step)


__all__ = [
    "COMPRESSIONS",
    "build_flow",
    "glow_step",
    "multiscale",
    "intermixed_channels",
    "ImageModel",
    "VariationalDequantizer",
    "gradient_training",
    "ppca_flow_transition",
    "PPCAFlowState",
    "TrainState",
]

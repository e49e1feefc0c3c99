"""Joint PSR: ``p(x, y) = p(y | x) p(x)`` (eqs. 6.5-6.7).

Two :class:`~flowjax_thesis.flows.Flow` s trained together: the conditional image PSR flow
``p(y | x)`` and an unconditional prior flow ``p(x)`` on the LR image (:func:`prior_flow`).
:meth:`JointPSR.sample` is the generative process of eq. 6.6 with separate temperatures for the
prior and the conditional flow (Figure 28); both follow ``Flow``'s temperature convention.

**Shared embedding.** The thesis (section 6.3.1) trains the two together because "conditioning
f_phi on a learned embedding of x, as opposed to the raw LR image x" lets the prior's training
shape "features that are more useful for super-resolution". Here that embedding is the prior's
first block ``e = g_1^{-1}`` (its checkerboard Glow steps at LR size, an invertible network that
is part of ``p(x)``): the conditional flow is conditioned on ``[x, e(x)]`` (built with
``image_psr_flow(..., embedding_channels=C)``), so the one set of embedding parameters,
``params["prior"][0]``, receives gradients from both ``log p(x)`` and ``log p(y | x)``. A
conditional flow whose context is the plain LR image (``embedding_channels=0``) gives the
unshared model (the two flows then share no parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors import Squeeze
from flowjax_thesis.flows import Flow
from flowjax_thesis.models.psr.image import dequantize, glow_steps


def prior_flow(lr_shape, steps: int = 2, conv_width: int = 16, scale_bound: float = 2.0) -> Flow:
    """The unconditional prior ``p(x)`` of joint PSR: a checkerboard scale at LR size, a
    squeeze, a channel scale; no slicing (as in section 6.3.2)."""
    h, w, _ = lr_shape
    layers = [glow_steps(steps, "checkerboard", conv_width, (), scale_bound)]
    if h % 2 == 0 and w % 2 == 0 and h >= 2:
        layers += [Squeeze(), glow_steps(steps, "channel", conv_width, (), scale_bound)]
    return Flow(tuple(layers), tuple(lr_shape))


@dataclass(frozen=True)
class JointPSR:
    """Joint PSR flow (eqs. 6.5-6.7): ``log p(x, y) = log p(y | x) + log p(x)``.

    ``conditional`` is an image PSR flow (:func:`~flowjax_thesis.models.psr.image_psr_flow`);
    ``prior`` an unconditional flow on its LR shape (default :func:`prior_flow`). The loss adds
    ``ridge * ||params||^2`` (the thesis's ``alpha (||phi||^2 + ||theta||^2)``).
    """

    conditional: Flow
    num_bins: int
    prior: Flow | None = None
    ridge: float = 0.0
    prior_steps: int = 2
    prior_width: int = 16
    _prior: Flow = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        context = tuple(self.conditional.context_shape or ())
        c = self.conditional.event_shape[-1]
        if len(context) != 3 or context[-1] not in (c, 2 * c):
            raise ValueError(
                f"the conditional flow's context must be the LR image (H, W, {c}) or the LR image "
                f"with its shared embedding (H, W, {2 * c}); got context_shape {context or None}"
            )
        lr_shape = context[:2] + (c,)
        prior = self.prior or prior_flow(lr_shape, self.prior_steps, self.prior_width)
        if prior.event_shape != lr_shape:
            raise ValueError(
                f"the prior's event shape {prior.event_shape} must be the LR image shape "
                f"{lr_shape} of the conditional flow's context"
            )
        if context[-1] == 2 * c and prior.layers[0].base_shape(lr_shape) != lr_shape:
            raise ValueError(
                "a shared embedding needs a prior whose first layer keeps the LR shape "
                f"{lr_shape}; it maps it to {prior.layers[0].base_shape(lr_shape)}"
            )
        object.__setattr__(self, "_prior", prior)

    @property
    def shared_embedding(self) -> bool:
        """Whether the conditional flow sees the prior's embedding ``[x, e(x)]``."""
        return self.conditional.context_shape[-1] == 2 * self.conditional.event_shape[-1]

    @property
    def lr_shape(self) -> tuple[int, ...]:
        return self._prior.event_shape

    def embed(self, params, x):
        """``e(x) = g_1^{-1}(x)``: the prior's first block applied to ``x`` (the embedding)."""
        return self._prior.layers[0].bind(params["prior"][0]).inverse(x)

    def context(self, params, x):
        """What the conditional flow is conditioned on: ``[x, e(x)]`` with a shared embedding,
        else ``x``."""
        if not self.shared_embedding:
            return x
        return jnp.concatenate([x, self.embed(params, x)], -1)

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
        """ActNorm initialisation: the prior on ``x`` first, then the conditional flow on its
        context (which, with a shared embedding, depends on the initialised prior)."""
        params = params | {"prior": self._prior.data_init(params["prior"], x)}
        cond = self.conditional.data_init(params["conditional"], y, self.context(params, x))
        return params | {"conditional": cond}

    def log_prob(self, params, y, x):
        """``(log p(x, y), log p(y | x), log p(x))`` for continuous ``y`` and ``x``."""
        cond = self.conditional.log_prob(params["conditional"], y, self.context(params, x))
        prior = self._prior.log_prob(params["prior"], x)
        return cond + prior, cond, prior

    def loss(self, params, batch, key):
        """Eq. 6.7 on ``batch = (y_int, x_int)`` (mean joint NLL of dequantised data) plus the
        ridge penalty."""
        y_int, x_int = batch
        k1, k2 = jax.random.split(key)
        y = dequantize(k1, y_int, self.num_bins)
        x = dequantize(k2, x_int, self.num_bins)
        joint, _, _ = self.log_prob(params, y, x)
        loss = -jnp.mean(joint)
        if self.ridge:
            loss = loss + self.ridge * ridge_norm(params)
        return loss

    def sample(self, params, key, n: int, prior_temperature=1.0, temperature=1.0):
        """Eq. 6.6: ``x ~ p(x)`` at ``prior_temperature`` (clipped to ``[0, 1]``), then one
        ``y ~ p(y | x)`` per ``x`` at ``temperature``. Returns ``(x, y)``."""
        k1, k2 = jax.random.split(key)
        x = self._prior.sample(params["prior"], k1, n, temperature=prior_temperature)
        x = jnp.clip(x, 0.0, 1.0)
        context = self.context(params, x)
        y = self.conditional.sample(
            params["conditional"], k2, context=context, temperature=temperature
        )
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
        x = jnp.clip(self._prior.bijector(params["prior"]).forward(eps), 0.0, 1.0)
        y = self.conditional.bijector(params["conditional"], self.context(params, x)).forward(z)
        return x, y


def ridge_norm(params) -> jnp.ndarray:
    return sum(jnp.sum(a**2) for a in jax.tree.leaves(params))

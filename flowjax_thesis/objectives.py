"""Training objectives and estimators for flows.

- :func:`nll`: maximum likelihood (forward KL up to a constant): ``-mean log q(x)`` over data.
- :func:`elbo`: ``E_q[log p~(x) - log q(x)]`` for an unnormalised target ``log p~``; its negative
  is the reverse KL ``KL(q || p)`` minus ``log Z``. ``stick_the_landing=True`` stops the gradient
  through the variational parameters inside ``log q`` (Roeder et al., 2017), a lower-variance
  gradient with the same expectation.
- :func:`importance_log_evidence`: ``log Z ~= logsumexp(log p~(x_i) - log q(x_i)) - log N`` with
  ``x_i ~ q``; a stochastic lower bound on ``log Z`` that tightens as ``N`` grows (IWAE bound).
- :func:`bits_per_dim`: negative log-likelihood in bits per dimension, accounting for data
  scaled from ``num_bins`` discrete levels to [0, 1].

A *target* is a function ``log_density(x) -> scalar`` on one event; it is vmapped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.flows import Flow


def nll(flow: Flow, params, x, context=None):
    """Mean negative log-likelihood of a batch ``x`` (nats)."""
    return -jnp.mean(flow.log_prob(params, x, context))


def _batched_target(log_target: Callable, event_ndims: int) -> Callable:
    def f(x):
        flat = x.reshape((-1,) + x.shape[x.ndim - event_ndims :])
        return jax.vmap(log_target)(flat).reshape(x.shape[: x.ndim - event_ndims])

    return f


def elbo(
    flow: Flow,
    params,
    key,
    log_target: Callable,
    num_samples: int,
    context=None,
    stick_the_landing: bool = False,
):
    """Monte-Carlo ELBO ``mean(log p~(x) - log q(x))`` with ``x ~ q`` (reparameterised)."""
    x, log_q = flow.sample_and_log_prob(params, key, num_samples, context)
    if stick_the_landing:
        log_q = flow.log_prob(jax.lax.stop_gradient(params), x, context)
    log_p = _batched_target(log_target, len(flow.event_shape))(x)
    return jnp.mean(log_p - log_q)


def reverse_kl_loss(flow: Flow, log_target: Callable, num_samples: int, stick_the_landing=False):
    """A loss ``(params, batch, key) -> -ELBO`` for
    :func:`~flowjax_thesis.train.gradient_transition` (the batch is unused: VI draws its own
    samples)."""

    def loss(params, batch, key):
        del batch
        return -elbo(flow, params, key, log_target, num_samples, None, stick_the_landing)

    return loss


def max_likelihood_loss(flow: Flow):
    """A loss ``(params, batch, key) -> NLL`` where ``batch`` is data (or ``(data, context)``)."""

    def loss(params, batch, key):
        del key
        if isinstance(batch, (tuple, list)):
            x, context = batch
            return nll(flow, params, x, context)
        return nll(flow, params, batch)

    return loss


def log_weights(
    flow: Flow, params, key, log_target: Callable, num_samples: int, chunk: int = 4096, context=None
):
    """Importance log-weights ``log p~(x) - log q(x)`` of ``num_samples`` draws from ``q``,
    computed in chunks of ``chunk`` under ``lax.map`` so memory stays bounded."""
    num_chunks = -(-num_samples // chunk)
    keys = jax.random.split(key, num_chunks)
    target = _batched_target(log_target, len(flow.event_shape))

    def one(k):
        x, log_q = flow.sample_and_log_prob(params, k, chunk, context)
        return target(x) - log_q

    return jax.lax.map(one, keys).reshape(-1)[:num_samples]


def importance_log_evidence(flow, params, key, log_target, num_samples, chunk=4096, context=None):
    """``log Z`` estimate ``logsumexp(w) - log N`` (a lower bound in expectation)."""
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, (int, np.integer))
        or num_samples < 1
    ):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    w = log_weights(flow, params, key, log_target, num_samples, chunk, context)
    return jax.nn.logsumexp(w) - jnp.log(num_samples)


def bits_per_dim(log_prob, num_dims: int, num_bins: int | None = 256):
    """Bits per dimension from a log-density in nats.

    With ``num_bins`` set, ``log_prob`` is the density of data rescaled from ``num_bins``
    integer levels to ``[0, 1]`` (dequantised); the change of variables adds
    ``num_dims * log(num_bins)`` nats. With ``num_bins=None`` no rescaling is assumed.
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
    if num_bins is not None and (
        isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2
    ):
        raise ValueError(f"num_bins must be an int >= 2 or None, got {num_bins!r}")
    nats = -jnp.asarray(log_prob)
    if num_bins is not None:
        nats = nats + num_dims * math.log(num_bins)
    return nats / (num_dims * math.log(2.0))

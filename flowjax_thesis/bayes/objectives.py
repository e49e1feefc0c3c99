"""The importance-weighted ELBO (Burda et al., 2016) and a training loss for it.

``IWELBO_K = E[log (1/K) sum_k p~(x_k) / q(x_k)]``, ``x_k ~ q`` i.i.d. (reparameterised). It is
the ELBO for ``K = 1``, never below it, and rises to ``log Z`` as ``K`` grows; maximising it
trains ``q`` toward a proposal that is good for importance sampling (mass-covering) rather than
the ELBO's mode-seeking fit. Built on :func:`flowjax_thesis.objectives.log_weights`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from flowjax_thesis.flows import Flow
from flowjax_thesis.objectives import log_weights


def iw_elbo(flow: Flow, params, key, log_target: Callable, num_importance: int, num_outer: int = 1):
    """Monte-Carlo IWELBO with ``num_importance`` (K) samples per bound, averaged over
    ``num_outer`` independent bounds."""
    if num_importance < 1 or num_outer < 1:
        raise ValueError(
            f"num_importance and num_outer must be >= 1, got {num_importance}, {num_outer}"
        )
    lw = log_weights(
        flow, params, key, log_target, num_importance * num_outer, chunk=num_importance
    ).reshape(num_outer, num_importance)
    return jnp.mean(jax.nn.logsumexp(lw, axis=1) - jnp.log(num_importance))


def iw_elbo_loss(flow: Flow, log_target: Callable, num_importance: int, num_outer: int = 1):
    """A loss ``(params, batch, key) -> -IWELBO`` for
    :func:`~flowjax_thesis.train.gradient_transition` (the batch is unused)."""

    def loss(params, batch, key):
        del batch
        return -iw_elbo(flow, params, key, log_target, num_importance, num_outer)

    return loss

"""The mixture-weight algebra of a GBNF, as pure functions of its params dict.

A GBNF's params hold ``log_weights`` (additive mixture log-weights), ``exponents`` (the
multiplicative model's ``rho_j``) and ``active`` (which components are trained). Additive
boosting (eq. 4.4 with ``psi(a) = a``)::

    G_c(x) = (1 - rho_c) G_{c-1}(x) + rho_c g_c(x),   log G = logsumexp_j(log w_j + log g_j(x))

so after ``c`` stages ``w_j = rho_j prod_{k > j} (1 - rho_k)`` (``rho_1 = 1``): the weights stay
in [0, 1] and sum to 1. Multiplicative boosting (eq. 4.10) keeps one exponent per component
(the first is 1). Everything here is jittable except the host-side :func:`host_weights` and
:func:`checked_weights`, which validate user input.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

TINY = 1e-30
# the log-weight of a component with weight exactly 0, and of the components left out of a
# mixture: finite (the engine treats a non-finite state as a divergence) but far below any
# log-density difference, so exp(ZERO_LOG_WEIGHT + lp) is exactly 0. log(TINY) = -69 was not: a
# component 70 nats better than the others at a point (overfitted tabular flows differ by more)
# dominated a mixture in which it had weight 0.
ZERO_LOG_WEIGHT = -1e30


def take(tree, i):
    """Row ``i`` (may be traced) of every leaf of a stacked pytree."""
    return jax.tree.map(lambda p: p[i], tree)


def safe_log(w):
    """``log w``, floored at ``log(TINY)`` for ``0 < w < TINY``; ``ZERO_LOG_WEIGHT`` at 0."""
    return jnp.where(w > 0, jnp.log(jnp.maximum(w, TINY)), ZERO_LOG_WEIGHT)


def logmeanexp(a, axis=None):
    n = a.shape[axis] if axis is not None else a.size
    return jax.nn.logsumexp(a, axis=axis) - math.log(n)


def draw_indices(key, log_w, n: int):
    """``n`` indices drawn with probability proportional to ``exp(log_w)`` (1-D), by inverse CDF
    (``jax.random.choice``): ``n`` uniforms where ``jax.random.categorical`` draws ``n x
    len(log_w)`` Gumbels (at n = len(log_w) = 512, 0.25 instead of 6.9 ms per draw here, more
    than a K = 1 component's whole training step)."""
    return jax.random.choice(key, log_w.shape[0], (n,), p=jax.nn.softmax(log_w))


def others(params, exclude=None):
    """Mask of the active components other than ``exclude`` (an index, may be traced, or None)
    and whether any such component exists."""
    mask = params["active"]
    if exclude is not None:
        mask = mask & (jnp.arange(mask.shape[0]) != exclude)
    return mask, jnp.any(mask)


def mixture_log_weights(params, exclude=None):
    """Normalised additive log-weights over the active components (``-inf`` elsewhere), the
    ``exclude``-th left out; and whether any component remains."""
    mask, has = others(params, exclude)
    lw = jnp.where(mask, params["log_weights"], -jnp.inf)
    lse = jax.nn.logsumexp(jnp.where(mask, params["log_weights"], ZERO_LOG_WEIGHT))
    return jnp.where(mask, lw - lse, -jnp.inf), has


def proposal_log_weights(params):
    """Equal log-weights over the active components (the multiplicative model's proposal)."""
    mask = params["active"]
    return jnp.where(mask, -jnp.log(jnp.maximum(jnp.sum(mask), 1)), -jnp.inf)


def assign_weight(params, i, rho, boosting: str = "additive"):
    """Params with component ``i`` active and weight ``rho`` (jittable; clipped to [0, 1]).

    Additive: ``w_i = rho`` and the other active components keep their proportions and share
    ``1 - rho`` (the first component, with no others, gets weight 1). Multiplicative: exponent
    ``rho`` (component 0 keeps exponent 1). ``log_z`` is not updated here.
    """
    rho = jnp.clip(jnp.asarray(rho, jnp.float32), 0.0, 1.0)
    idx = jnp.arange(params["active"].shape[0])
    others_lw, has = mixture_log_weights(params, exclude=i)
    active = params["active"] | (idx == i)
    if boosting == "additive":
        rho = jnp.where(has, rho, 1.0)
        lw = jnp.where(idx == i, safe_log(rho), others_lw + safe_log(1.0 - rho))
        lw = jnp.where(active, lw, ZERO_LOG_WEIGHT)
        lw = jnp.where(active, lw - jax.nn.logsumexp(lw), 0.0)
        return {**params, "log_weights": lw, "active": active}
    rho = jnp.where(jnp.asarray(i) == 0, 1.0, rho)
    exps = jnp.where(idx == i, rho, params["exponents"])
    return {**params, "exponents": exps, "active": active}


def combine(params, lp, mask, has, boosting: str = "additive"):
    """Log-density of the model made of the components in ``mask`` from their log-densities
    ``lp`` (``(C,) + batch``): additive ``logsumexp(log w + lp)`` with the weights renormalised
    over ``mask``; multiplicative ``sum rho_j lp_j`` (unnormalised). 0 when ``has`` is False."""
    c = lp.shape[0]
    shape = (c,) + (1,) * (lp.ndim - 1)
    # with no component selected, compute on a dummy one (then discard) so that no -inf or
    # NaN enters the gradient through the unselected branch of the final ``where``
    mask = jnp.where(has, mask, jnp.arange(c) == 0)
    if boosting == "additive":
        lw = jnp.where(mask, params["log_weights"], -jnp.inf)
        lw = lw - jax.nn.logsumexp(jnp.where(mask, params["log_weights"], ZERO_LOG_WEIGHT))
        out = jax.nn.logsumexp(lw.reshape(shape) + lp, axis=0)
    else:
        terms = jnp.where(mask.reshape(shape), params["exponents"].reshape(shape) * lp, 0.0)
        out = jnp.sum(terms, axis=0)
    return jnp.where(has, out, 0.0)


def training_weight(params, index):
    """The weight the trained component ``index`` has in the mixture it is trained against:
    its current mixture weight when it is already active (fine-tuning: coordinate descent on
    the mixture NLL), else ``1 / (number of active others + 1)`` (a new component enters as an
    equal member; the Frank-Wolfe step ``rho`` is refitted afterwards)."""
    mask, _ = others(params, index)
    lw = jnp.where(params["active"], params["log_weights"], ZERO_LOG_WEIGHT)
    w_now = jnp.exp(lw[index] - jax.nn.logsumexp(lw))
    rho = jnp.where(params["active"][index], w_now, 1.0 / (jnp.sum(mask) + 1.0))
    return jnp.clip(rho, 1e-3, 1.0 - 1e-3)


def host_weights(params, boosting: str = "additive") -> np.ndarray:
    """Mixture weights (additive) or exponents (multiplicative); 0 for untrained components."""
    active = np.asarray(params["active"])
    if boosting == "multiplicative":
        return np.where(active, np.asarray(params["exponents"]), 0.0)
    if not active.any():
        return np.zeros(active.shape[0])
    lw = np.where(active, np.asarray(params["log_weights"], np.float64), -np.inf)
    return np.exp(lw - np.logaddexp.reduce(lw[active]))


def checked_weights(params, weights, boosting: str = "additive") -> dict:
    """Params with user-given weights (validated): additive mixture weights of the active
    components (each in [0, 1], summing to 1) or multiplicative exponents (each in [0, 1]).
    Untrained components must get weight 0."""
    active = np.asarray(params["active"])
    w = np.asarray(weights, np.float64)
    if w.shape != active.shape:
        raise ValueError(f"expected {active.shape[0]} weights, got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(w > 1):
        raise ValueError(f"weights must lie in [0, 1], got {w.tolist()}")
    if np.any(w[~active] > 0):
        raise ValueError("untrained (inactive) components must have weight 0")
    if boosting == "additive":
        if not np.isclose(w.sum(), 1.0, atol=1e-6):
            raise ValueError(f"additive mixture weights must sum to 1, got sum {w.sum():.6g}")
        lw = np.where(active, np.log(np.maximum(w, TINY)), 0.0)
        lw = np.where(active & (w == 0), ZERO_LOG_WEIGHT, lw)
        return {**params, "log_weights": jnp.asarray(lw, jnp.float32)}
    return {**params, "exponents": jnp.asarray(np.where(active, w, 0.0), jnp.float32)}

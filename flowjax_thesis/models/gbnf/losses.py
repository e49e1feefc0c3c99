"""The losses of one boosting stage (section 4.3 and 4.5).

Each is ``loss(p_i, frozen, index, batch, key) -> (value, aux)``: ``p_i`` the params of the
component being trained (row ``index`` of the stacked params, the only thing differentiated),
``frozen`` the whole GBNF params under ``stop_gradient``. :func:`stage_transition
<flowjax_thesis.models.gbnf.boost.stage_transition>` turns one into a training step.

- :func:`density_loss`, ``reweight="boosted"`` (default): the mixture NLL (4.6) as a function of
  the new component, ``-mean log((1 - rho) G_{c-1}(x) + rho g(x))`` with ``rho`` its entry weight
  ``1/c`` (or, when fine-tuning, its current weight): its gradient is the likelihood gradient
  weighted by ``rho g(x) / G_c(x)``, i.e. the ``1/G_{c-1}`` weights of (4.8) self-normalised by
  the current mixture, which keeps them bounded and lets the new component specialise on the
  data the others explain badly. ``"resample"`` is the original code's surrogate (4.13): each
  minibatch drawn again with replacement with probabilities ``softmax(-log G_{c-1}(x))``,
  clipped and renormalised as the original does (when the largest exceeds ``clip[1] = 0.1`` all
  are clipped to ``[0.01, 0.1]``; ``clip=None`` keeps the raw ``1/G`` weights);
  ``"importance"`` weights the minibatch log-likelihoods by the same probabilities; ``"none"``
  is plain maximum likelihood (ablation). (With a mode-covering first component ``1/G`` is
  nearly flat on the data, so the surrogate re-learns the first component and later ``rho`` go
  to 0; see ``notes/issue3.md``.)
- :func:`vi_loss` (eq. 4.20/4.21): ``E_g[max(log G_{c-1}(z), floor) - log p~(z) + lambda log
  g(z)]``; ``log G_{c-1}`` is clamped from below at ``floor = -10`` exactly as the original
  code's ``G_MAX_LOSS`` (it caps the reward for putting samples where the fixed components have
  no mass).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from flowjax_thesis.models.gbnf.model import GBNF
from flowjax_thesis.models.gbnf.weights import training_weight

REWEIGHT = ("boosted", "resample", "importance", "none")


def resampling_log_probs(log_G, has, clip: tuple[float, float] | None = (0.01, 0.1)):
    """Log-probabilities ``softmax(-log G)`` over a minibatch, clipped as the original code:
    when the largest exceeds ``clip[1]``, all are clipped to ``[clip[0], clip[1]]``; then
    renormalised. Uniform when there is no previous component."""
    w = jax.nn.softmax(jnp.where(has, -log_G, 0.0))
    if clip is not None:
        lo, hi = clip
        w = jnp.where(jnp.max(w) > hi, jnp.clip(w, lo, hi), w)
        w = w / jnp.sum(w)
    return jnp.log(w)


def density_loss(gbnf: GBNF, reweight: str = "boosted", clip=(0.01, 0.1)) -> Callable:
    """The maximum-likelihood loss of one boosted component (see the module docstring). The
    batch is ``(x, context)`` (context None for unconditional models)."""
    if reweight not in REWEIGHT:
        raise ValueError(f"reweight must be one of {REWEIGHT}, got {reweight!r}")

    def loss(p_i, frozen, index, batch, key):
        x, ctx = batch
        log_G, has = gbnf.log_prob_excluding(frozen, index, x, ctx)
        log_w = resampling_log_probs(log_G, has, clip)
        if reweight == "boosted":
            log_g = gbnf.component_log_prob(p_i, index, x, ctx)
            rho = training_weight(frozen, index)
            mix = jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + log_g)
            value = -jnp.mean(jnp.where(has, mix, log_g))
            # the implied per-point weights rho g / G_c (self-normalised 1/G weighting)
            resp = jax.lax.stop_gradient(jnp.exp(jnp.log(rho) + log_g - mix))
            aux = {"G_nll": -jnp.mean(log_G), "ess": jnp.sum(resp) ** 2 / jnp.sum(resp**2)}
            return value, aux
        if reweight == "resample":
            idx = jax.random.categorical(key, log_w, shape=(x.shape[0],))
            cr = None if ctx is None else jax.tree.map(lambda a: a[idx], ctx)
            value = -jnp.mean(gbnf.component_log_prob(p_i, index, x[idx], cr))
        elif reweight == "importance":
            value = -jnp.sum(jnp.exp(log_w) * gbnf.component_log_prob(p_i, index, x, ctx))
        else:
            value = -jnp.mean(gbnf.component_log_prob(p_i, index, x, ctx))
        aux = {"G_nll": -jnp.mean(log_G), "ess": 1.0 / jnp.sum(jnp.exp(2 * log_w))}
        return value, aux

    return loss


def vi_loss(
    gbnf: GBNF,
    log_target: Callable,
    num_samples: int,
    regularization: float = 1.0,
    log_g_floor: float | None = -10.0,
) -> Callable:
    """Eq. 4.20/4.21: ``E_g[max(log G_{c-1}(z), floor) - log p~(z) + lambda log g(z)]`` with
    ``z ~ g`` reparameterised (the plain negative ELBO when no component is trained yet)."""
    target = jax.vmap(log_target)

    def loss(p_i, frozen, index, batch, key):
        del batch
        z, log_g = gbnf.component_sample_and_log_prob(p_i, index, key, num_samples)
        log_p = target(z)
        log_G, has = gbnf.log_prob_excluding(frozen, index, z)
        if log_g_floor is not None:
            log_G = jnp.maximum(log_G, log_g_floor)
        boosted = jnp.mean(log_G - log_p + regularization * log_g)
        plain = jnp.mean(log_g - log_p)
        return jnp.where(has, boosted, plain), {"elbo_g": -plain, "log_G": jnp.mean(log_G)}

    return loss

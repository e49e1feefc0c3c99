"""The losses of one boosting stage (section 4.3 and 4.5).

Each is ``loss(p_i, frozen, index, batch, key) -> (value, aux)``: ``p_i`` the params of the
component being trained (row ``index`` of the stacked params, the only thing differentiated),
``frozen`` the whole GBNF params under ``stop_gradient``. :func:`stage_transition
<flowjax_thesis.models.gbnf.boost.stage_transition>` turns one into a training step. The first
component of a density model is always plain maximum likelihood on the minibatch (no boosting
in stage 1; the thesis's footnote: ``G_0`` uniform), the same under every rule, so the first
components of runs that differ only in the rule are identical.

:func:`density_loss`, by ``reweight``:

- ``"resample"`` -- **the thesis's rule for its experiments (the reproduction)**, eq. 4.13: the
  paragraph "implementation of training objective" says that "in practice", instead of weighing
  the loss by ``1/G_{c-1}``, the new component is trained by maximum likelihood on data drawn
  with replacement with weights inversely proportional to ``G_{c-1}`` (following Grover and
  Ermon 2018). Here each minibatch is drawn again with probabilities ``softmax(-log
  G_{c-1}(x))``, clipped and renormalised as the original code does (when the largest exceeds
  ``clip[1] = 0.1`` all are clipped to ``[0.01, 0.1]``; ``clip=None`` keeps the raw ``1/G``
  weights).
- ``"frank_wolfe"`` -- the additive update as derived, eqs. 4.7-4.9: the functional gradient of
  the mixture NLL (4.6) at ``rho_c -> 0`` is ``-1/G_{c-1}`` (4.7), so the Frank-Wolfe step
  maximises the linear objective ``(1/n) sum_i g(x_i) / G_{c-1}(x_i)`` (4.8) plus the entropy
  of ``g`` weighted by ``lambda`` (4.9), i.e. minimises::

      -mean_i exp(log g(x_i) - log G_{c-1}(x_i)) + lambda E_{z ~ g}[log g(z)]

  The entropy is estimated with one reparameterised draw of ``g`` per minibatch row (per
  context row for conditional flows). The extracted (4.9) prints the regulariser as ``-lambda
  sum_i g(x_i) log g(x_i)`` over the data points; that sum is the entropy ``-int g log g``
  written at the sample points (the cited regularisers, Guo et al. 2016 and Campbell and Li
  2019, are the entropy of the new component), and over data points it is neither an estimate
  of the entropy nor invariant to the data's units, so the entropy is estimated with draws of
  ``g`` here. ``lambda`` (``regularization``) defaults to 0.5: the thesis: "in the density
  estimation experiments, better results are often achieved with lambda near 0.5" (lambda = 1
  in the VAE experiments). The ratio's log is capped at 30 (only to keep ``exp`` finite once a
  component has collapsed onto a few points).
- ``"boosted"`` -- **our variant, not the thesis's rule**: the mixture NLL (4.6) itself as a
  function of the new component, ``-mean log((1 - rho) G_{c-1}(x) + rho g(x))`` with ``rho``
  its entry weight ``1/c`` (or, when fine-tuning, its current weight). Its gradient is the
  likelihood gradient weighted by ``rho g(x) / G_c(x)``: the Frank-Wolfe weights ``g/G_{c-1}``
  of (4.8) evaluated at a finite ``rho`` instead of ``rho -> 0`` (so they stay bounded by 1),
  which needs no entropy term. The thesis states (4.6) as the objective but trains components
  with (4.8)/(4.13) and uses (4.6) only for ``rho``; this variant is measured beside the
  thesis's rule in the ``gbnf-*`` experiments (``docs/results/gbnf-*``).
- ``"importance"`` weights the minibatch log-likelihoods by the ``resample`` probabilities;
  ``"none"`` is plain maximum likelihood (ablation).

(With a mode-covering first component ``1/G`` is nearly flat on the data, so the clipped
resampling re-learns much of the first component and later ``rho`` can go to 0.)

:func:`vi_loss` (eq. 4.20/4.21): ``E_g[max(log G_{c-1}(z), floor) - log p~(z) + lambda log
g(z)]``; ``log G_{c-1}`` is clamped from below at ``floor = -10`` exactly as the original code's
``G_MAX_LOSS`` (it caps the reward for putting samples where the fixed components have no mass).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from flowjax_thesis.models.gbnf.model import GBNF
from flowjax_thesis.models.gbnf.weights import draw_indices, training_weight

REWEIGHT = ("resample", "frank_wolfe", "boosted", "importance", "none")
THESIS_RULE = "resample"  # eq. 4.13, what the thesis's experiments train new components with
LOG_RATIO_CAP = 30.0


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


def frank_wolfe_objective(log_g, log_G, log_g_draws, regularization: float):
    """Eqs. 4.8/4.9 as a loss (to minimise): ``-mean(g/G) + lambda mean(log g(z))`` from the
    new component's log-density at the data (``log_g``), the fixed mixture's (``log_G``) and
    the new component's log-density at its own draws ``z ~ g`` (``log_g_draws``). Returns the
    value and its two parts (the linear term of 4.8 and the negative entropy)."""
    linear = jnp.mean(jnp.exp(jnp.minimum(log_g - log_G, LOG_RATIO_CAP)))
    neg_entropy = jnp.mean(log_g_draws)
    return -linear + regularization * neg_entropy, linear, neg_entropy


def density_loss(
    gbnf: GBNF,
    reweight: str = "boosted",
    clip: tuple[float, float] | None = (0.01, 0.1),
    regularization: float = 0.5,
) -> Callable:
    """The loss of one boosted density component (see the module docstring). The batch is
    ``(x, context)`` (context None for unconditional models); ``regularization`` is the entropy
    weight ``lambda`` of ``"frank_wolfe"`` (eq. 4.9)."""
    if reweight not in REWEIGHT:
        raise ValueError(f"reweight must be one of {REWEIGHT}, got {reweight!r}")
    if not (isinstance(regularization, (int, float)) and regularization >= 0):
        raise ValueError(
            f"regularization (the entropy weight lambda of eq. 4.9) must be a number >= 0, "
            f"got {regularization!r}"
        )

    def loss(p_i, frozen, index, batch, key):
        x, ctx = batch
        log_G, has = gbnf.log_prob_excluding(frozen, index, x, ctx)
        if reweight == "frank_wolfe":
            log_g = gbnf.component_log_prob(p_i, index, x, ctx)
            n = None if ctx is not None else x.shape[0]
            _, log_gz = gbnf.component_sample_and_log_prob(p_i, index, key, n, ctx)
            fw, linear, neg_h = frank_wolfe_objective(log_g, log_G, log_gz, regularization)
            value = jnp.where(has, fw, -jnp.mean(log_g))
            aux = {"G_nll": -jnp.mean(log_G), "fw_linear": linear, "neg_entropy": neg_h}
            return value, aux
        if reweight == "boosted":
            log_g = gbnf.component_log_prob(p_i, index, x, ctx)
            rho = training_weight(frozen, index)
            mix = jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + log_g)
            value = -jnp.mean(jnp.where(has, mix, log_g))
            # the effective sample size of the implied per-point weights rho g / G_c, in log
            # space: every weight underflows to 0 where G_c dwarfs the new component
            log_resp = jax.lax.stop_gradient(jnp.log(rho) + log_g - mix)
            ess = jnp.exp(2 * jax.nn.logsumexp(log_resp) - jax.nn.logsumexp(2 * log_resp))
            aux = {"G_nll": -jnp.mean(log_G), "ess": ess}
            return value, aux
        log_w = resampling_log_probs(log_G, has, clip)
        if reweight == "resample":
            idx = draw_indices(key, log_w, x.shape[0])
            idx = jnp.where(has, idx, jnp.arange(x.shape[0]))  # stage 1: the minibatch itself
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

"""Fitting the weight ``rho`` of a new component (Algorithm 1 and line searches).

After a component is trained, its weight ``rho`` in ``G_c = (1 - rho) G_{c-1} + rho g_c`` is
fitted either by a line search on a deterministic objective (:func:`grid_minimise` of
:func:`density_rho_objective` -- the held-out NLL, convex in ``rho`` for the additive model -- or
of :func:`vi_rho_objective` -- the mixture's negative ELBO with fixed draws), or by Algorithm 1:
projected SGD on ``rho`` with the decaying step ``lr / (1 + decay t)`` (:func:`rho_sgd_transition`,
``optax.sgd`` + ``optax.projections.projection_box``) on the stochastic gradients
:func:`density_rho_gradient` / :func:`vi_rho_gradient` (eq. 4.23).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from flowjax_thesis.models.gbnf import weights as W
from flowjax_thesis.models.gbnf.model import GBNF
from flowjax_thesis.train.transition import Transition

RHO_METHODS = ("line_search", "sgd")


def grid_minimise(f: Callable, num: int = 101, refine: int = 2) -> tuple[float, float]:
    """Minimises a scalar function of rho on [0, 1] by a grid then ``refine`` finer grids
    around the best point (vectorised: ``f`` maps ``(R,)`` rhos to ``(R,)`` values)."""
    lo, hi = 0.0, 1.0
    best = None
    for _ in range(refine + 1):
        grid = jnp.linspace(lo, hi, num)
        vals = f(grid)
        vals = jnp.where(jnp.isfinite(vals), vals, jnp.inf)
        k = int(jnp.argmin(vals))
        best = (float(grid[k]), float(vals[k]))
        step = (hi - lo) / (num - 1)
        lo, hi = max(0.0, best[0] - step), min(1.0, best[0] + step)
    return best


@flax.struct.dataclass
class RhoState:
    rho: jax.Array
    opt_state: Any
    t: jax.Array
    done: jax.Array
    frozen: Any = None  # what the gradient needs besides rho (e.g. the GBNF params and index)


def rho_sgd_transition(
    gradient: Callable,
    lr: float = 0.05,
    decay: float = 0.05,
    tol: float = 1e-3,
    min_iters: int = 10,
) -> Transition:
    """Algorithm 1 as a Transition: ``rho <- projection_box(rho - lr / (1 + decay t) * grad,
    0, 1)`` (``optax.sgd`` with that schedule, then ``optax.projections.projection_box``), where
    ``gradient(rho, batch, key)`` (or ``gradient(rho, batch, key, frozen)`` when the state was
    built by ``init(rho0, frozen)``: one transition, hence one compiled runner, serves every
    stage) estimates dF/drho; stops moving once a step changes rho by
    less than ``tol`` after ``min_iters`` iterations. (The printed algorithm's loop condition
    ``while |rho_t - rho_{t-1}| < eps`` is inverted; this is the intended convergence test,
    as in the original code's ``update_rho``.)"""
    optimizer = optax.sgd(lambda t: lr / (1.0 + decay * t))

    def init(rho0, frozen=None) -> RhoState:
        rho = jnp.float32(rho0)
        return RhoState(rho, optimizer.init(rho), jnp.int32(0), jnp.bool_(False), frozen)

    def step(state: RhoState, batch, key):
        if state.frozen is None:
            g = gradient(state.rho, batch, key)
        else:
            g = gradient(state.rho, batch, key, state.frozen)
        updates, opt_state = optimizer.update(g, state.opt_state, state.rho)
        new = optax.projections.projection_box(optax.apply_updates(state.rho, updates), 0.0, 1.0)
        new = jnp.where(state.done, state.rho, new)
        opt_state = jax.tree.map(
            lambda old, upd: jnp.where(state.done, old, upd), state.opt_state, opt_state
        )
        done = state.done | ((state.t >= min_iters) & (jnp.abs(new - state.rho) < tol))
        new_state = RhoState(new, opt_state, state.t + 1, done, state.frozen)
        return new_state, {"rho": new, "rho_grad": g}

    return Transition(init, step)


def _split_impl(gbnf: GBNF, params, i, x, context=None):
    lp = gbnf.component_log_probs(params, x, context)
    mask, has = W.others(params, i)
    return gbnf.combine(params, lp, mask, has), lp[i], lp


def _vi_draws_impl(gbnf: GBNF, params, i, key, n: int):
    k_g, k_G = jax.random.split(key)
    z_g, _ = gbnf.component_sample_and_log_prob(gbnf.component(params, i), i, k_g, n)
    lw, _ = W.mixture_log_weights(params, exclude=i)
    z_G, _ = gbnf._sample_from(params, lw, k_G, n)
    return z_g, z_G


_split_jit = jax.jit(_split_impl, static_argnums=0)
_vi_draws_jit = jax.jit(_vi_draws_impl, static_argnums=(0, 4))


def _hashable(gbnf) -> bool:
    try:
        hash(gbnf)
    except TypeError:
        return False
    return True


def _split(gbnf: GBNF, params, i, x, context=None):
    """``log G_{-i}(x)``, ``log g_i(x)`` and all components' log-densities at ``x`` (compiled
    once per model and shapes, reused by every stage; traced calls inline it)."""
    if isinstance(x, jax.core.Tracer) or not _hashable(gbnf):
        return _split_impl(gbnf, params, i, x, context)
    return _split_jit(gbnf, params, i, x, context)


def density_rho_objective(gbnf: GBNF, params, i, x, context=None, key=None, num_proposal=8192):
    """Held-out NLL of the model as a function of the weight of component ``i``: a function
    ``rhos (R,) -> nll (R,)`` (jitted internally). Multiplicative: includes ``log Gamma(rho)``
    estimated by importance sampling (fixed proposal draws, so the curve is smooth in rho)."""
    log_G, log_g, _ = _split(gbnf, params, i, x, context)
    if gbnf.boosting == "additive":

        def f(rhos):
            r = rhos[:, None]
            mix = jnp.logaddexp(jnp.log1p(-r) + log_G[None], jnp.log(r) + log_g[None])
            return -jnp.mean(mix, axis=1)

        return jax.jit(f)
    # multiplicative: proposal = equal mixture of the active components and i
    key = jax.random.PRNGKey(0) if key is None else key
    prop = {**params, "active": params["active"] | (jnp.arange(gbnf.num_components) == i)}
    _, lp_y, log_q = gbnf._proposal_draws(prop, key, num_proposal)
    mask, has = W.others(params, i)
    log_G_y = gbnf.combine(params, lp_y, mask, has)

    def f(rhos):
        r = rhos[:, None]
        log_z = W.logmeanexp(log_G_y[None] + r * lp_y[i][None] - log_q[None], axis=1)
        return -jnp.mean(log_G[None] + r * log_g[None], axis=1) + log_z

    return jax.jit(f)


def density_rho_gradient(gbnf: GBNF) -> Callable:
    """``dNLL/drho = -mean[(g - G) / ((1 - rho) G + rho g)]`` on a held-out minibatch
    ``(x, context)`` (additive boosting); ``frozen = {"params": ..., "index": i}``."""

    def grad(rho, batch, key, frozen):
        del key
        x, ctx = batch
        log_G, log_g, _ = _split(gbnf, frozen["params"], frozen["index"], x, ctx)
        mix = jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + log_g)
        return -jnp.mean(jnp.exp(log_g - mix) - jnp.exp(log_G - mix))

    return grad


def _vi_draws(gbnf: GBNF, params, i, key, n: int):
    """``n`` draws of component ``i`` and ``n`` of the mixture of the others."""
    if isinstance(key, jax.core.Tracer) or not _hashable(gbnf):
        return _vi_draws_impl(gbnf, params, i, key, n)
    return _vi_draws_jit(gbnf, params, i, key, n)


def vi_rho_gradient(gbnf: GBNF, log_target: Callable, num_samples: int) -> Callable:
    """Eq. 4.23: ``E_g[gamma_rho(z)] - E_{G_{c-1}}[gamma_rho(z)]`` with
    ``gamma_rho = log((1 - rho) G_{c-1} + rho g) - log p~`` (Monte Carlo, fresh draws);
    ``frozen = {"params": ..., "index": i}``."""
    target = jax.vmap(log_target)

    def grad(rho, batch, key, frozen):
        del batch
        params, i = frozen["params"], frozen["index"]

        def gamma(z):
            log_G, log_g, _ = _split(gbnf, params, i, z)
            return jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + log_g) - target(z)

        z_g, z_G = _vi_draws(gbnf, params, i, key, num_samples)
        return jnp.mean(gamma(z_g)) - jnp.mean(gamma(z_G))

    return grad


def vi_rho_objective(gbnf: GBNF, params, i, log_target, key, num_samples: int = 4096):
    """``F(rho) = rho E_g[gamma_rho] + (1 - rho) E_G[gamma_rho]`` (the negative ELBO of the
    mixture, eq. 4.22) with fixed draws: a function ``rhos (R,) -> F (R,)``."""
    target = jax.vmap(log_target)
    z_g, z_G = _vi_draws(gbnf, params, i, key, num_samples)

    def parts(z):
        log_G, log_g, _ = _split(gbnf, params, i, z)
        return log_G, log_g, target(z)

    G_g, g_g, p_g = parts(z_g)
    G_G, g_G, p_G = parts(z_G)

    def f(rhos):
        r = rhos[:, None]
        gam = lambda lG, lg, lp: jnp.logaddexp(jnp.log1p(-r) + lG, jnp.log(r) + lg) - lp
        return rhos * jnp.mean(gam(G_g, g_g, p_g), 1) + (1 - rhos) * jnp.mean(gam(G_G, g_G, p_G), 1)

    return jax.jit(f)

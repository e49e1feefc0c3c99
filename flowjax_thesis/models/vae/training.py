"""Training the VAEs (thesis section 4.7.1) through the engine (:func:`flowjax_thesis.train.fit`).

Single posteriors (:func:`train_vae`, one ``fit`` call): Adam (lr 1e-3, gradients clipped to
norm 100) on the negative ELBO with the KL term annealed linearly from ``beta0`` to 1 over
``anneal_steps`` (Bowman et al.; the thesis anneals over the first 250 of 1000 epochs); every
``eval_every`` steps ``fit`` computes the validation -ELBO and an ``on_eval`` hook feeds it to
``optax.contrib.reduce_on_plateau`` (the learning rate halves after ``plateau_patience``
evaluations without improvement; its scale lives in the state and multiplies Adam's updates)
and keeps the parameters with the best validation -ELBO in the state, so both survive a
checkpoint and a resumed run ends where an uninterrupted one does.

The GBNF posterior's schedule is in :mod:`.boosting`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax_thesis.models.vae.model import VAE
from flowjax_thesis.train import FitResult, fit
from flowjax_thesis.train.transition import Transition

VAL_METRIC = "val_neg_elbo"


def make_optimizer(lr: float = 1e-3, clip_norm: float | None = 100.0):
    adam = optax.adam(lr)
    return adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)


def make_plateau(lr: float, patience: int, factor: float = 0.5, min_lr: float = 1e-5):
    """``optax.contrib.reduce_on_plateau`` on the validation -ELBO: the scale halves after
    ``patience`` evaluations without an improvement of 1e-4 nats, down to ``min_lr / lr``
    (``patience = 0``: never)."""
    if patience < 0:
        raise ValueError(f"plateau_patience must be >= 0, got {patience}")
    return optax.contrib.reduce_on_plateau(
        factor=factor, patience=patience, rtol=0.0, atol=1e-4, min_scale=min(1.0, min_lr / lr)
    )


# the engine stops on any non-finite float in the state, so the "no value yet" sentinels are the
# largest float32 instead of inf (reduce_on_plateau's own init uses inf)
_NO_VALUE = float(np.finfo(np.float32).max)


def plateau_init(params):
    state = optax.contrib.reduce_on_plateau().init(params)
    return state._replace(best_value=jnp.asarray(_NO_VALUE, state.best_value.dtype))


def scale_updates(updates, plateau):
    return jax.tree.map(lambda u: plateau.scale.astype(u.dtype) * u, updates)


def kl_weight(step, anneal_steps, beta0=0.0):
    """Linear KL annealing: ``beta0`` at step 0 to 1 at ``anneal_steps`` (1 throughout when
    ``anneal_steps <= 0``; ``anneal_steps`` may be traced)."""
    frac = jnp.clip(step / jnp.maximum(anneal_steps, 1), 0.0, 1.0)
    return jnp.where(anneal_steps > 0, beta0 + (1.0 - beta0) * frac, 1.0)


def binarize(x, key, dynamic: bool):
    if not dynamic:
        return x
    return jax.random.bernoulli(key, x).astype(x.dtype)


def plateau_hook(plateau, track_best: bool = False):
    """An ``on_eval`` hook: the validation value steps ``reduce_on_plateau`` (state.plateau);
    with ``track_best`` the state also keeps the params of the best value so far."""

    def on_eval(state, values, step):
        value = values[VAL_METRIC]
        _, new_plateau = plateau.update({}, state.plateau, value=jnp.float32(value))
        new = state.replace(plateau=new_plateau)
        if track_best and value < float(state.best_value):
            new = new.replace(best_params=state.params, best_value=jnp.float32(value))
        return new

    return on_eval


def val_fn(model: VAE, x_val, n_val: int = 500, component_convention=True):
    """Jitted validation -ELBO (thesis convention) on up to ``n_val`` examples:
    ``f(params, key) -> scalar``."""
    x_val = jnp.asarray(x_val[:n_val])

    @jax.jit
    def f(params, key):
        lw = model.log_weights(params, x_val, key, 1, component_convention)
        return -jnp.mean(lw)

    return f


# -- single posteriors ------------------------------------------------------------------------


@flax.struct.dataclass
class VAEState:
    params: Any
    opt_state: Any
    plateau: Any  # optax.contrib.ReduceLROnPlateauState (its scale multiplies the updates)
    step: jax.Array
    best_params: Any  # the params of the best validation -ELBO so far
    best_value: jax.Array


@functools.lru_cache(maxsize=32)
def vae_transition(
    model: VAE, lr: float = 1e-3, anneal_steps: int = 0, beta0: float = 0.0, dynamic=False
) -> Transition:
    """A :class:`~flowjax_thesis.train.Transition` over :class:`VAEState` (KL-annealed -ELBO);
    ``init(params)``. Cached per settings: seeds of one model share one compiled runner."""
    optimizer = make_optimizer(lr)

    def init(params):
        return VAEState(
            params,
            optimizer.init(params),
            plateau_init(params),
            jnp.int32(0),
            params,
            jnp.float32(_NO_VALUE),
        )

    def step(state, batch, key):
        k_bin, k_loss = jax.random.split(key)
        x = binarize(batch, k_bin, dynamic)
        beta = kl_weight(state.step, anneal_steps, beta0)

        def loss(p):
            return model.neg_elbo(p, x, k_loss, beta)

        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, scale_updates(updates, state.plateau))
        metrics = {
            "loss": value,
            "beta": beta,
            "grad_norm": optax.global_norm(grads),
            "lr": lr * state.plateau.scale,
            **aux,
        }
        new = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
        return new, metrics

    return Transition(init, step)


def train_vae(
    model: VAE,
    train_x,
    val_x,
    *,
    key,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    anneal_steps: int = 0,
    beta0: float = 0.0,
    eval_every: int = 100,
    plateau_patience: int = 0,
    dynamic: bool = False,
    params=None,
    run=None,
    tags: dict | None = None,
    mesh=None,
    mode: str = "scan",
    progress: bool = False,
) -> FitResult:
    """Trains ``model`` with one ``fit`` call (named ``tags`` in ``run``: checkpoints, resume).

    Returns the :class:`~flowjax_thesis.train.FitResult`; ``result.state.best_params`` are the
    params of the best validation -ELBO (``result.history``: this call's records, with
    ``val_neg_elbo`` at every evaluation)."""
    k_init, k_fit, k_val = jax.random.split(key, 3)
    params = model.init(k_init) if params is None else params
    transition = vae_transition(model, float(lr), int(anneal_steps), float(beta0), bool(dynamic))
    val = val_fn(model, val_x)
    eval_every = max(1, min(eval_every, steps))
    return fit(
        transition,
        transition.init(params),
        jnp.asarray(train_x),
        key=k_fit,
        steps=steps,
        batch_size=batch_size,
        chunk_size=eval_every,
        mode=mode,
        eval_fn=lambda st: {VAL_METRIC: float(val(st.params, k_val))},
        eval_every=eval_every,
        on_eval=plateau_hook(make_plateau(lr, plateau_patience), track_best=True),
        monitor=VAL_METRIC,
        run=run,
        tags=tags or {"model": model.posterior.name},
        mesh=mesh,
        progress=progress,
    )

"""Training the VAEs (thesis section 4.7.1) and the GBNF posterior schedule (section 4.5).

Single posteriors (:func:`train_vae`): Adam (lr 1e-3) on the negative ELBO with the KL term
annealed linearly from ``beta0`` to 1 over ``anneal_steps`` (Bowman et al.; the thesis anneals
over the first 250 of 1000 epochs); every ``eval_every`` steps the validation -ELBO is computed
and the learning rate is halved after ``plateau_patience`` evaluations without improvement; the
parameters with the best validation -ELBO are returned. Steps run in jitted ``lax.scan`` chunks
(:func:`flowjax_thesis.train.fit.make_chunk_runner`); the learning rate lives in the optimizer
state (``optax.inject_hyperparams``), so halving it does not recompile.

The GBNF posterior's schedule is in :mod:`.boosting`.
"""

from __future__ import annotations

import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax_thesis.models.vae.model import VAE
from flowjax_thesis.train.fit import DivergenceError, make_chunk_runner


def make_optimizer(lr: float = 1e-3, clip_norm: float | None = 100.0):
    def build(learning_rate):
        adam = optax.adam(learning_rate)
        return (
            adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)
        )

    return optax.inject_hyperparams(build)(learning_rate=lr)


def set_learning_rate(opt_state, lr: float):
    opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return opt_state


def kl_weight(step, anneal_steps, beta0=0.0):
    """Linear KL annealing: ``beta0`` at step 0 to 1 at ``anneal_steps``."""
    if anneal_steps <= 0:
        return jnp.float32(1.0)
    frac = jnp.clip(step / anneal_steps, 0.0, 1.0)
    return beta0 + (1.0 - beta0) * frac


def _binarize(x, key, dynamic: bool):
    if not dynamic:
        return x
    return jax.random.bernoulli(key, x).astype(x.dtype)


# -- single posteriors ------------------------------------------------------------------------


@flax.struct.dataclass
class VAEState:
    params: Any
    opt_state: Any
    step: jax.Array


def vae_transition(model: VAE, optimizer, anneal_steps: int, beta0: float = 0.0, dynamic=False):
    """A :class:`~flowjax_thesis.train.Transition` over :class:`VAEState` (KL-annealed -ELBO)."""
    from flowjax_thesis.train.transition import Transition

    def init(params):
        return VAEState(params, optimizer.init(params), jnp.int32(0))

    def step(state, batch, key):
        k_bin, k_loss = jax.random.split(key)
        x = _binarize(batch, k_bin, dynamic)
        beta = kl_weight(state.step, anneal_steps, beta0)

        def loss(p):
            return model.neg_elbo(p, x, k_loss, beta)

        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": value, "beta": beta, "grad_norm": optax.global_norm(grads), **aux}
        return VAEState(params, opt_state, state.step + 1), metrics

    return Transition(init, step)


class _Plateau:
    """Halves the learning rate after ``patience`` evaluations without improvement."""

    def __init__(self, lr, patience, factor=0.5, min_lr=1e-5):
        self.lr, self.patience, self.factor, self.min_lr = lr, patience, factor, min_lr
        self.best, self.bad = np.inf, 0

    def update(self, value) -> bool:
        if value < self.best - 1e-4:
            self.best, self.bad = value, 0
            return False
        self.bad += 1
        if self.patience and self.bad >= self.patience and self.lr > self.min_lr:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.bad = 0
            return True
        return False


def _val_fn(model: VAE, x_val, n_val: int = 500, component_convention=True):
    """Jitted validation -ELBO (thesis convention) on up to ``n_val`` examples."""
    x_val = jnp.asarray(x_val[:n_val])

    @jax.jit
    def f(params, key):
        lw = model.log_weights(params, x_val, key, 1, component_convention)
        return -jnp.mean(lw)

    return f


def _run_chunks(runner, state, data, key, start, n, label):
    new, metrics, finite = runner(state, data, key, np.int32(start), n)
    if not bool(finite):
        raise DivergenceError(f"{label}: non-finite loss near step {start}", state, start)
    return new, {k: float(np.mean(v)) for k, v in metrics.items()}


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
    label: str = "vae",
):
    """Trains ``model``; returns ``(best params by validation -ELBO, history list)``."""
    k_init, k_fit, k_val = jax.random.split(key, 3)
    params = model.init(k_init) if params is None else params
    optimizer = make_optimizer(lr)
    transition = vae_transition(model, optimizer, anneal_steps, beta0, dynamic)
    state = transition.init(params)
    train = jnp.asarray(train_x)
    eval_every = max(1, min(eval_every, steps))
    runner = make_chunk_runner(transition, batch_size, train.shape[0])
    val = _val_fn(model, val_x)
    plateau = _Plateau(lr, plateau_patience)
    best_params, best = params, np.inf
    history = []
    t0 = time.time()
    for start in range(0, steps, eval_every):
        n = min(eval_every, steps - start)
        state, m = _run_chunks(runner, state, train, k_fit, start, n, label)
        v = float(val(state.params, k_val))
        if v < best:
            best, best_params = v, state.params
        if plateau.update(v):
            state = state.replace(opt_state=set_learning_rate(state.opt_state, plateau.lr))
        rec = {"step": start + n, "train_loss": m["loss"], "val_neg_elbo": v, "lr": plateau.lr}
        rec.update(beta=m["beta"], kl=m["kl"], reconstruction=m["reconstruction"])
        history.append(rec)
        if run is not None:
            run.log_metrics(start + n, model=label, **{k: v for k, v in rec.items() if k != "step"})
    if run is not None:
        run.print(f"[{label}] {steps} steps in {time.time() - t0:.1f}s; best val -ELBO {best:.3f}")
    return best_params, history

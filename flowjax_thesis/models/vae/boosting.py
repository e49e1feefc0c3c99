"""Training the GBNF posterior of the VAE (thesis section 4.5), on the helpers of
:mod:`.training`.

GBNF (:func:`train_gbnf_vae`), component ``c = 1..C`` in turn, each with the same schedule:

- the new component ``g_c`` minimises eq. 4.21 per example,
  ``-log p(x|z) + max(log G_{c-1}(z|x), floor) + beta (lambda log g_c(z|x) - log p(z))``,
  ``z ~ g_c``, with ``lambda = 1`` and the original code's floor of -10 (``G_MAX_LOSS``); the
  first component is a plain flow VAE. ``G_{c-1}`` is the mixture of the fixed components with
  their normalised weights, evaluated exactly (every fixed component inverted, vmapped), and is
  treated as fixed: its component parameters and the base ``mu, var`` inside it are under
  ``stop_gradient`` (gradients reach ``z`` only). Fixed components never change: their rows of
  the stacked parameters get no gradient and their optimizer updates are masked to zero;
- the encoder and decoder keep training at every stage;
- KL warm-up restarts at each component (``beta`` from ``beta0`` to 1 over ``anneal_steps``);
- decoder-shock remedy: each example's draw comes, with probability annealed linearly from 0 to
  ``shock_max`` (0.5) over the stage, from the fixed mixture ``G_{c-1}`` instead of ``g_c``
  (its loss is then that component's plain -ELBO, training only the encoder and the decoder);
- after the stage, ``rho_c`` by Algorithm 1 (:func:`flowjax_thesis.models.gbnf.
  rho_sgd_transition`, SGD from ``1/C`` with the decaying step ``lr / (1 + 0.1 t)``, at most
  100 iterations, gradient eq. 4.23 on training minibatches) and
  :meth:`~flowjax_thesis.models.gbnf.GBNF.assign_weight` (the others share ``1 - rho``);
- GBNF+ (``finetune_steps > 0``): one more pass retraining each component against the mixture
  of all the others (no warm-up restart) and refitting its weight.
"""

from __future__ import annotations

import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax_thesis.models.vae.likelihoods import log_normal_diag, log_standard_normal
from flowjax_thesis.models.vae.model import VAE
from flowjax_thesis.models.vae.posteriors import Boosted
from flowjax_thesis.models.vae.training import (
    _binarize,
    _Plateau,
    _run_chunks,
    _val_fn,
    make_optimizer,
    set_learning_rate,
)
from flowjax_thesis.train.fit import make_chunk_runner


@flax.struct.dataclass
class BoostState:
    params: Any  # the model params; params["flow"] is the GBNF params dict
    opt_state: Any
    index: jax.Array  # the component being trained
    step: jax.Array  # step within the stage
    stage_len: jax.Array
    anneal_steps: jax.Array
    shock_max: jax.Array


def _trainable(params):
    flow = params["flow"]
    return {**{k: v for k, v in params.items() if k != "flow"}, "components": flow["components"]}


def _merge(params, trainable):
    flow = {**params["flow"], "components": trainable["components"]}
    return {**{k: v for k, v in trainable.items() if k != "components"}, "flow": flow}


def boosted_loss(
    model: VAE,
    params,
    x,
    key,
    index,
    beta,
    shock_p,
    regularization: float = 1.0,
    log_g_floor: float | None = -10.0,
):
    """Eq. 4.21 for component ``index`` with the decoder-shock mixing; mean over the batch."""
    post: Boosted = model.posterior
    gp = params["flow"]
    frozen = jax.lax.stop_gradient(gp)
    log_w_fixed, has_fixed = post.log_weights(frozen, exclude=index)
    # with no fixed component (the first stage) use a dummy one so that no -inf/NaN enters the
    # gradient through the unselected branches below
    dummy = jnp.where(jnp.arange(post.num_components) == 0, 0.0, -jnp.inf)
    log_w_fixed = jnp.where(has_fixed, log_w_fixed, dummy)
    enc = model.encode(params, x)
    b = x.shape[0]
    k_eps, k_mix, k_j = jax.random.split(key, 3)
    eps = jax.random.normal(k_eps, enc["mu"].shape)
    z0 = enc["mu"] + jnp.exp(0.5 * enc["log_var"]) * eps
    log_q0 = log_normal_diag(z0, enc["mu"], enc["log_var"])
    # the new component (row ``index`` of the stacked params: gradient to that row only)
    z_g, ld_g = post.push_component(gp, index, z0)
    log_g = log_q0 - ld_g
    # a fixed component per example (for the decoder-shock remedy), frozen parameters
    j = jax.random.categorical(k_j, log_w_fixed, shape=(b,))
    zs, lds = post.push_all(frozen, z0)
    rows = jnp.arange(b)
    z_f, log_f = zs[j, rows], log_q0 - lds[j, rows]
    use_fixed = has_fixed & (jax.random.uniform(k_mix, (b,)) < shock_p)
    z = jnp.where(use_fixed[:, None], z_f, z_g)
    rec = -model.log_lik(params, x, z)
    log_p = log_standard_normal(z)
    # log G_{c-1}(z_g | x): fixed mixture, fixed base (stop_gradient on mu, var)
    enc_fixed = {
        "mu": jax.lax.stop_gradient(enc["mu"]),
        "log_var": jax.lax.stop_gradient(enc["log_var"]),
    }
    log_G = jax.vmap(lambda e, zz: post.mixture_log_prob(frozen, e, zz[None], log_w_fixed)[0])(
        enc_fixed, z_g
    )
    log_G_used = log_G if log_g_floor is None else jnp.maximum(log_G, log_g_floor)
    boosted = rec + log_G_used + beta * (regularization * log_g - log_p)
    plain_g = rec + beta * (log_g - log_p)
    plain_f = rec + beta * (log_f - log_p)
    per_example = jnp.where(use_fixed, plain_f, jnp.where(has_fixed, boosted, plain_g))
    aux = {
        "reconstruction": jnp.mean(rec),
        "kl": jnp.mean(jnp.where(use_fixed, log_f, log_g) - log_p),
        "log_G": jnp.mean(jnp.where(has_fixed, log_G, 0.0)),
        "fixed_fraction": jnp.mean(use_fixed.astype(jnp.float32)),
    }
    return jnp.mean(per_example), aux


def boost_transition(
    model: VAE,
    optimizer,
    beta0: float = 0.0,
    regularization: float = 1.0,
    log_g_floor: float | None = -10.0,
    dynamic: bool = False,
):
    """A Transition training component ``state.index`` (and the encoder/decoder)."""
    from flowjax_thesis.train.transition import Transition

    c = model.posterior.num_components

    def init(params, index, stage_len, anneal_steps, shock_max):
        return BoostState(
            params,
            optimizer.init(_trainable(params)),
            jnp.int32(index),
            jnp.int32(0),
            jnp.int32(stage_len),
            jnp.int32(anneal_steps),
            jnp.float32(shock_max),
        )

    def step(state: BoostState, batch, key):
        k_bin, k_loss = jax.random.split(key)
        x = _binarize(batch, k_bin, dynamic)
        beta = jnp.where(
            state.anneal_steps > 0,
            beta0 + (1 - beta0) * jnp.clip(state.step / jnp.maximum(state.anneal_steps, 1), 0, 1),
            1.0,
        )
        shock_p = state.shock_max * jnp.clip(state.step / jnp.maximum(state.stage_len, 1), 0, 1)

        def loss(tr):
            p = _merge(state.params, tr)
            return boosted_loss(
                model, p, x, k_loss, state.index, beta, shock_p, regularization, log_g_floor
            )

        tr = _trainable(state.params)
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(tr)
        updates, opt_state = optimizer.update(grads, state.opt_state, tr)
        row = jax.nn.one_hot(state.index, c)
        updates["components"] = jax.tree.map(
            lambda u: u * row.reshape((-1,) + (1,) * (u.ndim - 1)).astype(u.dtype),
            updates["components"],
        )
        tr = optax.apply_updates(tr, updates)
        metrics = {"loss": value, "beta": beta, "shock_p": shock_p, **aux}
        new = state.replace(
            params=_merge(state.params, tr), opt_state=opt_state, step=state.step + 1
        )
        return new, metrics

    return Transition(init, step)


def _gbnf(model):
    return model.posterior.gbnf(model.latent)


def rho_gradient(model: VAE, params, index, num_draws: int = 1):
    """Eq. 4.23 on a minibatch: ``mean gamma(z ~ g_c) - mean gamma(z ~ G_{c-1})`` with
    ``gamma_rho(z) = log((1 - rho) G_{c-1}(z|x) + rho g_c(z|x)) - log p(x, z)``."""
    post: Boosted = model.posterior
    gp = params["flow"]
    log_w_fixed, _ = post.log_weights(gp, exclude=index)
    one_hot = jnp.where(jnp.arange(post.num_components) == index, 0.0, -jnp.inf)

    def grad(rho, batch, key):
        x = batch
        enc = model.encode(params, x)
        k_g, k_G = jax.random.split(key)

        def draws(log_w, k):
            keys = jax.random.split(k, x.shape[0])
            return jax.vmap(lambda e, kk: post.sample_components(gp, e, kk, num_draws, log_w)[0])(
                enc, keys
            )

        def gamma(z):
            log_G = jax.vmap(lambda e, zz: post.mixture_log_prob(gp, e, zz, log_w_fixed))(enc, z)
            log_g = jax.vmap(lambda e, zz: post.mixture_log_prob(gp, e, zz, one_hot))(enc, z)
            mix = jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + log_g)
            log_joint = model.log_lik(params, x[:, None], z) + log_standard_normal(z)
            return jnp.mean(mix - log_joint)

        return gamma(draws(one_hot, k_g)) - gamma(draws(log_w_fixed, k_G))

    return grad


def fit_rho(model: VAE, params, index, train_x, key, steps=100, batch_size=64, lr=0.005):
    """Algorithm 1 for component ``index``; returns ``(params with the new weight, rho)``."""
    from flowjax_thesis.models.gbnf import rho_sgd_transition

    gbnf = _gbnf(model)
    active = np.asarray(params["flow"]["active"]).copy()
    active[index] = False
    if not active.any():
        return {**params, "flow": gbnf.assign_weight(params["flow"], index, 1.0)}, 1.0
    tr = rho_sgd_transition(rho_gradient(model, params, index), lr=lr, decay=0.1)
    state = tr.init(1.0 / gbnf.num_components)
    x = jnp.asarray(train_x)
    runner = make_chunk_runner(tr, batch_size, x.shape[0])
    state, _, _ = runner(state, x, key, np.int32(0), steps)
    rho = float(np.clip(float(state.rho), 5e-4, 0.999))  # the original code's clip
    return {**params, "flow": gbnf.assign_weight(params["flow"], index, rho)}, rho


def _with_current(model, params, index):
    """Params for evaluating during the stage of an inactive component: it joins the mixture
    at weight ``1/C`` (the original code's initial rho)."""
    gbnf = _gbnf(model)
    flow = params["flow"]
    active = bool(np.asarray(flow["active"])[index])
    if active:
        return params
    rho = 1.0 / gbnf.num_components
    return {**params, "flow": gbnf.assign_weight(flow, index, rho)}


def train_gbnf_vae(
    model: VAE,
    train_x,
    val_x,
    *,
    key,
    steps_per_component: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    anneal_steps: int = 0,
    beta0: float = 0.0,
    eval_every: int = 100,
    plateau_patience: int = 0,
    shock_max: float = 0.5,
    regularization: float = 1.0,
    log_g_floor: float | None = -10.0,
    finetune_steps: int = 0,
    rho_steps: int = 100,
    rho_lr: float = 0.005,
    dynamic: bool = False,
    params=None,
    run=None,
    label: str = "gbnf",
    snapshot_after_boost: bool = True,
):
    """Boosts ``model.posterior.num_components`` RealNVP components in turn (then GBNF+).

    Returns ``(params, info)``: ``info["history"]`` (per evaluation: global step, component,
    phase, train loss, validation -ELBO), ``info["boundaries"]`` (global steps where a stage
    starts), ``info["rho"]`` per stage and ``info["params_gbnf"]`` (the params before
    fine-tuning, when ``finetune_steps > 0``).
    """
    if not isinstance(model.posterior, Boosted):
        raise TypeError("train_gbnf_vae needs a VAE whose posterior is make_posterior('gbnf')")
    k_init, k_fit, k_val, k_rho = jax.random.split(key, 4)
    params = model.init(k_init) if params is None else params
    c_total = model.posterior.num_components
    optimizer = make_optimizer(lr)
    transition = boost_transition(model, optimizer, beta0, regularization, log_g_floor, dynamic)
    train = jnp.asarray(train_x)
    runner = make_chunk_runner(transition, batch_size, train.shape[0])
    val = _val_fn(model, val_x)
    schedule = [(c, "boost") for c in range(c_total)]
    if finetune_steps > 0:
        schedule += [(c, "finetune") for c in range(c_total)]
    info: dict = {"history": [], "boundaries": [], "rho": [], "stages": []}
    global_step = 0
    t0 = time.time()
    for n_stage, (c, phase) in enumerate(schedule):
        if phase == "finetune" and "params_gbnf" not in info and snapshot_after_boost:
            info["params_gbnf"] = params
        stage_len = steps_per_component if phase == "boost" else finetune_steps
        warm = anneal_steps if phase == "boost" else 0
        shock = shock_max if c > 0 or phase == "finetune" else 0.0
        state = transition.init(params, c, stage_len, warm, shock)
        plateau = _Plateau(lr, plateau_patience)
        info["boundaries"].append(global_step)
        every = max(1, min(eval_every, stage_len))
        k_stage = jax.random.fold_in(k_fit, n_stage)
        for start in range(0, stage_len, every):
            n = min(every, stage_len - start)
            state, m = _run_chunks(runner, state, train, k_stage, start, n, f"{label} c={c}")
            v = float(val(_with_current(model, state.params, c), k_val))
            if plateau.update(v):
                state = state.replace(opt_state=set_learning_rate(state.opt_state, plateau.lr))
            global_step += n
            rec = {
                "step": global_step,
                "component": c,
                "phase": phase,
                "train_loss": m["loss"],
                "val_neg_elbo": v,
                "beta": m["beta"],
                "shock_p": m["shock_p"],
                "lr": plateau.lr,
            }
            info["history"].append(rec)
            if run is not None:
                run.log_metrics(
                    global_step, model=label, **{k: v for k, v in rec.items() if k != "step"}
                )
        params = state.params
        params, rho = fit_rho(
            model,
            params,
            c,
            train,
            jax.random.fold_in(k_rho, n_stage),
            rho_steps,
            batch_size,
            rho_lr,
        )
        weights = _gbnf(model).weights(params["flow"]).round(3).tolist()
        info["rho"].append(rho)
        info["stages"].append({"component": c, "phase": phase, "rho": rho, "weights": weights})
        if run is not None:
            run.print(
                f"[{label}] {phase} component {c + 1}/{c_total}: rho {rho:.3f}, weights {weights}"
            )
    info["seconds"] = time.time() - t0
    return params, info


def shock_jumps(info: dict, window: float = 0.25) -> list[float]:
    """Decoder-shock jump at each boosting boundary: the peak validation -ELBO in the first
    ``window`` fraction of a stage minus the last value of the previous stage (nats)."""
    hist = [h for h in info["history"] if h["phase"] == "boost"]
    jumps = []
    comps = sorted({h["component"] for h in hist})
    for c in comps[1:]:
        prev = [h["val_neg_elbo"] for h in hist if h["component"] == c - 1]
        cur = [h["val_neg_elbo"] for h in hist if h["component"] == c]
        if not prev or not cur:
            continue
        k = max(1, int(round(window * len(cur))))
        jumps.append(float(max(cur[:k]) - prev[-1]))
    return jumps

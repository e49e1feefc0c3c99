"""Training the GBNF posterior of the VAE (thesis section 4.5) with the one boosting driver
(:func:`flowjax_thesis.models.gbnf.boost`): each stage is one ``fit`` call of one transition
(built once; the state holds the component index and the stage's schedule), named by its tags
(``{**tags, "component": c, "phase": "boost" | "finetune1"}``), so a resumed run restores the
finished stages from their checkpoints and continues the interrupted one; the weight fit is a
second ``fit`` call per stage (phase ``"boost-rho"``, ...).

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
- the learning rate halves on a validation plateau (``optax.contrib.reduce_on_plateau`` fed by
  an ``on_eval`` hook, restarted at each stage); during a stage the validation -ELBO counts the
  new component at weight ``1/C``;
- after the stage, ``rho_c`` by Algorithm 1 (:func:`flowjax_thesis.models.gbnf.
  rho_sgd_transition`: projected SGD from ``1/C`` with the decaying step ``lr / (1 + 0.1 t)``,
  at most 100 iterations, gradient eq. 4.23 on training minibatches) and
  :meth:`~flowjax_thesis.models.gbnf.GBNF.assign_weight` (the others share ``1 - rho``);
- GBNF+ (``finetune_steps > 0``): one more pass retraining each component against the mixture
  of all the others (no warm-up restart) and refitting its weight.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax_thesis.models.gbnf import boost, make_schedule, rho_sgd_transition
from flowjax_thesis.models.vae.likelihoods import log_standard_normal
from flowjax_thesis.models.vae.model import VAE
from flowjax_thesis.models.vae.posteriors import Boosted, diag_normal
from flowjax_thesis.models.vae.training import (
    VAL_METRIC,
    binarize,
    kl_weight,
    make_optimizer,
    make_plateau,
    plateau_hook,
    plateau_init,
    scale_updates,
    val_fn,
)
from flowjax_thesis.train import fit
from flowjax_thesis.train.transition import Transition


@flax.struct.dataclass
class BoostState:
    params: Any  # the model params; params["flow"] is the GBNF params dict
    opt_state: Any
    plateau: Any  # optax.contrib.ReduceLROnPlateauState
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
    gbnf = post.gbnf(model.latent)
    flow = model.posterior_flow
    gp = params["flow"]
    frozen = jax.lax.stop_gradient(gp)
    log_w_fixed, has_fixed = gbnf.mixture_log_weights(frozen, exclude=index)
    # with no fixed component (the first stage) use a dummy one so that no -inf/NaN enters the
    # gradient through the unselected branches below
    dummy = jnp.where(jnp.arange(post.num_components) == 0, 0.0, -jnp.inf)
    log_w_fixed = jnp.where(has_fixed, log_w_fixed, dummy)
    ctx = post.context(model.encode(params, x))
    b = x.shape[0]
    k_eps, k_mix, k_j = jax.random.split(key, 3)
    z0, log_q0 = diag_normal(ctx).sample_and_log_prob(seed=k_eps)
    # the new component (row ``index`` of the stacked params: gradient to that row only)
    z_g, ld_g = flow.bijector(post.component(gp, index)).forward_and_log_det(z0)
    log_g = log_q0 - ld_g
    # a fixed component per example (for the decoder-shock remedy), frozen parameters
    j = jax.random.categorical(k_j, log_w_fixed, shape=(b,))
    zs, lds = post.push_all(model.latent, frozen, z0)
    rows = jnp.arange(b)
    z_f, log_f = zs[j, rows], log_q0 - lds[j, rows]
    use_fixed = has_fixed & (jax.random.uniform(k_mix, (b,)) < shock_p)
    z = jnp.where(use_fixed[:, None], z_f, z_g)
    rec = -model.log_lik(params, x, z)
    log_p = log_standard_normal(z)
    # log G_{c-1}(z_g | x): fixed mixture, fixed base (stop_gradient on mu, var)
    log_G, _ = gbnf.log_prob_excluding(frozen, index, z_g, jax.lax.stop_gradient(ctx))
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


@functools.lru_cache(maxsize=16)
def boost_transition(
    model: VAE,
    lr: float = 1e-3,
    beta0: float = 0.0,
    regularization: float = 1.0,
    log_g_floor: float | None = -10.0,
    dynamic: bool = False,
) -> Transition:
    """A Transition training component ``state.index`` (and the encoder/decoder);
    ``init(params, index, stage_len, anneal_steps, shock_max)``. Built once per settings: every
    stage (and every seed) shares one compiled runner."""
    optimizer = make_optimizer(lr)
    c = model.posterior.num_components

    def init(params, index, stage_len, anneal_steps, shock_max):
        return BoostState(
            params,
            optimizer.init(_trainable(params)),
            plateau_init(_trainable(params)),
            jnp.int32(index),
            jnp.int32(0),
            jnp.int32(stage_len),
            jnp.int32(anneal_steps),
            jnp.float32(shock_max),
        )

    def step(state: BoostState, batch, key):
        k_bin, k_loss = jax.random.split(key)
        x = binarize(batch, k_bin, dynamic)
        beta = kl_weight(state.step, state.anneal_steps, beta0)
        shock_p = state.shock_max * jnp.clip(state.step / jnp.maximum(state.stage_len, 1), 0, 1)

        def loss(tr):
            p = _merge(state.params, tr)
            return boosted_loss(
                model, p, x, k_loss, state.index, beta, shock_p, regularization, log_g_floor
            )

        tr = _trainable(state.params)
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(tr)
        updates, opt_state = optimizer.update(grads, state.opt_state, tr)
        updates = scale_updates(updates, state.plateau)
        row = jax.nn.one_hot(state.index, c)
        updates["components"] = jax.tree.map(
            lambda u: u * row.reshape((-1,) + (1,) * (u.ndim - 1)).astype(u.dtype),
            updates["components"],
        )
        tr = optax.apply_updates(tr, updates)
        metrics = {
            "loss": value,
            "beta": beta,
            "shock_p": shock_p,
            "lr": lr * state.plateau.scale,
            **aux,
        }
        new = state.replace(
            params=_merge(state.params, tr), opt_state=opt_state, step=state.step + 1
        )
        return new, metrics

    return Transition(init, step)


# -- the weight: Algorithm 1 through the engine ----------------------------------------------


def rho_gradient(model: VAE, rho, batch, key, frozen, num_draws: int = 1):
    """Eq. 4.23 on a minibatch: ``mean gamma(z ~ g_c) - mean gamma(z ~ G_{c-1})`` with
    ``gamma_rho(z) = log((1 - rho) G_{c-1}(z|x) + rho g_c(z|x)) - log p(x, z)``; ``frozen`` holds
    the model ``params`` and the component ``index``."""
    post: Boosted = model.posterior
    gbnf = post.gbnf(model.latent)
    params, index = frozen["params"], frozen["index"]
    gp = params["flow"]
    log_w_fixed, _ = gbnf.mixture_log_weights(gp, exclude=index)
    one_hot = jnp.where(jnp.arange(post.num_components) == index, 0.0, -jnp.inf)
    x = batch
    ctx = post.context(model.encode(params, x))
    k_g, k_G = jax.random.split(key)

    def draws(log_w, k):
        keys = jax.random.split(k, x.shape[0])
        return jax.vmap(lambda c, kk: post.draw(model.latent, gp, c, kk, num_draws, log_w)[0])(
            ctx, keys
        )

    def gamma(z):  # z: (B, n, d)
        zt = jnp.swapaxes(z, 0, 1)  # (n, B, d): the context's batch is the trailing one
        log_G, _ = gbnf.log_prob_excluding(gp, index, zt, ctx)
        log_g = gbnf.component_log_prob(post.component(gp, index), index, zt, ctx)
        mix = jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + log_g)
        log_joint = model.log_lik(params, x, zt) + log_standard_normal(zt)
        return jnp.mean(mix - log_joint)

    return gamma(draws(one_hot, k_g)) - gamma(draws(log_w_fixed, k_G))


@functools.lru_cache(maxsize=16)
def rho_transition(model: VAE, lr: float = 0.005) -> Transition:
    """Algorithm 1 (:func:`~flowjax_thesis.models.gbnf.rho_sgd_transition`) on
    :func:`rho_gradient`; ``init(rho0, {"params": params, "index": index})``."""
    return rho_sgd_transition(functools.partial(rho_gradient, model), lr=lr, decay=0.1)


def fit_rho(
    model: VAE,
    params,
    index: int,
    train_x,
    key,
    steps: int = 100,
    batch_size: int = 64,
    lr: float = 0.005,
    run=None,
    tags: dict | None = None,
    mesh=None,
):
    """Algorithm 1 for component ``index`` as one ``fit`` call; returns ``(params with the new
    weight, rho)`` (the first component gets weight 1 without a fit)."""
    gbnf = model.posterior.gbnf(model.latent)
    active = np.asarray(params["flow"]["active"]).copy()
    active[index] = False
    if not active.any():
        return {**params, "flow": gbnf.assign_weight(params["flow"], index, 1.0)}, 1.0
    tr = rho_transition(model, float(lr))
    state = tr.init(1.0 / gbnf.num_components, {"params": params, "index": jnp.int32(index)})
    result = fit(
        tr,
        state,
        jnp.asarray(train_x),
        key=key,
        steps=steps,
        batch_size=batch_size,
        chunk_size=max(steps, 1),
        run=run,
        tags=tags,
        mesh=mesh,
        progress=False,
    )
    rho = float(np.clip(float(result.state.rho), 5e-4, 0.999))  # the original code's clip
    return {**params, "flow": gbnf.assign_weight(params["flow"], index, rho)}, rho


def with_current(model: VAE, params, index):
    """Params for evaluating during the stage of an inactive component ``index`` (may be
    traced): it joins the mixture at weight ``1/C`` (the original code's initial rho)."""
    gbnf = model.posterior.gbnf(model.latent)
    flow = params["flow"]
    joined = gbnf.assign_weight(flow, index, 1.0 / gbnf.num_components)
    active = flow["active"][index]
    flow = jax.tree.map(lambda a, b: jnp.where(active, a, b), flow, joined)
    return {**params, "flow": flow}


# -- the schedule -------------------------------------------------------------------------------


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
    tags: dict | None = None,
    mesh=None,
    mode: str = "scan",
    snapshot_after_boost: bool = True,
):
    """Boosts ``model.posterior.num_components`` RealNVP components in turn (then GBNF+).

    Returns ``(params, info)``: ``info["history"]`` (per evaluation: global step, component,
    phase, train loss, validation -ELBO; a resumed run has the whole history),
    ``info["boundaries"]`` (global steps where a stage
    starts), ``info["rho"]`` and ``info["stages"]`` per stage and ``info["params_gbnf"]`` (the
    params before fine-tuning, when ``finetune_steps > 0``).
    """
    if not isinstance(model.posterior, Boosted):
        raise TypeError("train_gbnf_vae needs a VAE whose posterior is make_posterior('gbnf')")
    k_init, k_fit, k_val = jax.random.split(key, 3)
    params = model.init(k_init) if params is None else params
    c_total = model.posterior.num_components
    tags = dict(tags or {"model": "gbnf"})
    transition = boost_transition(
        model, float(lr), float(beta0), float(regularization), log_g_floor, bool(dynamic)
    )
    train = jnp.asarray(train_x)
    val = val_fn(model, val_x)
    val_current = jax.jit(lambda p, i, k: val(with_current(model, p, i), k))
    stages = make_schedule(
        c_total,
        steps_per_component,
        finetune_passes=1 if finetune_steps > 0 else 0,
        finetune_steps=finetune_steps or None,
    )
    info: dict = {"history": [], "boundaries": [], "rho": [], "stages": []}

    def init_state(p, stage):
        boosting = stage.phase == "boost"
        shock = shock_max if stage.component > 0 or not boosting else 0.0
        warm = anneal_steps if boosting else 0
        return transition.init(p, stage.component, stage.steps, warm, shock)

    def before_stage(p, stage):
        if stage.phase != "boost" and "params_gbnf" not in info and snapshot_after_boost:
            info["params_gbnf"] = p
        return p

    def fit_weight(p, stage, k):
        rho_tags = {**tags, "component": stage.component, "phase": f"{stage.phase}-rho"}
        p, rho = fit_rho(
            model, p, stage.component, train, k, rho_steps, batch_size, rho_lr, run, rho_tags, mesh
        )
        weights = model.posterior.gbnf(model.latent).weights(p["flow"]).round(3).tolist()
        info["rho"].append(rho)
        return p, {"rho": rho, "weights": weights}

    every = max(1, min(eval_every, min(s.steps for s in stages)))
    params, out = boost(
        transition,
        params,
        stages,
        key=k_fit,
        init_state=init_state,
        fit_weight=fit_weight,
        before_stage=before_stage,
        data=train,
        tags=tags,
        run=run,
        batch_size=batch_size,
        chunk_size=every,
        mode=mode,
        eval_fn=lambda st: {VAL_METRIC: float(val_current(st.params, st.index, k_val))},
        eval_every=every,
        on_eval=plateau_hook(make_plateau(lr, plateau_patience)),
        monitor=VAL_METRIC,
        mesh=mesh,
    )
    info["stages"] = [
        {k: r[k] for k in ("component", "phase", "rho", "weights")} for r in out["stages"]
    ]
    info["seconds"] = out["seconds"]
    offset = 0
    for stage, result in zip(stages, out["results"], strict=True):
        info["boundaries"].append(offset)
        records = result.history  # a resumed stage's history starts with its logged records
        for r in sorted(records, key=lambda r: r["step"]):
            if VAL_METRIC in r:
                info["history"].append(
                    {
                        "step": offset + r["step"],
                        "component": stage.component,
                        "phase": stage.phase,
                        "train_loss": r.get("loss"),
                        VAL_METRIC: r[VAL_METRIC],
                    }
                )
        offset += stage.steps
    return params, info


BUDGETS = ("shared", "per_component")


def split_budget(
    steps: int,
    anneal_steps: int,
    num_components: int,
    finetune_steps: int = 0,
    rho_steps: int = 100,
    mode: str = "shared",
) -> dict:
    """GBNF's schedule from a total training budget of ``steps`` (what every single posterior
    gets).

    ``mode="shared"``: the ``C`` components share the budget: ``C`` boosting stages of ``(steps -
    C * finetune_steps) // C`` steps (KL annealed over the same fraction of the stage as
    ``anneal_steps`` is of ``steps``) and ``C`` fine-tuning stages of ``finetune_steps``, so
    GBNF+ trains (up to rounding) ``steps`` and GBNF, the run before fine-tuning, ``C *
    finetune_steps`` fewer. ``mode="per_component"``: the thesis's schedule, each boosting stage
    gets ``steps`` (GBNF trains ``C`` times longer than the others). Algorithm 1's
    ``rho_steps`` per component train the weight alone and are not counted.
    """
    c, f = int(num_components), int(finetune_steps)
    if mode == "shared":
        boost = (steps - c * f) // c
        if boost < 1:
            raise ValueError(
                f"setting 'steps' ({steps}) must exceed gbnf_components * finetune_steps "
                f"({c} * {f}) when gbnf_budget='shared': the components share the budget"
            )
        anneal = int(round(anneal_steps * boost / steps))
        split = (
            f"shared: {c} boosting stages of {boost} steps (KL annealed over {anneal}) + "
            f"{c} fine-tuning stages of {f} steps = {c * (boost + f)} steps for GBNF+ "
            f"(budget {steps}); GBNF is the same run before fine-tuning ({c * boost} steps)"
        )
    elif mode == "per_component":
        boost, anneal = int(steps), int(anneal_steps)
        split = (
            f"per_component (the thesis's schedule): {c} boosting stages of {boost} steps each "
            f"+ {c} fine-tuning stages of {f} steps = {c * (boost + f)} steps for GBNF+, "
            f"{c * boost} for GBNF, against {steps} for every other posterior"
        )
    else:
        raise ValueError(f"setting 'gbnf_budget' must be one of {BUDGETS}, got {mode!r}")
    return {
        "split": split,
        "steps_every_other_posterior": int(steps),
        "gbnf_boost_steps_per_component": boost,
        "gbnf_anneal_steps_per_stage": anneal,
        "gbnf_finetune_steps_per_component": f,
        "gbnf_total_steps": c * boost,
        "gbnf_plus_total_steps": c * (boost + f),
        "gbnf_rho_steps_per_component": int(rho_steps),
        "rho_steps_note": "Algorithm 1 trains the new component's weight alone (no network "
        "parameter); not counted in the budget",
    }


def shock_jumps(info: dict, window: float = 0.25) -> list[float]:
    """Decoder-shock jump at each boosting boundary: the peak validation -ELBO in the first
    ``window`` fraction of a stage minus the last value of the previous stage (nats)."""
    hist = [h for h in info["history"] if h["phase"] == "boost"]
    jumps = []
    comps = sorted({h["component"] for h in hist})
    for c in comps[1:]:
        prev = [h[VAL_METRIC] for h in hist if h["component"] == c - 1]
        cur = [h[VAL_METRIC] for h in hist if h["component"] == c]
        if not prev or not cur:
            continue
        k = max(1, int(round(window * len(cur))))
        jumps.append(float(max(cur[:k]) - prev[-1]))
    return jumps

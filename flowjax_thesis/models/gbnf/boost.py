"""The one boosting driver: train components one after another through the engine.

Boosting (Algorithm 1) is a sequence of *stages*: train component ``c`` against the frozen
others, then fit its weight ``rho_c``; optional fine-tuning passes retrain each component
against all the others. Density estimation (:func:`~flowjax_thesis.models.gbnf.density.
boost_density`), variational inference (:func:`~flowjax_thesis.models.gbnf.vi.boost_vi`) and
the VAE's boosted posterior differ only in the stage's loss, its state and how ``rho`` is fitted,
so they share :func:`boost`:

- the training of every stage is ONE :func:`flowjax_thesis.train.fit` call of ONE
  :class:`~flowjax_thesis.train.Transition` whose state carries the index of the trained
  component (one compiled runner serves every stage), with its own ``tags``
  (``{**tags, "component": c, "phase": "boost" | "finetune1" | ...}``): with ``run`` given the
  checkpoints land in the run directory and a resumed run restores finished stages instantly
  and continues the interrupted one;
- the weight is fitted by a callback (a line search on the host, or Algorithm 1 as another
  ``fit`` call of :func:`~flowjax_thesis.models.gbnf.rho.rho_sgd_transition`).

:func:`stage_transition` builds the usual stage transition for a GBNF: the optimizer acts on
the stacked ``components``; the gradient is nonzero only in row ``index`` (the component is read
with a dynamic index, everything else goes through ``stop_gradient``) and the updates are
masked to that row as well (``one_hot(index)``), so frozen components stay bit-identical.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from flowjax_thesis.models.gbnf.model import GBNF
from flowjax_thesis.models.gbnf.weights import take
from flowjax_thesis.train import fit
from flowjax_thesis.train.transition import Transition


def built_once(build: Callable) -> Callable:
    """``build`` memoised on its (hashable) arguments, so that equal settings get the same
    transition object and the engine's compiled runner is reused; unhashable arguments (e.g. a
    model holding arrays) build afresh."""
    cache = functools.lru_cache(maxsize=32)(build)

    @functools.wraps(build)
    def get(*args):
        try:
            hash(args)
        except TypeError:
            return build(*args)
        return cache(*args)

    return get


@flax.struct.dataclass
class StageState:
    params: Any
    opt_state: Any
    index: jax.Array  # int32: the component being trained


def stage_transition(gbnf: GBNF, loss_fn: Callable, optimizer) -> Transition:
    """A Transition training component ``state.index`` of ``gbnf`` on
    ``loss_fn(component_params, frozen_params, index, batch, key) -> (loss, aux)``;
    ``init(params, index)``."""

    def init(params, index) -> StageState:
        return StageState(params, optimizer.init(params["components"]), jnp.int32(index))

    def loss(components, params, index, batch, key):
        frozen = jax.lax.stop_gradient(params)
        return loss_fn(take(components, index), frozen, index, batch, key)

    def step(state: StageState, batch, key):
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(
            state.params["components"], state.params, state.index, batch, key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params["components"])
        row = jax.nn.one_hot(state.index, gbnf.num_components)
        updates = jax.tree.map(lambda u: u * row.reshape((-1,) + (1,) * (u.ndim - 1)), updates)
        components = optax.apply_updates(state.params["components"], updates)
        metrics = {"loss": value, "grad_norm": optax.global_norm(grads), **aux}
        new = StageState({**state.params, "components": components}, opt_state, state.index)
        return new, metrics

    return Transition(init, step)


@dataclass(frozen=True)
class Stage:
    """One boosting stage: train ``component`` for ``steps`` steps in ``phase``."""

    component: int
    phase: str
    steps: int


def make_schedule(
    num_components: int,
    steps: int,
    start: int = 0,
    finetune_passes: int = 0,
    finetune_steps: int | None = None,
) -> list[Stage]:
    """Boost components ``start .. C-1`` (``steps`` each), then ``finetune_passes`` passes over
    all components (``finetune_steps`` each, default ``steps``), phases ``finetune1, ...``."""
    if steps < 1:
        raise ValueError(f"steps (per component) must be >= 1, got {steps}")
    if finetune_passes < 0:
        raise ValueError(f"finetune_passes must be >= 0, got {finetune_passes}")
    stages = [Stage(c, "boost", steps) for c in range(start, num_components)]
    for p in range(finetune_passes):
        n = finetune_steps or steps
        stages += [Stage(c, f"finetune{p + 1}", n) for c in range(num_components)]
    return stages


def chunk_for(steps: int, max_chunk: int = 500) -> int:
    """A chunk size for ``steps`` steps: the largest divisor of ``steps`` up to ``max_chunk``
    (every chunk one shape, one compilation), or ``max_chunk`` when that divisor is small."""
    if steps <= max_chunk:
        return max(int(steps), 1)
    best = max(d for d in range(1, max_chunk + 1) if steps % d == 0)
    return best if best * 4 >= max_chunk else max_chunk


def stage_tags(tags: dict | None, stage: Stage, suffix: str = "") -> dict:
    return {**(tags or {}), "component": int(stage.component), "phase": stage.phase + suffix}


def describe(tags: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (tags or {}).items()) or "gbnf"


def boost(
    transition: Transition,
    params,
    stages: Sequence[Stage],
    *,
    key,
    init_state: Callable[[Any, Stage], Any],
    fit_weight: Callable[[Any, Stage, jax.Array], tuple[Any, dict]],
    get_params: Callable[[Any], Any] = lambda state: state.params,
    before_stage: Callable[[Any, Stage], Any] | None = None,
    data=None,
    tags: dict | None = None,
    run=None,
    max_chunk: int = 500,
    **fit_kwargs,
) -> tuple[Any, dict]:
    """Runs ``stages`` in order; returns ``(params, info)``.

    For stage ``n`` (a :class:`Stage`): ``params = before_stage(params, stage)`` (e.g. ActNorm
    data init of a new component), ``state = init_state(params, stage)``, then
    ``fit(transition, state, data, key=fold_in(key, n), steps=stage.steps, tags=stage_tags(tags,
    stage), run=run, **fit_kwargs)``; ``params = get_params(result.state)``; then
    ``params, record = fit_weight(params, stage, fold_in(key, 10_000 + n))``. ``transition``
    must be built once (its state holds the component index), so every stage reuses one
    compiled runner. ``fit_kwargs`` go to every stage's ``fit`` (``batch_size``, ``batches``,
    ``mode``, ``eval_fn``, ``eval_every``, ``on_eval``, ``mesh``, ``progress``, ...).

    ``info``: ``stages`` (one record per stage: component, phase, the stage's last training
    loss when it trained in this call, and what ``fit_weight`` returned), ``results`` (the
    stages' :class:`~flowjax_thesis.train.FitResult`) and ``seconds``.
    """
    info: dict = {"stages": [], "results": [], "seconds": 0.0}
    t0 = time.time()
    for n, stage in enumerate(stages):
        if before_stage is not None:
            params = before_stage(params, stage)
        st_tags = stage_tags(tags, stage)
        kwargs = {"chunk_size": chunk_for(stage.steps, max_chunk), "progress": False}
        kwargs.update(fit_kwargs)
        result = fit(
            transition,
            init_state(params, stage),
            data,
            key=jax.random.fold_in(key, n),
            steps=stage.steps,
            tags=st_tags,
            run=run,
            desc=describe(st_tags),
            **kwargs,
        )
        params = get_params(result.state)
        params, record = fit_weight(params, stage, jax.random.fold_in(key, 10_000 + n))
        losses = [h["loss"] for h in result.history if "loss" in h]
        record = {
            "component": stage.component,
            "phase": stage.phase,
            "train_loss": losses[-1] if losses else None,
            **record,
        }
        info["stages"].append(record)
        info["results"].append(result)
        if run is not None:
            extra = "".join(
                f", {k} {record[k]:.4f}" for k in ("val_nll", "neg_elbo") if k in record
            )
            run.print(
                f"[{describe(tags)}] {stage.phase} component {stage.component + 1}: "
                f"rho {record.get('rho', float('nan')):.3f}{extra}"
            )
    info["seconds"] = time.time() - t0
    return params, info

"""The training loop: host Python orchestrates, jitted steps do the work.

``fit`` runs ``transition.step`` for ``steps`` steps. Step ``s`` uses the key ``fold_in(key, s)``
and a batch that is a pure function of ``s`` (i.i.d. indices into ``data`` drawn with that key,
or ``batches(s)``), so a run is a pure function of (transition, initial state, data, key,
settings): resuming from a checkpoint gives the same numbers as an uninterrupted run.

Three ways to run the steps (``mode``):

- ``"scan"`` (default): ``chunk_size`` steps under one jitted ``lax.scan``, so the host does not
  synchronise every step;
- ``"step"``: a host loop over one jitted step (convolutions inside ``lax.scan`` are an order of
  magnitude slower on XLA:CPU);
- ``"host"``: ``transition.step`` is called as it is, for steps that stream data from the host
  themselves (e.g. a full-batch epoch accumulating statistics chunk by chunk).

The compiled runner is cached per (transition, batch size, data size, mesh, mode): build a
transition once and call ``fit`` once per stage (the stage in the state) without recompiling.

Inside a run (``run=`` a :class:`~flowjax_thesis.runs.Run`), a training is named by its ``tags``
(e.g. ``{"model": "iaf", "seed": 0}``): each ``metrics.jsonl`` record is ``{"step", "tags",
metrics...}`` (one per (tags, step)), checkpoints go to ``run.checkpoint_dir/<tags>``, and a
training resumes from its newest readable checkpoint (a finished one restores without training;
records after the checkpoint's step are cut from ``metrics.jsonl``). It stops early on a
validation metric, with :class:`DivergenceError` on a non-finite loss or state (the last good
state is checkpointed) and with :class:`Interrupted` on Ctrl-C (after saving a checkpoint).
In a dry run (``run.dry_run``) it compiles and times its step instead of training and stops the
experiment with :class:`~flowjax_thesis.train.plan.PlanComplete` (see that module).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from flowjax_thesis.flows import check_key
from flowjax_thesis.train.batches import iid_batch, num_examples
from flowjax_thesis.train.checkpoints import Checkpointer
from flowjax_thesis.train.plan import PlanComplete, plan_training
from flowjax_thesis.train.sharding import put_replicated, shard_batch, to_host
from flowjax_thesis.train.transition import Transition

MODES = ("scan", "step", "host")


class DivergenceError(RuntimeError):
    """Raised when training produced a non-finite loss or state. ``.state`` and ``.step`` hold
    the last good state and its step."""

    def __init__(self, message: str, state: Any, step: int):
        super().__init__(message)
        self.state = state
        self.step = step


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; a checkpoint of ``.state`` at ``.step`` was saved (with a run)."""

    def __init__(self, message: str, state: Any, step: int):
        super().__init__(message)
        self.state = state
        self.step = step


@dataclass
class FitResult:
    state: Any
    step: int
    history: list[dict] = field(default_factory=list)
    stopped: str = "completed"  # "completed" or "early_stopping"
    best_step: int | None = None
    best_value: float | None = None


def _all_finite(metrics, state) -> jax.Array:
    """Every metric finite and no NaN in the state. Infinities in the state are allowed: optimizer
    states use them as "no value yet" (e.g. ``optax.contrib.reduce_on_plateau``'s initial best
    value), and parameters that overflow make the loss non-finite at the next step anyway."""
    floating = lambda x: jnp.issubdtype(jnp.result_type(x), jnp.floating)
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(metrics)]
    checks += [~jnp.any(jnp.isnan(x)) for x in jax.tree.leaves(state) if floating(x)]
    return jnp.all(jnp.array(checks or [True]))


def _step_keys(key, step):
    return jax.random.split(jax.random.fold_in(key, step))


@functools.lru_cache(maxsize=64)
def make_chunk_runner(
    transition: Transition,
    batch_size: int | None,
    n_examples: int | None,
    mesh=None,
    stacked: bool = False,
) -> Callable:
    """A jitted ``(state, data, key, start, n) -> (state, metrics, finite)`` running ``n`` steps
    under ``lax.scan``; with ``stacked`` the data are the chunk's batches, stacked."""

    def run(state, data, key, start, n):
        def body(state, inputs):
            step, batch = inputs if stacked else (inputs, None)
            k_batch, k_step = _step_keys(key, step)
            if not stacked:
                batch = iid_batch(data, k_batch, batch_size, n_examples)
            return transition.step(state, shard_batch(batch, mesh), k_step)

        steps = start + jnp.arange(n)
        state, metrics = jax.lax.scan(body, state, (steps, data) if stacked else steps)
        return state, metrics, _all_finite(metrics, state)

    return jax.jit(run, static_argnums=4)


@functools.lru_cache(maxsize=64)
def make_step_runner(
    transition: Transition, batch_size: int | None, n_examples: int | None, mesh, compiled: bool
) -> Callable:
    """``(state, data, key, step, batch) -> (state, metrics, finite)`` for one step; jitted
    unless ``compiled`` is False (``mode="host"``)."""

    def one(state, data, key, step, batch):
        k_batch, k_step = _step_keys(key, step)
        if batch is None:
            batch = iid_batch(data, k_batch, batch_size, n_examples)
        state, metrics = transition.step(
            state, shard_batch(batch, mesh) if compiled else batch, k_step
        )
        return state, metrics, _all_finite(metrics, state)

    return jax.jit(one) if compiled else one


def _check_int(value, name: str, minimum: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_data(data) -> int | None:
    n = num_examples(data)
    if n == 0:
        raise ValueError("the training data is empty (0 examples)")
    for leaf in jax.tree.leaves(data):
        dtype = np.asarray(leaf).dtype if not isinstance(leaf, jax.Array) else leaf.dtype
        if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
            raise TypeError(f"training data must be numeric arrays, got dtype {dtype}")
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(f"training data must be real, got dtype {dtype}")
    return n


def _diagnose(losses: list[float], first_bad: int, start_step: int, hint: str) -> str:
    """Why a run went non-finite, as far as the finite losses before it tell."""
    if first_bad == start_step and not losses:
        return (
            "The loss was not finite from the first step: check the data, context and target for "
            "NaN/inf values (or a target that is not finite at the initial samples)."
        )
    if first_bad == start_step + 1 and len(losses) == 1:
        return (
            "The loss was finite but the first update made the parameters non-finite: check that "
            "the learning rate is finite (a NaN or inf learning rate does this) and that the "
            "gradients are (gradient clipping helps)."
        )
    if len(losses) > 1 and losses[-1] > losses[0]:
        return f"The loss grew before it diverged: {hint}."
    return f"Check the data and the target, or {hint}."


def fit(
    transition: Transition,
    state: Any,
    data: Any = None,
    *,
    key: jax.Array,
    steps: int,
    batch_size: int | None = None,
    chunk_size: int = 100,
    batches: Callable[[int], Any] | None = None,
    mode: str = "scan",
    eval_fn: Callable[[Any], dict] | None = None,
    eval_every: int | None = None,
    on_eval: Callable[[Any, dict, int], Any] | None = None,
    monitor: str = "val_loss",
    patience: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    keep: int = 3,
    run=None,
    tags: dict | None = None,
    progress: bool = True,
    mesh=None,
    desc: str | None = None,
) -> FitResult:
    """Runs ``transition`` for ``steps`` steps (see the module docstring).

    Args:
      transition: ``Transition(init, step)``; ``state`` is what ``init`` returned.
      data: pytree of arrays with a shared leading example axis, or None (e.g. for VI).
      key: PRNG key of the run; step ``s`` uses ``fold_in(key, s)``.
      batch_size: minibatch size (i.i.d. indices per step); None for the full data.
      batches: a batch source ``step -> batch`` used instead of ``data`` (e.g.
        :func:`~flowjax_thesis.train.epoch_batches`); must be a pure function of the step.
      mode: ``"scan"``, ``"step"`` or ``"host"`` (see the module docstring).
      eval_fn: ``state -> dict`` of host floats, called every ``eval_every`` steps and at the end.
      on_eval: ``(state, values, step) -> state or None`` after each evaluation; a returned
        state replaces the current one (learning rate on plateau, rho fits, component switches).
      monitor, patience: early stopping when ``monitor`` (from ``eval_fn``) has not improved
        (decreased) for ``patience`` evaluations; the best state is returned (and kept in
        the checkpoints, so a resumed training returns it too).
      checkpoint_dir, checkpoint_every: orbax checkpoints (default every ``eval_every`` or
        ``chunk_size`` steps) and resume from the newest readable one. With ``run`` and no
        ``checkpoint_dir``, the run's directory for ``tags`` is used.
      run: a :class:`~flowjax_thesis.runs.Run` receiving metrics; None to skip logging. The
        returned history of a resumed training starts with the records logged before.
      tags: names this training in the run's metrics and checkpoints (distinct per training).
      mesh: a 1-D ``"data"`` mesh for data parallelism (state replicated, batches sharded).
    """
    steps = _check_int(steps, "steps", 0)
    chunk_size = _check_int(chunk_size, "chunk_size", 1) if steps else 1
    batch_size = _check_int(batch_size, "batch_size", 1, allow_none=True)
    eval_every = _check_int(eval_every, "eval_every", 1, allow_none=True)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if patience is not None and (eval_fn is None or eval_every is None):
        raise ValueError("early stopping (patience) needs eval_fn and eval_every")
    n_examples = _check_data(data) if batches is None else None
    tags = dict(tags or {})
    desc = desc or (",".join(f"{k}={v}" for k, v in tags.items()) or "train")
    main_process = jax.process_index() == 0

    if mesh is not None:
        state = put_replicated(to_host(state), mesh)
        data = put_replicated(data, mesh) if data is not None else None
    key = check_key(key)
    host_key = np.asarray(jax.random.key_data(key) if _typed(key) else key)

    if checkpoint_dir is None and run is not None:
        checkpoint_dir = run.claim_checkpoint_dir(tags)
    ckpt = Checkpointer(checkpoint_dir, keep) if checkpoint_dir else None
    checkpoint_every = checkpoint_every or eval_every or chunk_size
    step, best_value, bad_evals = 0, np.inf, 0
    best_state, best_step = state, None
    # with early stopping the best state is what fit returns, so checkpoints carry it too
    keep_best = patience is not None
    if ckpt is not None and ckpt.latest_step() is not None:
        template = {
            "state": to_host(state),
            "best": np.zeros((), np.float64),
            "bad_evals": np.zeros((), np.int64),
        }
        if keep_best:
            template |= {"best_state": to_host(state), "best_step": np.zeros((), np.int64)}
        step, restored = ckpt.restore(template)
        state = restored["state"]
        best_value, bad_evals = float(restored["best"]), int(restored["bad_evals"])
        best_state = restored["best_state"] if keep_best else state
        if keep_best and int(restored["best_step"]) >= 0:
            best_step = int(restored["best_step"])
        if mesh is not None:
            state = put_replicated(to_host(state), mesh)
            best_state = put_replicated(to_host(best_state), mesh)
        if run is not None:
            run.print(f"[{desc}] resumed from checkpoint at step {step} ({ckpt.directory})")
    history: list[dict] = []
    if run is not None and main_process:
        run.drop_metrics(tags, after_step=step)
        # a resumed training's history starts with the records logged before its checkpoint
        history = [
            {k: v for k, v in r.items() if k != "tags"}
            for r in run.read_metrics()
            if r.get("tags", {}) == tags
        ]

    def save(at_step, st):
        if ckpt is not None:
            payload = {"state": to_host(st), "best": np.float64(best_value)}
            payload["bad_evals"] = np.int64(bad_evals)
            if keep_best:
                payload["best_state"] = to_host(best_state)
                payload["best_step"] = np.int64(-1 if best_step is None else best_step)
            ckpt.save(at_step, payload)

    if mode == "scan":
        runner = make_chunk_runner(transition, batch_size, n_examples, mesh, batches is not None)
    else:
        runner = make_step_runner(transition, batch_size, n_examples, mesh, mode == "step")

    def run_chunk(st, start, n):
        if mode == "scan":
            if batches is None:
                return runner(st, data, host_key, np.int32(start), n)
            stacked = _stack([batches(s) for s in range(start, start + n)])
            return runner(st, stacked, host_key, np.int32(start), n)
        records, finite = [], True
        for s in range(start, start + n):
            batch = None if batches is None else batches(s)
            st, metrics, ok = runner(st, data, host_key, np.int32(s), batch)
            records.append(metrics)
            if not bool(ok):
                finite = False
                break
        return st, _stack(records), finite

    if run is not None and getattr(run, "dry_run", False):  # plan instead of training
        if ckpt is not None:
            ckpt.close()
        raise PlanComplete(
            plan_training(
                runner=runner,
                mode=mode,
                state=state,
                data=data,
                batches=batches,
                host_key=host_key,
                start=step,
                steps=steps,
                chunk_size=chunk_size,
                batch_size=batch_size,
                mesh=mesh,
                tags=tags,
                stack=_stack,
            )
        )

    stopped = "completed"
    start_step = step
    bar = tqdm(
        total=steps,
        initial=min(step, steps),
        desc=desc,
        disable=not (progress and main_process),
        leave=False,
    )
    boundaries = sorted(
        {
            b
            for every in (eval_every, checkpoint_every)
            if every
            for b in range(every, steps + 1, every)
        }
        | {steps}
    )

    def evaluate(at_step, st, record):
        nonlocal best_value, bad_evals, best_state, best_step
        values = {k: float(v) for k, v in eval_fn(st).items()}
        record.update(values)
        if monitor in values:
            if values[monitor] < best_value:
                best_value, bad_evals, best_state, best_step = values[monitor], 0, st, at_step
            else:
                bad_evals += 1
        if on_eval is not None:
            new = on_eval(st, values, at_step)
            if new is not None:
                st = new
        return st

    try:
        while step < steps:
            target = next(b for b in boundaries if b > step)
            n = min(chunk_size, target - step)
            new_state, metrics, finite = run_chunk(state, step, n)
            if not bool(finite):
                host = jax.tree.map(np.asarray, to_host(metrics))
                rows = len(next(iter(host.values()))) if host else n
                bad = [
                    i
                    for i in range(rows)
                    if not all(np.all(np.isfinite(v[i])) for v in host.values())
                ]
                first = step + (bad[0] if bad else rows - 1)
                save(step, state)
                where = f"; it is saved in {ckpt.path(step)}" if ckpt is not None else ""
                raise DivergenceError(
                    f"training diverged: non-finite loss or parameters at step {first}. "
                    f"Stopped; the last good state is from step {step}{where}. "
                    + _diagnose(
                        _finite_losses(history, host, first - step),
                        first,
                        start_step,
                        transition.divergence_hint,
                    ),
                    state,
                    step,
                )
            state, step = new_state, step + n
            means = {k: float(np.mean(v)) for k, v in to_host(metrics).items()}
            record = {"step": step, **means}
            bar.update(n)
            if "loss" in means:
                bar.set_postfix(loss=f"{means['loss']:.4g}")
            due = eval_fn is not None and eval_every and (step % eval_every == 0 or step == steps)
            if due:
                state = evaluate(step, state, record)
            history.append(record)
            if run is not None and main_process:
                run.log_metrics(step, tags=tags, **{k: v for k, v in record.items() if k != "step"})
            if due and patience is not None and bad_evals >= patience:
                stopped = "early_stopping"
                save(step, state)
                if run is not None:
                    run.print(
                        f"[{desc}] early stopping at step {step}: {monitor} has not "
                        f"improved for {patience} evaluations (best {best_value:.5g} "
                        f"at step {best_step})"
                    )
                break
            if step % checkpoint_every == 0 or step == steps:
                save(step, state)
    except KeyboardInterrupt:
        save(step, state)
        where = f"; checkpoint saved in {ckpt.path(step)}" if ckpt is not None else ""
        raise Interrupted(f"interrupted at step {step} of [{desc}]{where}", state, step) from None
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()

    _warn_if_worse(history, desc, run)
    if eval_fn is not None and patience is not None and best_step is not None:
        return FitResult(best_state, step, history, stopped, best_step, best_value)
    return FitResult(
        state, step, history, stopped, best_step, None if best_step is None else best_value
    )


def _finite_losses(history: list[dict], chunk: dict, upto: int) -> list[float]:
    """The losses before the first non-finite step: the chunk means logged so far, then the
    failing chunk's per-step losses before it."""
    losses = [r["loss"] for r in history if isinstance(r.get("loss"), float)]
    if "loss" in chunk:
        losses += [float(v) for v in np.ravel(chunk["loss"][:upto])]
    return [v for v in losses if math.isfinite(v)]


def _stack(trees: list):
    if not trees:
        return {}
    try:
        return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)
    except ValueError as err:
        raise ValueError(
            "the batches of one chunk have different shapes; mode='scan' needs equal-sized "
            f"batches (use drop_remainder=True or mode='step'): {err}"
        ) from None


def _warn_if_worse(history: list[dict], desc: str, run) -> None:
    """A run that 'finished' far above where its loss started is not a success: say so."""
    losses = [r["loss"] for r in history if isinstance(r.get("loss"), float)]
    if len(losses) < 2 or not all(math.isfinite(v) for v in losses):
        return
    first, last = losses[0], losses[-1]
    if last > first + 1.0 + 0.5 * abs(first):
        msg = (
            f"[{desc}] the loss ended at {last:.5g}, far above where it started ({first:.5g}): "
            "training made things worse (a learning rate too large?)"
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        if run is not None:
            run.print("warning: " + msg)


def _typed(key) -> bool:
    return jnp.issubdtype(getattr(key, "dtype", np.float32), jax.dtypes.prng_key)

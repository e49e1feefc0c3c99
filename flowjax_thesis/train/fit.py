"""The training loop: host Python orchestrates, jitted chunks of steps do the work.

``fit`` runs ``transition.step`` for ``steps`` steps, ``chunk_size`` at a time under one
``lax.scan`` (so the host does not synchronise every step). Step ``s`` uses the key
``fold_in(key, s)`` and a minibatch drawn i.i.d. from ``data`` with it, so a run is a pure
function of (transition, initial state, data, key, settings): resuming from a checkpoint gives
the same numbers as an uninterrupted run.

It writes metrics (chunk means) to ``metrics.jsonl`` through a :class:`~flowjax_thesis.runs.Run`,
shows a tqdm progress bar, saves orbax checkpoints (and resumes from the latest), stops early on a
validation metric, and stops with :class:`DivergenceError` on a non-finite loss or state, keeping
(and checkpointing) the last good state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from flowjax_thesis.train.sharding import put_replicated, shard_batch, to_host
from flowjax_thesis.train.transition import Transition


class DivergenceError(RuntimeError):
    """Raised when training produced a non-finite loss or state. ``.state`` and ``.step`` hold
    the last good state and its step."""

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


def _num_examples(data) -> int | None:
    leaves = jax.tree.leaves(data)
    if not leaves:
        return None
    sizes = {int(np.shape(x)[0]) for x in leaves}
    if len(sizes) != 1:
        raise ValueError(f"all data arrays need the same leading (example) axis, got sizes {sizes}")
    return sizes.pop()


def make_chunk_runner(
    transition: Transition, batch_size: int | None, num_examples: int | None, mesh=None
) -> Callable:
    """A jitted ``(state, data, key, start, n) -> (state, metrics, finite)`` running ``n`` steps."""

    def run(state, data, key, start, n):
        def body(state, step):
            k = jax.random.fold_in(key, step)
            k_batch, k_step = jax.random.split(k)
            if num_examples is None:
                batch = None
            elif batch_size is None or batch_size >= num_examples:
                batch = data
            else:
                idx = jax.random.randint(k_batch, (batch_size,), 0, num_examples)
                batch = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
            batch = shard_batch(batch, mesh)
            state, metrics = transition.step(state, batch, k_step)
            return state, metrics

        state, metrics = jax.lax.scan(body, state, start + jnp.arange(n))
        finite = jnp.all(
            jnp.array(
                [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(metrics)]
                + [
                    jnp.all(jnp.isfinite(x))
                    for x in jax.tree.leaves(state)
                    if jnp.issubdtype(x.dtype, jnp.floating)
                ]
            )
        )
        return state, metrics, finite

    return jax.jit(run, static_argnums=4)


class Checkpointer:
    """Thin orbax wrapper: saves ``{"state", "best", "bad_evals"}`` by step; restores the latest."""

    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, payload: dict) -> None:
        if step in (self.manager.all_steps() or []):
            return
        self.manager.save(step, args=ocp.args.StandardSave(payload))
        self.manager.wait_until_finished()

    def restore(self, template: dict, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def close(self) -> None:
        self.manager.close()


def fit(
    transition: Transition,
    state: Any,
    data: Any = None,
    *,
    key: jax.Array,
    steps: int,
    batch_size: int | None = None,
    chunk_size: int = 100,
    eval_fn: Callable[[Any], dict] | None = None,
    eval_every: int | None = None,
    monitor: str = "val_loss",
    patience: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    keep: int = 3,
    run=None,
    progress: bool = True,
    mesh=None,
    desc: str = "train",
) -> FitResult:
    """Runs ``transition`` for ``steps`` steps (see the module docstring).

    Args:
      transition: ``Transition(init, step)``; ``state`` is what ``init`` returned.
      data: pytree of arrays with a shared leading example axis, or None (e.g. for VI).
      key: PRNG key of the run; step ``s`` uses ``fold_in(key, s)``.
      batch_size: minibatch size (i.i.d. indices per step); None for the full data.
      eval_fn: ``state -> dict`` of host floats, called every ``eval_every`` steps and at the end.
      monitor, patience: early stopping when ``monitor`` (from ``eval_fn``) has not improved
        (decreased) for ``patience`` evaluations; the best state is returned.
      checkpoint_dir, checkpoint_every: orbax checkpoints (default every ``eval_every`` or
        ``chunk_size`` steps) and resume from the latest one.
      run: a :class:`~flowjax_thesis.runs.Run` receiving metrics; None to skip logging.
      mesh: a 1-D ``"data"`` mesh for data parallelism (state replicated, batches sharded).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if patience is not None and (eval_fn is None or eval_every is None):
        raise ValueError("early stopping (patience) needs eval_fn and eval_every")
    num_examples = _num_examples(data)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    main_process = jax.process_index() == 0

    if mesh is not None:
        state = put_replicated(state, mesh)
        data = put_replicated(data, mesh) if data is not None else None
    runner = make_chunk_runner(transition, batch_size, num_examples, mesh)
    host_key = np.asarray(key)  # a host value is replicated on every process

    ckpt = Checkpointer(checkpoint_dir, keep) if checkpoint_dir else None
    checkpoint_every = checkpoint_every or eval_every or chunk_size
    step, best_value, bad_evals = 0, np.inf, 0
    best_state, best_step = state, None
    if ckpt is not None and ckpt.latest_step() is not None:
        template = {
            "state": state,
            "best": np.zeros((), np.float64),
            "bad_evals": np.zeros((), np.int64),
        }
        restored = ckpt.restore(template)
        state, step = restored["state"], int(ckpt.latest_step())
        best_value, bad_evals = float(restored["best"]), int(restored["bad_evals"])
        if mesh is not None:
            state = put_replicated(to_host(state), mesh)
        best_state = state
        if run is not None:
            run.print(f"[{desc}] resumed from checkpoint at step {step} ({ckpt.directory})")

    def save(at_step, st):
        if ckpt is not None:
            ckpt.save(
                at_step,
                {"state": st, "best": np.float64(best_value), "bad_evals": np.int64(bad_evals)},
            )

    history: list[dict] = []
    stopped = "completed"
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

    def evaluate(at_step, st):
        nonlocal best_value, bad_evals, best_state, best_step
        values = {k: float(v) for k, v in eval_fn(st).items()}
        record = {"step": at_step, **values}
        history.append(record)
        if run is not None and main_process:
            run.log_metrics(at_step, **values)
        if monitor in values:
            if values[monitor] < best_value:
                best_value, bad_evals, best_state, best_step = values[monitor], 0, st, at_step
            else:
                bad_evals += 1
        return values

    try:
        while step < steps:
            target = next(b for b in boundaries if b > step)
            n = min(chunk_size, target - step)
            new_state, metrics, finite = runner(state, data, host_key, np.int32(step), n)
            if not bool(finite):
                host = jax.tree.map(np.asarray, to_host(metrics))
                bad = [
                    i for i in range(n) if not all(np.all(np.isfinite(v[i])) for v in host.values())
                ]
                first = step + (bad[0] if bad else n - 1)
                save(step, state)
                where = f"; it is saved in {ckpt.path(step)}" if ckpt is not None else ""
                raise DivergenceError(
                    f"training diverged: non-finite loss or parameters at step {first}. "
                    f"Stopped; the last good state is from step {step}{where}. "
                    "Try a smaller learning rate or check the data.",
                    state,
                    step,
                )
            state, step = new_state, step + n
            means = {k: float(np.mean(v)) for k, v in to_host(metrics).items()}
            record = {"step": step, **means}
            history.append(record)
            if run is not None and main_process:
                run.log_metrics(step, **means)
            bar.update(n)
            if "loss" in means:
                bar.set_postfix(loss=f"{means['loss']:.4g}")
            if eval_fn is not None and eval_every and (step % eval_every == 0 or step == steps):
                evaluate(step, state)
                if patience is not None and bad_evals >= patience:
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
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()

    if eval_fn is not None and patience is not None and best_step is not None:
        return FitResult(best_state, step, history, stopped, best_step, best_value)
    return FitResult(
        state, step, history, stopped, best_step, None if best_step is None else best_value
    )

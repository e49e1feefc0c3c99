"""Training DAPPER through the engine (thesis section 3.5).

One step of :func:`dapper_transition` is one E-step over a set of documents followed by one
M-step: the whole corpus for full-batch variational EM (``batch_size=None``: rho = 1, one step
per epoch), or a mini-batch of document ids (stochastic variational inference with
rho_i = (i + tau0)^-kappa and statistics scaled by D / b). The step streams its documents through
the jitted (and, with a device mesh, sharded) E-step in padded chunks of documents sorted by
length, so memory stays bounded by the chunk whatever the corpus size; it therefore runs from the
host (``mode="host"`` of :func:`flowjax_thesis.train.fit`) rather than under one ``jit``.

:func:`fit_dapper` is one call of the engine: the mini-batch order is a pure function of the step
(a seeded permutation per epoch, :func:`flowjax_thesis.train.epoch_batches`), the held-out metric
is the engine's ``eval_fn`` once per epoch, and with ``run`` and ``tags`` the engine logs every
step to ``metrics.jsonl``, checkpoints into the run directory and resumes from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.models.dap.corpus import Corpus
from flowjax_thesis.models.dap.estep import batch_stats, full_batch_stats
from flowjax_thesis.models.dap.mstep import global_elbo, m_step_jit
from flowjax_thesis.models.dap.state import DapConfig, DapState, Stats, init_state
from flowjax_thesis.train import FitResult, Transition, epoch_batches, fit


def check_corpus_and_chunk(corpus: Corpus, chunk: int) -> None:
    if corpus.num_docs == 0:
        raise ValueError("corpus: expected at least one document, got an empty corpus")
    if chunk < 1:
        raise ValueError(f"chunk: expected a positive number of documents, got {chunk}")


# DAP/DAPPER's updates have no learning rate; what makes them diverge is the regularizer or the
# stochastic step sizes (or a corpus the model cannot fit)
DAP_DIVERGENCE_HINT = (
    "DAP/DAPPER has no learning rate: lower the RVI strength rho_reg (or use alpha_hat_form="
    "'thesis', which keeps the alpha_hat system positive definite), for mini-batches take smaller "
    "stochastic steps (larger tau0 or kappa), and check the corpus for empty documents or authors"
)


def em_transition(
    cfg: DapConfig, corpus: Corpus, e_step: Callable[[DapState, np.ndarray], Stats]
) -> Transition:
    """One E-step then DAPPER's M-step, as a host-mode :class:`~flowjax_thesis.train.Transition`.

    ``e_step(state, doc_ids)`` returns the sufficient statistics of those documents (DAPPER's CVI
    E-step, or appendix C's variational EM). ``init(key)`` builds the initial state
    (:func:`~flowjax_thesis.models.dap.state.init_state`). ``step(state, batch, key)``: ``batch``
    is None for a full-batch epoch (every document, rho = 1) or an array of document ids for a
    mini-batch (statistics scaled by D / b, rho = (i + tau0)^-kappa); the key is unused (the
    updates are deterministic given the documents). The metrics are host floats: the local ELBO
    terms per word of the batch under the state before the update, its token count, the step
    size rho, the mean number of local iterations and the wall-clock seconds of the step.
    """
    num_docs = corpus.num_docs

    def init(key: jax.Array) -> DapState:
        return init_state(key, corpus, cfg)

    def step(state: DapState, batch, key=None):
        del key
        t0 = time.perf_counter()
        ids = np.arange(num_docs) if batch is None else np.asarray(batch).reshape(-1)
        stats = e_step(state, ids)
        scale = num_docs / len(ids)
        rho = 1.0 if batch is None else float(cfg.step_size(int(state.step)))
        new = m_step_jit(cfg, state, stats, jnp.float32(scale), jnp.float32(rho))
        jax.block_until_ready(new)
        metrics = {
            "train_elbo_docs_per_word": float(stats.elbo) / max(float(stats.words), 1.0),
            "train_tokens": float(stats.words),
            "rho": rho,
            "mean_local_iters": float(stats.iters) / len(ids),
            "step_seconds": time.perf_counter() - t0,
        }
        return new, metrics

    return Transition(init, step, DAP_DIVERGENCE_HINT)


def dapper_transition(cfg: DapConfig, corpus: Corpus, *, chunk: int = 256, mesh=None) -> Transition:
    """DAPPER on ``corpus``: :func:`em_transition` with the CVI E-step
    (:func:`~flowjax_thesis.models.dap.estep.batch_stats`)."""
    check_corpus_and_chunk(corpus, chunk)
    return em_transition(
        cfg, corpus, lambda state, ids: batch_stats(cfg, state, corpus, ids, chunk, mesh)
    )


def fit_em(
    transition: Transition,
    corpus: Corpus,
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int | None,
    state: DapState | None,
    mesh,
    eval_fn: Callable[[DapState], dict] | None,
    run,
    tags: dict | None,
    progress: bool,
) -> FitResult:
    """The epoch schedule of :func:`fit_dapper` for any :func:`em_transition` (one engine call)."""
    if epochs < 0:
        raise ValueError(f"epochs: expected >= 0, got {epochs}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer or None, got {batch_size}")
    state = transition.init(key) if state is None else state
    batches, steps_per_epoch = None, 1
    if batch_size is not None:
        order_key = jax.random.fold_in(key, 1)
        batches = epoch_batches(
            np.arange(corpus.num_docs), batch_size, order_key, drop_remainder=False
        )
        steps_per_epoch = batches.steps_per_epoch
    return fit(
        transition,
        state,
        key=key,
        steps=epochs * steps_per_epoch,
        batches=batches,
        mode="host",
        chunk_size=1,
        eval_fn=eval_fn,
        eval_every=steps_per_epoch if eval_fn is not None else None,
        checkpoint_every=steps_per_epoch,
        run=run,
        tags=tags,
        progress=progress,
        mesh=mesh,
    )


def fit_dapper(
    corpus: Corpus,
    cfg: DapConfig,
    *,
    key: jax.Array,
    epochs: int = 10,
    batch_size: int | None = None,
    chunk: int = 256,
    state: DapState | None = None,
    mesh=None,
    eval_fn: Callable[[DapState], dict] | None = None,
    run=None,
    tags: dict | None = None,
    progress: bool = False,
) -> FitResult:
    """Trains DAPPER on ``corpus`` for ``epochs`` passes; returns the engine's ``FitResult``.

    Args:
      key: initializes the state (unless ``state`` is given) and seeds the mini-batch order.
      batch_size: None for full-batch variational EM (one step per epoch); otherwise stochastic
        mini-batches of that many documents (``ceil(D / batch_size)`` steps per epoch).
      chunk: documents per padded E-step call (bounds the memory).
      mesh: a 1-D device mesh (:func:`flowjax_thesis.train.data_mesh`): each chunk's documents
        are sharded over it and the statistics summed across devices.
      eval_fn: ``state -> dict`` of floats after every epoch (e.g. held-out PWLL); its values are
        merged into that step's record.
      run, tags: log every step to the run's ``metrics.jsonl`` and checkpoint after every epoch
        into its directory under ``tags``; a rerun with ``--resume`` continues from the last
        checkpoint (a finished training restores its final state without training).

    ``history`` of the result has one record per step: the metrics of :func:`dapper_transition`
    and the ``eval_fn`` values at the end of each epoch (with ``run``, a resumed training's
    history starts with the records logged before the resume).
    """
    return fit_em(
        dapper_transition(cfg, corpus, chunk=chunk, mesh=mesh),
        corpus,
        key=key,
        epochs=epochs,
        batch_size=batch_size,
        state=state,
        mesh=mesh,
        eval_fn=eval_fn,
        run=run,
        tags=tags,
        progress=progress,
    )


def corpus_elbo(cfg: DapConfig, state: DapState, corpus: Corpus, chunk: int = 256) -> float:
    """Full ELBO of ``corpus`` (local terms after a fresh E-step, plus the global terms)."""
    stats = full_batch_stats(cfg, state, corpus, chunk)
    return float(stats.elbo) + float(_global_elbo(cfg, state))


_global_elbo = jax.jit(global_elbo, static_argnums=0)

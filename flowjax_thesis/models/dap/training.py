"""Training DAPPER: the transition and the epoch driver (thesis section 3.5).

``batch_size=None`` is full-batch variational EM (statistics of the whole corpus, streamed in
chunks, then one M-step with rho = 1 per epoch); otherwise stochastic mini-batches with
rho_i = (i + tau0)^-kappa.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.models.dap.corpus import Corpus, DocBatch
from flowjax_thesis.models.dap.estep import batch_stats, e_step, full_batch_stats, sharded_e_step
from flowjax_thesis.models.dap.mstep import global_elbo, m_step, m_step_jit
from flowjax_thesis.models.dap.state import DapConfig, DapState, init_state
from flowjax_thesis.train.transition import Transition


def dapper_transition(cfg: DapConfig, num_docs: int, mesh=None) -> Transition:
    """Mini-batch DAPPER as a :class:`Transition`: ``step`` = E-step on the batch + M-step.

    ``init(key, corpus)`` builds the state; ``step(state, batch, key)`` is pure (the key is
    unused: DAPPER's updates are deterministic given the batch order).
    """

    def init(key, corpus: Corpus) -> DapState:
        return init_state(key, corpus, cfg)

    def step(state: DapState, batch: DocBatch, key=None):
        del key
        if mesh is not None and mesh.size > 1:
            loc, stats = sharded_e_step(cfg, mesh)(state, batch)
        else:
            loc, stats = e_step(cfg, state, batch)
        b = jnp.maximum(jnp.sum(batch[4]), 1.0)
        rho = cfg.step_size(state.step.astype(jnp.float32))
        new = m_step(cfg, state, stats, num_docs / b, rho)
        metrics = {
            "batch_elbo_per_word": stats.elbo / jnp.maximum(stats.words, 1.0),
            "rho": rho,
            "mean_local_iters": stats.iters / b,
        }
        return new, metrics

    return Transition(init, step)


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
    time_budget: float | None = None,
    callback: Callable[[int, DapState, dict], Any] | None = None,
    seed: int = 0,
) -> tuple[DapState, list[dict]]:
    """Trains DAPPER on ``corpus``.

    ``batch_size=None`` is full-batch variational EM (statistics of the whole corpus, streamed in
    chunks of ``chunk`` documents, then one M-step with rho = 1 per epoch); otherwise stochastic
    mini-batches of ``batch_size`` documents with rho_i = (i + tau0)^-kappa. ``callback(epoch,
    state, record)`` runs after each epoch (e.g. held-out evaluation); its returned dict is merged
    into the record. ``time_budget`` (seconds of training, callbacks excluded) stops early.
    """
    if corpus.num_docs == 0:
        raise ValueError("empty corpus")
    state = init_state(key, corpus, cfg) if state is None else state
    history: list[dict] = []
    train_time = 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if batch_size is None:
            stats = full_batch_stats(cfg, state, corpus, chunk, mesh)
            elbo_docs = float(stats.elbo)
            state = m_step_jit(cfg, state, stats, jnp.float32(1.0), jnp.float32(1.0))
            words = float(stats.words)
        else:
            elbo_docs, words = 0.0, 0.0
            order = np.random.default_rng(seed + epoch).permutation(corpus.num_docs)
            for lo in range(0, corpus.num_docs, batch_size):
                ids = order[lo : lo + batch_size]
                stats = batch_stats(cfg, state, corpus, ids, chunk, mesh)
                b = float(len(ids))
                rho = jnp.float32(cfg.step_size(int(state.step)))
                state = m_step_jit(cfg, state, stats, jnp.float32(corpus.num_docs / b), rho)
                elbo_docs += float(stats.elbo)
                words += float(stats.words)
        jax.block_until_ready(state.lam)
        train_time += time.perf_counter() - t0
        rec = {
            "epoch": epoch + 1,
            "train_seconds": train_time,
            "train_elbo_docs_per_word": elbo_docs / max(words, 1.0),
            "train_tokens": words,
        }
        if callback is not None:
            rec.update(callback(epoch + 1, state, rec) or {})
        history.append(rec)
        if time_budget is not None and train_time >= time_budget:
            break
    return state, history


def corpus_elbo(cfg: DapConfig, state: DapState, corpus: Corpus, chunk: int = 256) -> float:
    """Full ELBO of ``corpus`` (local terms after a fresh E-step, plus the global terms)."""
    stats = full_batch_stats(cfg, state, corpus, chunk)
    return float(stats.elbo) + float(jax.jit(global_elbo, static_argnums=0)(cfg, state))

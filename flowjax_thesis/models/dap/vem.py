"""DAP's original variational EM (thesis appendix C), the baseline DAPPER is compared against.

Same model, variational family, corpus containers, M-step and evaluation as DAPPER
(:mod:`~flowjax_thesis.models.dap.training`); only the local (per-document) inference differs.
Appendix C optimizes each document's variational parameters by coordinate ascent on the document
ELBO, as the correlated topic model does (Blei and Lafferty 2006), where DAPPER takes damped CVI
natural-gradient steps (section 3.5.1). One sweep of :func:`vem_sweep` updates, in turn:

* gamma (the mean ``m`` of q(theta)) with zeta fixed at its closed form
  zeta = sum_k exp(m_k + v_k / 2): the gradient (C.6) is
  -(m - alpha_t tau) / s + sum_n phi_n - (N / zeta) exp(m + v / 2)
  (``alpha_t tau`` since sum_p tau_p ||m - alpha_p||^2 = ||m - alpha_t tau||^2 + const).
  The thesis runs conjugate gradient on it. With zeta fixed the objective is a sum of strictly
  concave one-dimensional functions of the m_k, so we maximize each by Newton's method (the same
  maximizer, reached in a few steps);
* zeta again, then the variance v (v-hat of the appendix) by Newton's method per coordinate,
  constrained to v > 0, on -v / (2 s) + log(v) / 2 - (N / zeta) exp(m + v / 2) (the derivative
  printed under (C.6) has its signs garbled; this is the ELBO's);
* phi_{n,k} ∝ exp(m_k + E log beta_{k, w_n}) (closed form, as in the CTM);
* tau (the persona assignment). Appendix C writes E_q(theta - alpha x)^T Sigma^-1 (theta - alpha x)
  as (gamma - alpha tau)^T Sigma^-1 (gamma - alpha tau) plus a trace term, which counts
  ||alpha tau||^2 twice and makes L[tau] quadratic, hence its exponentiated gradient descent. The
  exact expectation is sum_p tau_p ||m - alpha_p||^2 + ..., linear in tau, so L[tau] is linear
  plus the entropy and one exponentiated-gradient step of size 1 lands on its maximizer
  tau = softmax(E log kappa_a + grad_tau) (the same closed form DAPPER's CVI converges to).

Every Newton step tries the full step and its halvings and keeps the best (or no move), so each
block update increases its objective; since zeta is then reset to its optimum, the document
ELBO (:func:`~flowjax_thesis.models.dap.estep.doc_elbo`, zeta at its optimum) never decreases
from one sweep to the next. Sweeps stop as DAPPER's local loop does: mean |Δm| < ``local_tol``
or ``local_max_iter`` sweeps. The fixed point is a stationary point of the same document ELBO as
DAPPER's, so both are scored with the same held-out functions
(:mod:`~flowjax_thesis.models.dap.evaluation`).

The M-step is DAPPER's full-batch M-step (appendix C.3 = section 3.5.2 with step size 1): lambda
as in LDA, delta_a = omega + sum tau, alpha_hat from the linear system (C.10) =
eq. 3.22 in the form :attr:`DapConfig.alpha_hat_form` selects, then the Kalman filter and RTS
smoother. :func:`fit_dap_vem` runs it through the engine exactly as :func:`fit_dapper` does
(checkpoints, resume, per-epoch evaluation); ``batch_size`` gives the stochastic variant with
DAPPER's step sizes (not in the appendix, which is batch EM).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.models.dap.corpus import Corpus, DocBatch
from flowjax_thesis.models.dap.estep import add_stats, doc_elbo, e_step_config
from flowjax_thesis.models.dap.mstep import global_elbo
from flowjax_thesis.models.dap.state import (
    DapConfig,
    DapState,
    Local,
    Stats,
    dirichlet_expectation,
)
from flowjax_thesis.models.dap.training import check_corpus_and_chunk, em_transition, fit_em
from flowjax_thesis.train import FitResult, Transition

_FRACTIONS = 2.0 ** -np.arange(10)  # Newton step, then its halvings down to 1/512


def newton_max(value: Callable, x: jax.Array, steps: int, positive: bool = False) -> jax.Array:
    """Maximizes ``sum(value(x))`` for a separable, strictly concave ``value`` (elementwise).

    ``steps`` Newton steps per coordinate; each tries the step scaled by 1, 1/2, ..., 1/512 and
    keeps the candidate with the largest value, ``x`` itself included, so no coordinate's value
    ever decreases. ``positive`` rejects candidates <= 0.
    """
    d1 = jax.grad(lambda y: jnp.sum(value(y)))
    d2 = jax.grad(lambda y: jnp.sum(d1(y)))  # the Hessian's diagonal (separable value)
    fractions = jnp.asarray(_FRACTIONS, x.dtype)[:, None]

    def body(_, x):
        step = -d1(x) / d2(x)
        cand = jnp.concatenate([x[None], x[None] + fractions * step[None]])
        vals = jax.vmap(value)(cand)
        ok = jnp.isfinite(vals) & ((cand > 0) if positive else True)
        best = jnp.argmax(jnp.where(ok, vals, -jnp.inf), axis=0)
        return jnp.take_along_axis(cand, best[None], axis=0)[0]

    return jax.lax.fori_loop(0, steps, body, x)


def vem_sweep(cfg: DapConfig, newton_steps: int, doc: tuple, local: tuple) -> tuple:
    """One coordinate-ascent sweep (m, v, phi, tau) of appendix C for one document.

    ``doc`` = (elog_beta_d (K, L), counts (L,), alpha_t (K, P), alpha_var_t, s, elog_kappa_a (P,));
    ``local`` = (m, v, tau, phi); returns the updated ``local``.
    """
    elog_beta_d, counts, alpha_t, alpha_var_t, s, elog_kappa_a = doc
    m, v, tau, phi = local
    n = jnp.sum(counts)
    sum_phi = phi @ counts
    abar = alpha_t @ tau
    log_zeta = jax.nn.logsumexp(m + 0.5 * v)

    def gamma_objective(x):  # zeta fixed; eq. C.6 is its gradient
        return -((x - abar) ** 2) / (2 * s) + sum_phi * x - n * jnp.exp(x + 0.5 * v - log_zeta)

    m = newton_max(gamma_objective, m, newton_steps)
    log_zeta = jax.nn.logsumexp(m + 0.5 * v)

    def variance_objective(x):
        return -x / (2 * s) + 0.5 * jnp.log(x) - n * jnp.exp(m + 0.5 * x - log_zeta)

    v = newton_max(variance_objective, v, newton_steps, positive=True)
    phi = jax.nn.softmax(m[:, None] + elog_beta_d, axis=0)
    sq = jnp.sum((m[:, None] - alpha_t) ** 2, axis=0)
    grad_tau = -(sq + jnp.sum(v) + cfg.num_topics * alpha_var_t) / (2.0 * s)
    tau = jax.nn.softmax(elog_kappa_a + grad_tau)
    return m, v, tau, phi


def init_local(doc: tuple) -> tuple:
    """The starting point of the local loop (DAPPER's): tau from the author, m = alpha_t tau."""
    elog_beta_d, _, alpha_t, _, s, elog_kappa_a = doc
    tau = jax.nn.softmax(elog_kappa_a)
    m = alpha_t @ tau
    v = jnp.full_like(m, s)
    phi = jax.nn.softmax(m[:, None] + elog_beta_d, axis=0)
    return m, v, tau, phi


def doc_vem(cfg: DapConfig, newton_steps: int, *doc):
    """Appendix-C inference for one document; returns (m, v, tau, phi, elbo, iters) like
    :func:`~flowjax_thesis.models.dap.estep.doc_e_step`."""

    def body(carry):
        local, it, _ = carry
        new = vem_sweep(cfg, newton_steps, doc, local)
        return new, it + 1, jnp.mean(jnp.abs(new[0] - local[0]))

    def cond(carry):
        _, it, delta = carry
        return (it < cfg.local_max_iter) & (delta > cfg.local_tol)

    init = (init_local(doc), jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, doc[0].dtype))
    (m, v, tau, phi), iters, _ = jax.lax.while_loop(cond, body, init)
    elbo = doc_elbo(cfg, m, v, tau, phi, doc[1], doc[0], *doc[2:])
    return m, v, tau, phi, elbo, iters


def vem_e_step(
    cfg: DapConfig, state: DapState, batch: DocBatch, newton_steps: int = 3
) -> tuple[Local, Stats]:
    """Appendix-C local inference for a padded batch and its sufficient statistics (jittable).

    The statistics are the same sums as DAPPER's E-step collects (:class:`Stats`).
    """
    ids, counts, authors, times, mask = batch
    elog_beta = dirichlet_expectation(state.lam)
    elog_kappa = dirichlet_expectation(state.delta)
    counts = counts * mask[:, None]
    eb = jnp.take(elog_beta, ids, axis=1).transpose(1, 0, 2)  # (B, K, L)
    m, v, tau, phi, elbo, iters = jax.vmap(functools.partial(doc_vem, cfg, newton_steps))(
        eb,
        counts,
        state.alpha[times],
        state.alpha_var[times],
        state.doc_var[times],
        elog_kappa[authors],
    )
    tau, elbo = tau * mask[:, None], elbo * mask
    num_k, num_v = state.lam.shape
    num_t, num_p = state.alpha.shape[0], cfg.num_personas
    wphi = (phi * counts[:, None, :]).transpose(1, 0, 2).reshape(num_k, -1)
    per_time = jnp.zeros((num_t, num_p))
    stats = Stats(
        beta=jnp.zeros((num_k, num_v), wphi.dtype).at[:, ids.reshape(-1)].add(wphi),
        kappa=jnp.zeros(state.delta.shape, tau.dtype).at[authors].add(tau),
        tau=per_time.at[times].add(tau),
        tau_sq=per_time.at[times].add(tau**2),
        tau_m=jnp.zeros((num_t, num_p, num_k)).at[times].add(tau[:, :, None] * m[:, None, :]),
        docs=jnp.zeros((num_t,)).at[times].add(mask),
        elbo=jnp.sum(elbo),
        words=jnp.sum(counts),
        iters=jnp.sum(iters * mask),
    )
    return Local(m=m, v=v, tau=tau, elbo=elbo, iters=iters), stats


@functools.partial(jax.jit, static_argnums=(0, 1))
def _vem_e_step_jit(cfg, newton_steps, state, batch):
    return vem_e_step(cfg, state, batch, newton_steps)


@functools.lru_cache(maxsize=16)
def _sharded_vem_e_step(cfg: DapConfig, newton_steps: int, mesh) -> Callable:
    from jax.sharding import PartitionSpec as P

    axis = mesh.axis_names[0]

    def local(state, batch):
        return jax.lax.psum(vem_e_step(cfg, state, batch, newton_steps)[1], axis)

    spec = dict(in_specs=(P(), P(axis)), out_specs=P(), check_vma=False)
    return jax.jit(jax.shard_map(local, mesh=mesh, **spec))


def vem_batch_stats(
    cfg: DapConfig,
    state: DapState,
    corpus: Corpus,
    doc_ids,
    chunk: int,
    mesh=None,
    newton_steps: int = 3,
) -> Stats:
    """Statistics of the documents ``doc_ids`` under appendix-C inference, streamed in padded
    chunks sorted by length (as :func:`~flowjax_thesis.models.dap.estep.batch_stats` does), each
    chunk sharded over ``mesh`` when it has more than one device."""
    doc_ids = np.asarray(doc_ids)
    if len(doc_ids) == 0:
        raise ValueError("doc_ids: expected at least one document, got none")
    doc_ids = doc_ids[np.argsort(np.diff(np.asarray(corpus.indptr))[doc_ids], kind="stable")]
    ecfg = e_step_config(cfg)
    devices = mesh.size if mesh is not None else 1
    size = min(chunk, 1 << int(np.ceil(np.log2(len(doc_ids)))))
    size = int(np.ceil(size / devices) * devices)
    total = None
    for lo in range(0, len(doc_ids), chunk):
        batch = jax.tree.map(jnp.asarray, corpus.batch(doc_ids[lo : lo + chunk], pad_docs_to=size))
        if devices > 1:
            stats = _sharded_vem_e_step(ecfg, newton_steps, mesh)(state, batch)
        else:
            stats = _vem_e_step_jit(ecfg, newton_steps, state, batch)[1]
        total = stats if total is None else add_stats(total, stats)
    return total


def vem_corpus_elbo(
    cfg: DapConfig, state: DapState, corpus: Corpus, chunk: int = 256, newton_steps: int = 3
) -> float:
    """Full ELBO of ``corpus`` after a fresh appendix-C E-step, plus the global terms."""
    stats = vem_batch_stats(
        cfg, state, corpus, np.arange(corpus.num_docs), chunk, None, newton_steps
    )
    return float(stats.elbo) + float(_global_elbo(cfg, state))


_global_elbo = jax.jit(global_elbo, static_argnums=0)


def vem_transition(
    cfg: DapConfig, corpus: Corpus, *, chunk: int = 256, mesh=None, newton_steps: int = 3
) -> Transition:
    """Appendix-C variational EM on ``corpus`` as a host-mode transition.

    ``step(state, batch, key)``: one E-step over the whole corpus (``batch`` None) or over a
    mini-batch of document ids, then DAPPER's M-step (rho = 1 for the whole corpus). The metrics
    are those of :func:`~flowjax_thesis.models.dap.training.dapper_transition`.
    """
    check_corpus_and_chunk(corpus, chunk)
    if isinstance(newton_steps, bool) or not isinstance(newton_steps, int) or newton_steps < 1:
        raise ValueError(f"newton_steps: expected a positive integer, got {newton_steps!r}")
    return em_transition(
        cfg,
        corpus,
        lambda state, ids: vem_batch_stats(cfg, state, corpus, ids, chunk, mesh, newton_steps),
    )


def fit_dap_vem(
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
    newton_steps: int = 3,
) -> FitResult:
    """Trains DAP by the appendix-C variational EM; the arguments are :func:`fit_dapper`'s.

    ``batch_size=None`` (the appendix's algorithm): one E-step over the corpus and one M-step
    per epoch. ``newton_steps``: Newton steps per block update of m and of v in each sweep.
    With ``run`` and ``tags`` every step is logged and each epoch checkpointed; ``--resume``
    continues from the last checkpoint.
    """
    return fit_em(
        vem_transition(cfg, corpus, chunk=chunk, mesh=mesh, newton_steps=newton_steps),
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

"""DAPPER's E-step: local CVI inference per document and the batch statistics (section 3.5.1).

Per document, vmapped over a padded batch and iterated to local convergence with
``lax.while_loop``:

* phi_n ∝ exp(Phi~ + E[log beta_{., w_n}]) with Phi~ <- rho m + (1-rho) Phi~  (eqs. 3.15-3.16);
* the document-topic Gaussian by CVI (eqs. 3.9-3.12): natural parameters
  Theta <- rho (prior natural parameter + grad_mu f) + (1 - rho) Theta, where f is the
  zeta-bound (3.10) of E log Mult(z | softmax theta) and grad_mu its gradient with respect to the
  mean parameters (m, m^2 + v). With g_m = sum_n phi_n - N e, g_v = -N e / 2, e = softmax(m + v/2)
  (that is exp(m + v/2) / zeta at the optimal zeta), the chain rule gives
  grad_mu f = (g_m - 2 g_v m, g_v) = (sum phi - N e + N e m, -N e / 2). Eq. 3.12 as printed keeps
  only sum phi in the first component; :attr:`DapConfig.gamma_grad` = ``"thesis"`` selects that.
* the persona assignment by CVI: tau~ <- rho (E log kappa_a + grad_tau f) + (1-rho) tau~ and then
  tau = softmax(tau~), as the thesis writes (the released code multiplied the old tau instead).
  Here f = E_q log N(theta | alpha_t x, s_t I) is linear in tau with
  grad_tau_p f = -(||m - alpha_{t,p}||^2 + sum_k v_k + K Var[alpha_t]) / (2 s_t).

A batch's statistics (:class:`~flowjax_thesis.models.dap.state.Stats`) are sums over documents,
so the E-step shards over documents: :func:`sharded_e_step` runs it under ``shard_map`` on a 1-D
device mesh and adds the statistics with ``psum``. :func:`batch_stats` streams any number of
documents through it in padded chunks (constant memory).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.models.dap.corpus import Corpus, DocBatch
from flowjax_thesis.models.dap.state import DapConfig, DapState, Local, Stats, dirichlet_expectation


def gaussian_cvi_step(prior1, prior2, g_m, g_v, m, theta1, theta2, rho):
    """One CVI update of a diagonal Gaussian q = N(m, v) in natural parameters (eq. 3.2).

    ``prior1, prior2``: natural parameters of the conjugate (Gaussian prior) part;
    ``g_m, g_v``: gradients of the non-conjugate expectation f with respect to m and v. The
    gradient with respect to the mean parameters (m, m^2 + v) is (g_m - 2 g_v m, g_v) and
    Theta <- rho (prior + that gradient) + (1 - rho) Theta. Returns (theta1, theta2, m, v).
    """
    nat1 = prior1 + g_m - 2.0 * g_v * m
    nat2 = prior2 + g_v
    theta1 = rho * nat1 + (1 - rho) * theta1
    theta2 = rho * nat2 + (1 - rho) * theta2
    v = -0.5 / theta2
    return theta1, theta2, theta1 * v, v


def doc_e_step(cfg: DapConfig, elog_beta_d, counts, alpha_t, alpha_var_t, s, elog_kappa_a):
    """CVI for one document. elog_beta_d: (K, L) E log beta at the document's words."""
    num_k = cfg.num_topics
    rho = cfg.damping
    n = jnp.sum(counts)
    prior_prec = 1.0 / s

    def grad_tau(m, v):
        sq = jnp.sum((m[:, None] - alpha_t) ** 2, axis=0)  # (P,)
        return -(sq + jnp.sum(v) + num_k * alpha_var_t) / (2.0 * s)

    def phi_of(phi_tilde):
        return jax.nn.softmax(phi_tilde[:, None] + elog_beta_d, axis=0)  # (K, L)

    tau_nat0 = elog_kappa_a
    tau0 = jax.nn.softmax(tau_nat0)
    m0 = alpha_t @ tau0
    v0 = jnp.full((num_k,), s)
    theta1 = m0 * prior_prec
    theta2 = jnp.full((num_k,), -0.5 * prior_prec)

    def body(carry):
        theta1, theta2, phi_tilde, tau_nat, m, v, it, _ = carry
        tau = jax.nn.softmax(tau_nat)
        phi = phi_of(phi_tilde)
        sum_phi = phi @ counts  # (K,)
        e = jax.nn.softmax(m + 0.5 * v)  # exp(m + v/2) / zeta
        g_v = -0.5 * n * e
        if cfg.gamma_grad == "exact":
            g_m = sum_phi - n * e
        else:  # eq. 3.12 as printed: only sum phi in the first natural parameter
            g_m = sum_phi + 2.0 * g_v * m
        theta1, theta2, m_new, v_new = gaussian_cvi_step(
            (alpha_t @ tau) * prior_prec, -0.5 * prior_prec, g_m, g_v, m, theta1, theta2, rho
        )
        phi_tilde = rho * m_new + (1 - rho) * phi_tilde
        tau_nat = rho * (elog_kappa_a + grad_tau(m_new, v_new)) + (1 - rho) * tau_nat
        delta = jnp.mean(jnp.abs(m_new - m))
        return theta1, theta2, phi_tilde, tau_nat, m_new, v_new, it + 1, delta

    def cond(carry):
        it, delta = carry[-2], carry[-1]
        return (it < cfg.local_max_iter) & (delta > cfg.local_tol)

    init = (theta1, theta2, m0, tau_nat0, m0, v0, jnp.zeros((), jnp.int32), jnp.inf)
    _, _, phi_tilde, tau_nat, m, v, iters, _ = jax.lax.while_loop(cond, body, init)
    tau = jax.nn.softmax(tau_nat)
    phi = phi_of(phi_tilde)
    elbo = doc_elbo(cfg, m, v, tau, phi, counts, elog_beta_d, alpha_t, alpha_var_t, s, elog_kappa_a)
    return m, v, tau, phi, elbo, iters


def doc_elbo(cfg, m, v, tau, phi, counts, elog_beta_d, alpha_t, alpha_var_t, s, elog_kappa_a):
    """Local ELBO terms of one document (given the global parameters)."""
    num_k = cfg.num_topics
    n = jnp.sum(counts)
    log_phi = jnp.log(jnp.clip(phi, 1e-30))
    words = jnp.sum(counts * jnp.sum(phi * (elog_beta_d - log_phi), axis=0))
    z_theta = jnp.sum((phi @ counts) * m) - n * jax.nn.logsumexp(m + 0.5 * v)
    sq = jnp.sum((m[:, None] - alpha_t) ** 2, axis=0)
    theta_prior = -0.5 * num_k * jnp.log(2 * jnp.pi * s) - jnp.sum(
        tau * (sq + jnp.sum(v) + num_k * alpha_var_t)
    ) / (2 * s)
    theta_ent = 0.5 * jnp.sum(jnp.log(2 * jnp.pi * jnp.e * v))
    x_terms = jnp.sum(tau * (elog_kappa_a - jnp.log(jnp.clip(tau, 1e-30))))
    return words + z_theta + theta_prior + theta_ent + x_terms


def e_step(cfg: DapConfig, state: DapState, batch: DocBatch) -> tuple[Local, Stats]:
    """Local CVI inference for a padded batch and its sufficient statistics (pure, jittable)."""
    ids, counts, authors, times, mask = batch
    elog_beta = dirichlet_expectation(state.lam)
    elog_kappa = dirichlet_expectation(state.delta)
    counts = counts * mask[:, None]
    eb = jnp.take(elog_beta, ids, axis=1).transpose(1, 0, 2)  # (B, K, L)
    doc = functools.partial(doc_e_step, cfg)
    m, v, tau, phi, elbo, iters = jax.vmap(doc)(
        eb,
        counts,
        state.alpha[times],
        state.alpha_var[times],
        state.doc_var[times],
        elog_kappa[authors],
    )
    tau = tau * mask[:, None]
    elbo = elbo * mask
    num_k, num_v = state.lam.shape
    num_t = state.alpha.shape[0]
    wphi = phi * counts[:, None, :]  # (B, K, L)
    beta = jnp.zeros((num_k, num_v), wphi.dtype)
    beta = beta.at[:, ids.reshape(-1)].add(wphi.transpose(1, 0, 2).reshape(num_k, -1))
    kappa = jnp.zeros(state.delta.shape, tau.dtype).at[authors].add(tau)
    stats = Stats(
        beta=beta,
        kappa=kappa,
        tau=jnp.zeros((num_t, cfg.num_personas)).at[times].add(tau),
        tau_sq=jnp.zeros((num_t, cfg.num_personas)).at[times].add(tau**2),
        tau_m=jnp.zeros((num_t, cfg.num_personas, num_k))
        .at[times]
        .add(tau[:, :, None] * m[:, None, :]),
        docs=jnp.zeros((num_t,)).at[times].add(mask),
        elbo=jnp.sum(elbo),
        words=jnp.sum(counts),
        iters=jnp.sum(iters * mask),
    )
    return Local(m=m, v=v, tau=tau, elbo=elbo, iters=iters), stats


# --- jitted entry points and sharding ---------------------------------------------------------
def e_step_config(cfg: DapConfig) -> DapConfig:
    """``cfg`` with the settings the E-step ignores reset, so that they share one compilation."""
    return dataclasses.replace(
        cfg,
        rho_reg=0.0,
        alpha_hat_form="thesis",
        rvi_floor=0.5,
        tau0=10.0,
        kappa=0.7,
        obs_noise=0.8,
        v0=1.0,
        process_noise=0.2,
        doc_variance=None,
        init_alpha_scale=0.5,
        mu0=0.0,
        eta=None,
        omega=None,
    )


@functools.partial(jax.jit, static_argnums=0)
def _e_step_jit(cfg: DapConfig, state: DapState, batch: DocBatch):
    return e_step(cfg, state, batch)


def e_step_jit(cfg: DapConfig, state: DapState, batch: DocBatch):
    """Jitted :func:`e_step` (compiled once per E-step-relevant config and batch shape)."""
    return _e_step_jit(e_step_config(cfg), state, jax.tree.map(jnp.asarray, batch))


@jax.jit
def add_stats(a: Stats, b: Stats) -> Stats:
    return a + b


@functools.lru_cache(maxsize=32)
def sharded_e_step(cfg: DapConfig, mesh: jax.sharding.Mesh) -> Callable:
    """The E-step with documents sharded over ``mesh`` and statistics summed by psum.

    Batch sizes must be a multiple of the mesh size (pad with masked documents).
    """
    from jax.sharding import PartitionSpec as P

    axis = mesh.axis_names[0]

    def local(state, batch):
        loc, stats = e_step(cfg, state, batch)
        return loc, jax.lax.psum(stats, axis)

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(axis)),
        out_specs=(P(axis), P()),
        check_vma=False,
    )
    return jax.jit(fn)


def run_e_step(cfg: DapConfig, state: DapState, batch: DocBatch, mesh=None):
    """E-step on one padded batch, sharded over ``mesh`` when it has more than one device."""
    if mesh is not None and mesh.size > 1:
        b = batch[0].shape[0]
        if b % mesh.size:
            raise ValueError(f"batch of {b} documents is not a multiple of the {mesh.size} devices")
        return sharded_e_step(e_step_config(cfg), mesh)(state, jax.tree.map(jnp.asarray, batch))
    return e_step_jit(cfg, state, batch)


# --- streaming a corpus through the E-step ---------------------------------------------------
def batch_stats(cfg, state, corpus: Corpus, doc_ids, chunk: int, mesh=None) -> Stats:
    """Statistics of the documents ``doc_ids``, accumulated over padded chunks.

    Documents are processed in order of length so that each chunk is padded to a short width;
    memory is bounded by ``chunk`` whatever the number of documents. Fewer than ``chunk``
    documents are padded to the next power of two (so that a smaller last mini-batch of an epoch
    reuses a compiled shape); padded documents are masked and add nothing.
    """
    doc_ids = np.asarray(doc_ids)
    if len(doc_ids) == 0:
        raise ValueError("no documents in the batch")
    lens = np.diff(np.asarray(corpus.indptr))[doc_ids]
    doc_ids = doc_ids[np.argsort(lens, kind="stable")]
    mult = mesh.size if mesh is not None else 1
    size = min(chunk, 1 << int(np.ceil(np.log2(len(doc_ids)))))
    size = int(np.ceil(size / mult) * mult)
    total = None
    for lo in range(0, len(doc_ids), chunk):
        batch = corpus.batch(doc_ids[lo : lo + chunk], pad_docs_to=size)
        _, stats = run_e_step(cfg, state, batch, mesh)
        total = stats if total is None else add_stats(total, stats)
    return total


def full_batch_stats(cfg, state, corpus: Corpus, chunk: int, mesh=None) -> Stats:
    """Statistics of the whole corpus (constant memory, see :func:`batch_stats`)."""
    return batch_stats(cfg, state, corpus, np.arange(corpus.num_docs), chunk, mesh)


def infer_documents(cfg: DapConfig, state: DapState, corpus: Corpus, chunk: int = 256) -> Local:
    """Local parameters of every document of ``corpus`` under fixed globals (numpy arrays)."""
    if corpus.num_docs == 0:
        raise ValueError("empty corpus: no documents to infer")
    order = np.argsort(np.diff(np.asarray(corpus.indptr)), kind="stable")
    size = min(chunk, corpus.num_docs)
    outs = []
    for lo in range(0, corpus.num_docs, chunk):
        ids = order[lo : lo + chunk]
        loc, _ = e_step_jit(cfg, state, corpus.batch(ids, pad_docs_to=size))
        outs.append(jax.tree.map(lambda x, n=len(ids): np.asarray(x)[:n], loc))
    out = jax.tree.map(lambda *xs: np.concatenate(xs), *outs)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return jax.tree.map(lambda x: x[inverse], out)

"""The Dynamic Author-Persona topic model (DAP) and its DAPPER inference (thesis section 3.5).

Model (section 3.3). Topics beta_k ~ Dir(eta); author persona weights kappa_a ~ Dir(omega);
persona-topic trajectories alpha_{t,p} in R^K follow a Brownian motion on the (irregular) time
grid; each document d of author a at time step t picks a persona x ~ Mult(kappa_a), draws
theta ~ N(alpha_t x, s_t I) and its words from the logistic-normal topic mixture.

Variational family (eq. 3.5): q(beta_k) = Dir(lambda_k), q(kappa_a) = Dir(delta_a),
q(x_d) = Mult(tau_d), q(theta_dk) = N(m_dk, v_dk), q(z_n) = Mult(phi_n); alpha is summarized by
variational observations alpha_hat that a Kalman filter / RTS smoother turns into alpha.

E-step (per document, vmapped over a batch, iterated to local convergence with lax.while_loop):

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

M-step (section 3.5.2), with step size rho_i = (i + tau0)^-kappa for mini-batches and 1 for full
batch: lambda and delta by convex combination with their batch estimates scaled to the corpus;
alpha_hat from the regularized linear system (eq. 3.22); then the Kalman filter and RTS smoother.

The alpha_hat system. Setting to zero the derivative of the alpha terms (3.18) minus the
regularizer (3.20) gives, for each time step t and with Sigma^-1 cancelled,

    (1 + sum_d tau_dp) alpha_hat_p + c sum_{q != p} alpha_hat_q
        = alpha_hat_{t-1,p} + sum_d tau_dp m_d

(``alpha_hat_form="derived"``, with the exact expectation E_x ||m - alpha x||^2 =
sum_p tau_p ||m - alpha_p||^2). Eq. 3.22 as printed has sum tau^2 on the left, (m_d - 1) on the
right
and c = rho_reg D_t (``alpha_hat_form="thesis"``). With c = rho_reg D_t the matrix is indefinite
as soon as rho_reg > (1 + D_t/P) / D_t ≈ 1/P. The "derived" form uses c = rho_reg D_t / P as the
released DAPPER code does; that is positive definite only while every persona holds enough of the
documents at t (1 + n_p > c): a persona with few documents makes the system indefinite, the
regularized objective unbounded, and full-batch RVI diverges (seen on NewsArticles at 0.2).

The default ``alpha_hat_form="mass"`` weights each pair by the personas' document masses
n_p = sum_d tau_dp instead of their average D_t / P: c_pq = rho_reg sqrt(n_p n_q). The weights
still add up to the thesis's rho_reg D_t scale in total (eq. 3.20's "applied evenly regardless of
dataset size") and the matrix diag(1 + n) + rho_reg (sqrt(n) sqrt(n)^T - diag(n)) =
I + (1 - rho_reg) diag(n) + rho_reg sqrt(n) sqrt(n)^T is positive definite for every
rho_reg <= 1, so the regularized objective always has its unique maximum.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import digamma, gammaln

from flowjax_thesis.models.dap.corpus import Corpus, DocBatch
from flowjax_thesis.models.dap.kalman import kalman_smoother
from flowjax_thesis.train.transition import Transition


@dataclasses.dataclass(frozen=True)
class DapConfig:
    """Hyperparameters of DAP/DAPPER (static: hashable, used as a jit static argument).

    Attributes:
      num_topics, num_personas: K and P.
      eta, omega: Dirichlet priors of topics and of author personas (defaults 1/K and 1/P).
      process_noise: sigma, the Brownian-motion variance per unit time.
      obs_noise: w, the measurement noise of the variational observations alpha_hat.
      doc_variance: s, the variance of theta around alpha_t x. ``None`` uses the thesis's
        Sigma_t = sigma * Delta s_t (the first step uses the second step's gap).
      v0, mu0: prior variance and mean of alpha at the first time step.
      rho_reg: RVI regularization in [0, 0.5] (section 3.6).
      alpha_hat_form: ``"mass"`` (default), ``"derived"`` or ``"thesis"`` (module docstring).
      gamma_grad: ``"exact"`` CVI gradient or ``"thesis"`` (eq. 3.12 as printed).
      damping: the local CVI step size rho in (0, 1].
      local_max_iter, local_tol: E-step stops when mean |Δm| < local_tol or after max iterations.
      tau0, kappa: stochastic step size rho_i = (i + tau0)^-kappa, kappa in (0.5, 1].
      init_alpha_scale: std of the random initial alpha (breaks the persona symmetry).
    """

    num_topics: int
    num_personas: int
    eta: float | None = None
    omega: float | None = None
    process_noise: float = 0.2
    obs_noise: float = 0.8
    doc_variance: float | None = None
    v0: float = 1.0
    mu0: float = 0.0
    rho_reg: float = 0.0
    alpha_hat_form: str = "mass"
    gamma_grad: str = "exact"
    damping: float = 0.7
    local_max_iter: int = 50
    local_tol: float = 1e-3
    tau0: float = 10.0
    kappa: float = 0.7
    init_alpha_scale: float = 0.5

    def __post_init__(self):
        if self.num_topics < 1 or self.num_personas < 1:
            raise ValueError("num_topics and num_personas must be positive")
        if not 0.0 <= self.rho_reg <= 0.5:
            raise ValueError(
                f"rho_reg must lie in [0, 0.5] (thesis section 3.6), got {self.rho_reg}"
            )
        if not 0.5 < self.kappa <= 1.0:
            raise ValueError(f"kappa (forgetting rate) must lie in (0.5, 1], got {self.kappa}")
        if self.tau0 < 0:
            raise ValueError(f"tau0 (delay) must be >= 0, got {self.tau0}")
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(f"damping must lie in (0, 1], got {self.damping}")
        for name in ("process_noise", "obs_noise", "v0"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.doc_variance is not None and self.doc_variance <= 0:
            raise ValueError("doc_variance must be positive (or None)")
        if self.alpha_hat_form not in ("mass", "derived", "thesis"):
            raise ValueError("alpha_hat_form must be 'mass', 'derived' or 'thesis'")
        if self.gamma_grad not in ("exact", "thesis"):
            raise ValueError("gamma_grad must be 'exact' or 'thesis'")

    @property
    def eta_(self) -> float:
        return 1.0 / self.num_topics if self.eta is None else float(self.eta)

    @property
    def omega_(self) -> float:
        return 1.0 / self.num_personas if self.omega is None else float(self.omega)

    def step_size(self, i) -> float:
        """rho_i = (i + tau0)^-kappa."""
        return (i + self.tau0) ** (-self.kappa)


@struct.dataclass
class DapState:
    """Global variational parameters (a pytree).

    lam: (K, V) Dirichlet parameters of the topics; delta: (A, P) of the author personas;
    alpha_hat: (T, K, P) variational observations; alpha: (T, K, P) smoothed means;
    alpha_var: (T,) smoothed variances; doc_var: (T,) s_t; time_values: (T,);
    observed: (T,) time steps with training documents; step: M-steps taken.
    """

    lam: jax.Array
    delta: jax.Array
    alpha_hat: jax.Array
    alpha: jax.Array
    alpha_var: jax.Array
    doc_var: jax.Array
    time_values: jax.Array
    observed: jax.Array
    step: jax.Array


@struct.dataclass
class Stats:
    """Sufficient statistics of a batch (sums over documents; summed across devices).

    beta: (K, V) expected word-topic counts; kappa: (A, P) sum of tau per author;
    tau: (T, P) sum of tau per time step; tau_sq: (T, P) sum of tau^2; tau_m: (T, P, K) sum of
    tau_p m; docs: (T,) document counts; elbo: local ELBO terms; words: token count;
    iters: total local iterations.
    """

    beta: jax.Array
    kappa: jax.Array
    tau: jax.Array
    tau_sq: jax.Array
    tau_m: jax.Array
    docs: jax.Array
    elbo: jax.Array
    words: jax.Array
    iters: jax.Array

    def __add__(self, other: Stats) -> Stats:
        return jax.tree.map(jnp.add, self, other)


@struct.dataclass
class Local:
    """Per-document variational parameters: m, v (B, K), tau (B, P), elbo (B,), iters (B,)."""

    m: jax.Array
    v: jax.Array
    tau: jax.Array
    elbo: jax.Array
    iters: jax.Array


def dirichlet_expectation(x: jax.Array) -> jax.Array:
    """E[log beta] under Dir(x), row-wise."""
    return digamma(x) - digamma(jnp.sum(x, axis=-1, keepdims=True))


def _doc_variances(cfg: DapConfig, time_values: np.ndarray) -> np.ndarray:
    t = np.asarray(time_values, np.float64)
    if cfg.doc_variance is not None:
        return np.full(len(t), cfg.doc_variance)
    gaps = np.diff(t)
    first = gaps[0] if len(gaps) else 1.0
    return cfg.process_noise * np.concatenate([[first], gaps])


def init_state(key: jax.Array, corpus: Corpus, cfg: DapConfig, n_seed_docs: int = 1) -> DapState:
    """Initial global parameters for ``corpus`` (topics seeded from random documents)."""
    if corpus.num_docs == 0:
        raise ValueError("empty corpus: cannot initialize DAP")
    k, p, v = cfg.num_topics, cfg.num_personas, corpus.vocab_size
    a, t = corpus.num_authors, corpus.num_times
    k1, k2, k3, k4 = jax.random.split(key, 4)
    rng = np.random.default_rng(int(jax.random.randint(k4, (), 0, 2**31 - 1)))
    lam = np.asarray(jax.random.gamma(k1, 100.0, (k, v)) / 100.0, np.float64) + cfg.eta_
    n_seed = max(1, min(n_seed_docs, corpus.num_docs // k))
    for topic in range(k):
        for d in rng.choice(corpus.num_docs, n_seed, replace=False):
            w, c = corpus.doc(int(d))
            lam[topic, w] += c
    delta = cfg.omega_ + jax.random.gamma(k2, 100.0, (a, p)) / 100.0
    alpha0 = cfg.mu0 + cfg.init_alpha_scale * jax.random.normal(k3, (k, p))
    alpha = jnp.broadcast_to(alpha0, (t, k, p))
    observed = corpus.docs_per_time() > 0
    return DapState(
        lam=jnp.asarray(lam, jnp.float32),
        delta=jnp.asarray(delta, jnp.float32),
        alpha_hat=jnp.asarray(alpha, jnp.float32),
        alpha=jnp.asarray(alpha, jnp.float32),
        alpha_var=jnp.full((t,), cfg.obs_noise, jnp.float32),
        doc_var=jnp.asarray(_doc_variances(cfg, corpus.time_values), jnp.float32),
        time_values=jnp.asarray(corpus.time_values, jnp.float32),
        observed=jnp.asarray(observed),
        step=jnp.zeros((), jnp.int32),
    )


# --- E-step ----------------------------------------------------------------------------------
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


def _doc_e_step(cfg: DapConfig, elog_beta_d, counts, alpha_t, alpha_var_t, s, elog_kappa_a):
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
    elbo = _doc_elbo(
        cfg, m, v, tau, phi, counts, elog_beta_d, alpha_t, alpha_var_t, s, elog_kappa_a
    )
    return m, v, tau, phi, elbo, iters


def _doc_elbo(cfg, m, v, tau, phi, counts, elog_beta_d, alpha_t, alpha_var_t, s, elog_kappa_a):
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
    doc = functools.partial(_doc_e_step, cfg)
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


def zero_stats(cfg: DapConfig, state: DapState) -> Stats:
    k, v = state.lam.shape
    a, p = state.delta.shape
    t = state.alpha.shape[0]
    z = jnp.zeros
    return Stats(
        z((k, v)), z((a, p)), z((t, p)), z((t, p)), z((t, p, k)), z((t,)), z(()), z(()), z(())
    )


# --- M-step ----------------------------------------------------------------------------------
def solve_alpha_hat(
    cfg: DapConfig,
    tau: jax.Array,
    tau_sq: jax.Array,
    tau_m: jax.Array,
    docs: jax.Array,
    mu0: float | jax.Array = 0.0,
) -> jax.Array:
    """New variational observations alpha_hat (T, K, P) from scaled statistics (eq. 3.22).

    Solved sequentially over time: alpha_hat_{t-1} (mu0 at t = 0) enters the right-hand side.
    """
    num_p = cfg.num_personas
    off = jnp.ones((num_p, num_p)) - jnp.eye(num_p)
    num_k = tau_m.shape[-1]
    prev0 = jnp.broadcast_to(jnp.asarray(mu0, tau_m.dtype), (num_p, num_k))

    def step(prev, inp):
        n, n2, sm, d_t = inp
        if cfg.alpha_hat_form == "mass":
            root = jnp.sqrt(jnp.maximum(n, 0.0))
            a_mat = jnp.diag(1.0 + n) + cfg.rho_reg * jnp.outer(root, root) * off
            rhs = prev + sm
        elif cfg.alpha_hat_form == "derived":
            a_mat = jnp.diag(1.0 + n) + cfg.rho_reg * d_t / num_p * off
            rhs = prev + sm
        else:
            a_mat = jnp.diag(1.0 + n2) + cfg.rho_reg * d_t * off
            rhs = prev + sm - n[:, None]
        new = jnp.linalg.solve(a_mat, rhs)  # (P, K)
        return new, new

    _, out = jax.lax.scan(step, prev0, (tau, tau_sq, tau_m, docs))
    return out.transpose(0, 2, 1)  # (T, K, P)


def m_step(
    cfg: DapConfig, state: DapState, stats: Stats, scale: jax.Array, rho: jax.Array
) -> DapState:
    """Global update from statistics summed over a batch (pure, jittable).

    ``scale`` = corpus documents / batch documents (1 for full batch); ``rho`` the step size.
    """
    lam = (1 - rho) * state.lam + rho * (cfg.eta_ + scale * stats.beta)
    delta = (1 - rho) * state.delta + rho * (cfg.omega_ + scale * stats.kappa)
    new_hat = solve_alpha_hat(
        cfg,
        scale * stats.tau,
        scale * stats.tau_sq,
        scale * stats.tau_m,
        scale * stats.docs,
        cfg.mu0,
    )
    alpha_hat = (1 - rho) * state.alpha_hat + rho * new_hat
    sm = kalman_smoother(
        alpha_hat,
        state.time_values,
        process_noise=cfg.process_noise,
        obs_noise=cfg.obs_noise,
        mu0=cfg.mu0,
        v0=cfg.v0,
        observed=state.observed,
    )
    return state.replace(
        lam=lam,
        delta=delta,
        alpha_hat=alpha_hat,
        alpha=sm.mean.astype(state.alpha.dtype),
        alpha_var=sm.var.astype(state.alpha_var.dtype),
        step=state.step + 1,
    )


def global_elbo(cfg: DapConfig, state: DapState) -> jax.Array:
    """ELBO terms of the global parameters: beta and kappa (prior + entropy) and the alpha prior.

    alpha enters as a point estimate (its smoothed means) under the Brownian-motion prior.
    """

    def dir_terms(x, prior):
        el = dirichlet_expectation(x)
        dim = x.shape[-1]
        e_log_p = gammaln(dim * prior) - dim * gammaln(prior) + jnp.sum((prior - 1) * el, -1)
        e_log_q = gammaln(jnp.sum(x, -1)) - jnp.sum(gammaln(x), -1) + jnp.sum((x - 1) * el, -1)
        return jnp.sum(e_log_p - e_log_q)

    alpha = state.alpha
    gaps = jnp.diff(state.time_values)
    diffs = alpha[1:] - alpha[:-1]
    var = cfg.process_noise * gaps[:, None, None]
    lp = jnp.sum(-0.5 * jnp.log(2 * jnp.pi * var) - 0.5 * diffs**2 / var)
    lp += jnp.sum(-0.5 * jnp.log(2 * jnp.pi * cfg.v0) - 0.5 * (alpha[0] - cfg.mu0) ** 2 / cfg.v0)
    return dir_terms(state.lam, cfg.eta_) + dir_terms(state.delta, cfg.omega_) + lp


# --- jitted entry points and sharding ---------------------------------------------------------
def e_step_config(cfg: DapConfig) -> DapConfig:
    """``cfg`` with the settings the E-step ignores reset, so that they share one compilation."""
    return dataclasses.replace(
        cfg,
        rho_reg=0.0,
        alpha_hat_form="derived",
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


@functools.partial(jax.jit, static_argnums=0)
def m_step_jit(cfg: DapConfig, state: DapState, stats: Stats, scale, rho):
    return m_step(cfg, state, stats, scale, rho)


@jax.jit
def add_stats(a: Stats, b: Stats) -> Stats:
    return a + b


def make_mesh(num_devices: int | None = None, axis: str = "docs") -> jax.sharding.Mesh:
    """A 1-D device mesh over the first ``num_devices`` devices (all by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if n > len(devices):
        raise ValueError(f"asked for {n} devices, only {len(devices)} available")
    return jax.sharding.Mesh(np.array(devices[:n]), (axis,))


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


# --- the functional transition and the host loop ---------------------------------------------
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


def batch_stats(cfg, state, corpus: Corpus, doc_ids, chunk: int, mesh=None) -> Stats:
    """Statistics of the documents ``doc_ids``, accumulated over padded chunks.

    Documents are processed in order of length so that each chunk is padded to a short width;
    memory is bounded by ``chunk`` whatever the number of documents.
    """
    doc_ids = np.asarray(doc_ids)
    if len(doc_ids) == 0:
        raise ValueError("no documents in the batch")
    lens = np.diff(np.asarray(corpus.indptr))[doc_ids]
    doc_ids = doc_ids[np.argsort(lens, kind="stable")]
    mult = mesh.size if mesh is not None else 1
    size = int(np.ceil(min(chunk, len(doc_ids)) / mult) * mult)
    total = None
    for lo in range(0, len(doc_ids), chunk):
        batch = corpus.batch(doc_ids[lo : lo + chunk], pad_docs_to=size)
        _, stats = run_e_step(cfg, state, batch, mesh)
        total = stats if total is None else add_stats(total, stats)
    return total


def full_batch_stats(cfg, state, corpus: Corpus, chunk: int, mesh=None) -> Stats:
    """Statistics of the whole corpus (constant memory, see :func:`batch_stats`)."""
    return batch_stats(cfg, state, corpus, np.arange(corpus.num_docs), chunk, mesh)


def fit(
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


def check_compatible(train: Corpus, other: Corpus) -> None:
    """Raises if ``other`` cannot be scored by a model trained on ``train``."""
    if other.num_docs == 0:
        raise ValueError("empty evaluation corpus")
    if other.vocab != train.vocab:
        raise ValueError("evaluation corpus must share the training vocabulary")
    if other.author_names != train.author_names:
        raise ValueError(
            "evaluation corpus must use the training author table; DAP learns a persona "
            "distribution per training author, so a test author never seen in training has none"
        )
    if other.num_times != train.num_times or not np.allclose(other.time_values, train.time_values):
        raise ValueError("evaluation corpus must share the training time grid")
    trained = np.bincount(np.asarray(train.authors), minlength=train.num_authors) > 0
    unseen = ~trained[np.asarray(other.authors)]
    if unseen.any():
        names = sorted({other.author_names[a] for a in np.asarray(other.authors)[unseen]})
        raise ValueError(
            f"{len(names)} evaluation author(s) have no training document (e.g. {names[:3]}): "
            "their persona distribution was never learned"
        )

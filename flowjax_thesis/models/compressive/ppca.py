"""Probabilistic PCA (Tipping & Bishop, 1999) as the closed-form core of compressive flows
(thesis section 5.4.1).

Model: ``z ~ N(0, I_d)``, ``x | z ~ N(A z + mu, sigma^2 I_D)`` with ``d < D``, so
``x ~ N(mu, C)``, ``C = A A^T + sigma^2 I_D``. Everything here goes through the ``d x d`` matrix
``M = A^T A + sigma^2 I_d`` (one Cholesky factor ``M = L L^T``):

- matrix determinant lemma: ``log|C| = (D - d) log sigma^2 + log|M|``;
- Woodbury: ``C^{-1} = (I - A M^{-1} A^T) / sigma^2``, so with ``r = x - mu`` and
  ``w = L^{-1} A^T r``: ``r^T C^{-1} r = (|r|^2 - |w|^2) / sigma^2``;
- posterior ``p(z | x) = N(M^{-1} A^T r, sigma^2 M^{-1})``.

No ``D x D`` matrix is inverted or even formed in :func:`log_prob` and :func:`posterior`
(the tests check the jaxpr). The thesis's eqs. 5.3/5.5 lost their factors of 1/2 in extraction;
re-derived: ``log N(x; mu, C) = -(D log 2 pi + log|C| + r^T C^{-1} r) / 2``.

Fitting:

- :func:`fit_ppca`: the closed-form maximum-likelihood solution for a fixed input:
  ``mu`` = mean, ``A = U_d (Lambda_d - sigma^2 I)^{1/2}``, ``sigma^2`` = mean of the discarded
  eigenvalues of the sample covariance (``ddof=0`` is the MLE; ``ddof=1`` is what scikit-learn's
  ``PCA`` uses, so ``PCA(n_components=d).score`` matches it exactly).
- :func:`em_transition`: mini-batch closed-form updates as a pure
  :class:`~flowjax_thesis.train.Transition`. Two modes:

  * ``"em"``: online EM (Cappe & Moulines, 2009) for PPCA with ``mu`` estimated jointly (an
    augmented latent ``[z, 1]``): an E-step on the mini-batch under the current parameters gives
    the expected sufficient statistics ``E[x z~^T]`` (``D x (d+1)``), ``E[z~ z~^T]``
    and ``E|x|^2``; they are blended into running averages with rate ``rho_t`` and the M-step is
    closed form: ``[A, mu] = S_xz S_zz^{-1}``, ``sigma^2 = (S_xx - tr([A, mu] S_xz^T)) / D``.
    O(D d) memory and O(B D d) time per step; no eigendecomposition.
  * ``"moments"``: running mean and second moment (``D x D``) blended with ``rho_t``, then the
    closed form of :func:`fit_ppca` (an eigendecomposition per step).

  ``rho_t = max((t + 1)^-kappa, rho_min)``: ``rho_min = 0`` gives stochastic-approximation
  convergence on a fixed input; ``rho_min > 0`` tracks a moving input (the output of a bijective
  flow that is being trained at the same time).
"""

from __future__ import annotations

import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from flowjax_thesis.train.transition import Transition

LOG_2PI = math.log(2.0 * math.pi)


def check_latent_size(d: int, D: int, what: str = "PPCA") -> None:
    if not isinstance(d, (int,)) or isinstance(d, bool):
        raise TypeError(f"{what}: the latent size d must be an int, got {d!r}")
    if d < 1:
        raise ValueError(f"{what}: the latent size d must be >= 1, got {d}")
    if d >= D:
        raise ValueError(
            f"{what}: a compressive step needs a latent size d smaller than its input size D, "
            f"got d={d} >= D={D}; use a bijective layer to keep the dimension"
        )


def _chol_m(A, sigma2):
    d = A.shape[1]
    M = A.T @ A + sigma2 * jnp.eye(d, dtype=A.dtype)
    return jnp.linalg.cholesky(M)


def log_prob(params, x):
    """``log N(x; mu, A A^T + sigma^2 I)`` for ``x`` of shape ``(..., D)`` (exact)."""
    A, mu = params["A"], params["mu"]
    sigma2 = jnp.exp(params["log_sigma2"])
    D, d = A.shape
    x = jnp.asarray(x)
    if x.shape[-1] != D:
        raise ValueError(f"PPCA expects inputs of shape (..., {D}), got {x.shape}")
    L = _chol_m(A, sigma2)
    r = x - mu
    Ar = r @ A  # (..., d)
    flat = Ar.reshape(-1, d)
    w = solve_triangular(L, flat.T, lower=True).T.reshape(Ar.shape)
    quad = (jnp.sum(r * r, -1) - jnp.sum(w * w, -1)) / sigma2
    log_det_c = (D - d) * jnp.log(sigma2) + 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
    return -0.5 * (D * LOG_2PI + log_det_c + quad)


def posterior(params, x):
    """``p(z | x) = N(mean, cov)``: returns ``mean`` (..., d) and the shared ``cov`` (d, d)."""
    A, mu = params["A"], params["mu"]
    sigma2 = jnp.exp(params["log_sigma2"])
    d = A.shape[1]
    L = _chol_m(A, sigma2)
    Ar = (jnp.asarray(x) - mu) @ A
    mean = cho_solve((L, True), Ar.reshape(-1, d).T).T.reshape(Ar.shape)
    cov = sigma2 * cho_solve((L, True), jnp.eye(d, dtype=A.dtype))
    return mean, cov


def posterior_operators(params):
    """``(B, D_cov)`` with ``B = M^{-1} A^T`` and ``D_cov = sigma^2 M^{-1}`` (eq. 5.8)."""
    A = params["A"]
    sigma2 = jnp.exp(params["log_sigma2"])
    L = _chol_m(A, sigma2)
    d = A.shape[1]
    return cho_solve((L, True), A.T), sigma2 * cho_solve((L, True), jnp.eye(d, dtype=A.dtype))


def from_covariance(mean, cov, d: int) -> dict:
    """Tipping & Bishop's maximum-likelihood parameters from a mean and covariance."""
    D = cov.shape[-1]
    check_latent_size(d, D)
    evals, evecs = jnp.linalg.eigh(0.5 * (cov + cov.T))
    evals, evecs = evals[::-1], evecs[:, ::-1]
    sigma2 = jnp.maximum(jnp.mean(evals[d:]), jnp.finfo(cov.dtype).tiny * 1e6)
    A = evecs[:, :d] * jnp.sqrt(jnp.maximum(evals[:d] - sigma2, 0.0))
    return {"A": A, "mu": mean, "log_sigma2": jnp.log(sigma2)}


def fit_ppca(x, d: int, ddof: int = 0) -> dict:
    """Closed-form ML fit (Tipping & Bishop) to ``x`` of shape ``(N, D)``.

    ``ddof=0`` maximises the likelihood; ``ddof=1`` reproduces scikit-learn's ``PCA``.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"fit_ppca expects data of shape (N, D), got {x.shape}")
    n, D = x.shape
    check_latent_size(d, D)
    mean = jnp.mean(x, 0)
    r = x - mean
    cov = r.T @ r / (n - ddof)
    return from_covariance(mean, cov, d)


def sample(params, key, n: int):
    A, mu = params["A"], params["mu"]
    k1, k2 = jax.random.split(key)
    z = jax.random.normal(k1, (n, A.shape[1]), A.dtype)
    eps = jax.random.normal(k2, (n, A.shape[0]), A.dtype)
    return z @ A.T + mu + jnp.exp(0.5 * params["log_sigma2"]) * eps


# ------------------------------------------------------------------------------------------
# Mini-batch closed-form updates as a Transition
# ------------------------------------------------------------------------------------------


@flax.struct.dataclass
class PPCAState:
    params: Any
    stats: Any  # mode "em": (S_xz, S_zz, S_xx); mode "moments": (mean, second moment)
    t: jax.Array


def em_batch_stats(params, x):
    """Expected sufficient statistics of a batch ``x`` (N, D) under ``params`` (E-step)."""
    A, mu = params["A"], params["mu"]
    sigma2 = jnp.exp(params["log_sigma2"])
    n = x.shape[0]
    mean, cov = posterior(params, x)  # (N, d), (d, d)
    ones = jnp.ones((n, 1), x.dtype)
    ez = jnp.concatenate([mean, ones], 1)  # E[z~] with z~ = [z, 1]
    s_xz = x.T @ ez / n
    s_zz = ez.T @ ez / n
    s_zz = s_zz.at[:-1, :-1].add(cov)
    s_xx = jnp.mean(jnp.sum(x * x, 1))
    del A, mu, sigma2
    return s_xz, s_zz, s_xx


def em_m_step(stats, D: int) -> dict:
    s_xz, s_zz, s_xx = stats
    W = jnp.linalg.solve(s_zz, s_xz.T).T  # (D, d+1) = S_xz S_zz^{-1}  (s_zz symmetric)
    sigma2 = (s_xx - jnp.sum(W * s_xz)) / D
    sigma2 = jnp.maximum(sigma2, 1e-8)
    return {"A": W[:, :-1], "mu": W[:, -1], "log_sigma2": jnp.log(sigma2)}


def _moments(x):
    return jnp.mean(x, 0), x.T @ x / x.shape[0]


def rate(t, kappa: float, rho_min: float):
    return jnp.maximum((t + 1.0) ** (-kappa), rho_min)


def em_transition(
    d: int, mode: str = "em", kappa: float = 0.6, rho_min: float = 0.0, em_iters: int = 1
) -> Transition:
    """Mini-batch closed-form PPCA updates (see the module docstring).

    ``init(params) -> PPCAState`` (any starting params, e.g. random or :func:`fit_ppca` on one
    batch); ``step(state, batch (B, D), key) -> (state, {"log_lik", "rho"})`` where ``log_lik``
    is the batch's mean log-likelihood under the *updated* parameters. ``em_iters`` repeats
    E- and M-step on the same batch (1 is plain online EM).
    """
    if mode not in ("em", "moments"):
        raise ValueError(f"mode must be 'em' or 'moments', got {mode!r}")

    def init(params) -> PPCAState:
        A = params["A"]
        D = A.shape[0]
        check_latent_size(d, D)
        if A.shape != (D, d):
            raise ValueError(f"params['A'] must have shape (D, {d}), got {A.shape}")
        dt = A.dtype
        if mode == "em":
            stats = (jnp.zeros((D, d + 1), dt), jnp.eye(d + 1, dtype=dt), jnp.zeros((), dt))
        else:
            stats = (jnp.zeros((D,), dt), jnp.zeros((D, D), dt))
        return PPCAState(params=params, stats=stats, t=jnp.zeros((), jnp.int32))

    def step(state: PPCAState, batch, key):
        del key
        x = jnp.asarray(batch).reshape(batch.shape[0], -1)
        D = x.shape[1]
        rho = rate(state.t.astype(x.dtype), kappa, rho_min)
        if mode == "em":
            params = state.params
            for _ in range(em_iters):
                new = em_batch_stats(params, x)
                stats = jax.tree.map(lambda a, b: (1 - rho) * a + rho * b, state.stats, new)
                params = em_m_step(stats, D)
        else:
            new = _moments(x)
            stats = jax.tree.map(lambda a, b: (1 - rho) * a + rho * b, state.stats, new)
            mean, second = stats
            params = from_covariance(mean, second - jnp.outer(mean, mean), d)
        metrics = {"log_lik": jnp.mean(log_prob(params, x)), "rho": rho}
        return PPCAState(params=params, stats=stats, t=state.t + 1), metrics

    return Transition(init, step)

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.models.dap.estep import doc_e_step, doc_elbo, gaussian_cvi_step
from flowjax_thesis.models.dap.mstep import pd_limit, rvi_strength, solve_alpha_hat
from flowjax_thesis.models.dap.state import DapConfig


def test_cvi_is_exact_on_a_conjugate_gaussian_term():
    """With a Gaussian likelihood, one CVI step with rho = 1 gives the exact posterior."""
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=4), rng.uniform(0.5, 2.0, size=4)  # prior N(mu, s)
    y, r = rng.normal(size=4), rng.uniform(0.2, 1.0, size=4)  # likelihood N(y | theta, r)
    m, v = rng.normal(size=4), rng.uniform(0.1, 3.0, size=4)  # arbitrary current q
    g_m, g_v = (y - m) / r, -0.5 / r  # gradients of E_q log N(y | theta, r)
    _, _, m1, v1 = gaussian_cvi_step(mu / s, -0.5 / s, g_m, g_v, m, m / v, -0.5 / v, 1.0)
    post_var = 1.0 / (1.0 / s + 1.0 / r)
    np.testing.assert_allclose(v1, post_var, rtol=1e-12)
    np.testing.assert_allclose(m1, post_var * (mu / s + y / r), rtol=1e-12)
    # damped updates converge to the same posterior
    t1, t2 = m / v, -0.5 / v
    for _ in range(60):
        g_m = (y - m) / r
        t1, t2, m, v = gaussian_cvi_step(mu / s, -0.5 / s, g_m, g_v, m, t1, t2, 0.5)
    np.testing.assert_allclose(m, post_var * (mu / s + y / r), rtol=1e-8)


@pytest.fixture(scope="module")
def doc_problem():
    rng = np.random.default_rng(1)
    k, p, n_words = 4, 3, 12
    lam = rng.gamma(2.0, 1.0, size=(k, n_words)) + 0.1
    elog_beta = jax.scipy.special.digamma(lam) - jax.scipy.special.digamma(lam.sum(1))[:, None]
    counts = rng.integers(1, 5, size=n_words).astype(np.float64)
    alpha_t = rng.normal(size=(k, p))
    elog_kappa = np.log(np.array([0.5, 0.3, 0.2]))
    return dict(
        elog_beta_d=jnp.asarray(elog_beta),
        counts=jnp.asarray(counts),
        alpha_t=jnp.asarray(alpha_t),
        alpha_var_t=0.1,
        s=0.7,
        elog_kappa_a=jnp.asarray(elog_kappa),
    )


def test_e_step_converges_to_a_stationary_point_of_the_document_elbo(doc_problem):
    with jax.enable_x64(True):
        # the shift of m common to all topics converges slowly (the likelihood is shift
        # invariant, only the prior pins it), hence the many iterations
        cfg = DapConfig(
            num_topics=4, num_personas=3, local_max_iter=5000, local_tol=1e-13, damping=0.9
        )
        prob = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), doc_problem)
        solve = jax.jit(doc_e_step, static_argnums=0)
        m, v, tau, phi, elbo, iters = solve(cfg, **prob)
        assert int(iters) < 5000
        f = functools.partial(
            doc_elbo,
            cfg,
            **{"counts": prob["counts"]},
            elog_beta_d=prob["elog_beta_d"],
            alpha_t=prob["alpha_t"],
            alpha_var_t=prob["alpha_var_t"],
            s=prob["s"],
            elog_kappa_a=prob["elog_kappa_a"],
        )
        g_m, g_v = jax.jit(jax.grad(lambda m_, v_: f(m_, v_, tau, phi), argnums=(0, 1)))(m, v)
        assert float(jnp.max(jnp.abs(g_m))) < 1e-6
        assert float(jnp.max(jnp.abs(g_v))) < 1e-6
        # tau maximizes the ELBO on the simplex: it is the softmax of its natural parameter
        sq = jnp.sum((m[:, None] - prob["alpha_t"]) ** 2, axis=0)
        expected_tau = jax.nn.softmax(prob["elog_kappa_a"] - sq / (2 * prob["s"]))
        np.testing.assert_allclose(tau, expected_tau, atol=1e-8)
        # and phi is the closed-form optimum given m
        expected_phi = jax.nn.softmax(m[:, None] + prob["elog_beta_d"], axis=0)
        np.testing.assert_allclose(phi, expected_phi, atol=1e-8)
        # thesis eq. 3.12 as printed has another fixed point, which is not stationary
        cfg_t = DapConfig(
            num_topics=4,
            num_personas=3,
            local_max_iter=5000,
            local_tol=1e-13,
            damping=0.9,
            gamma_grad="thesis",
        )
        m2, v2, tau2, phi2, *_ = solve(cfg_t, **prob)
        g2 = jax.grad(lambda m_: f(m_, v2, tau2, phi2))(m2)
        assert float(jnp.max(jnp.abs(g2))) > 1e-3


def _pd_limit_by_bisection(diag):
    """Largest c with diag(diag) + c (11^T - I) positive definite, by bisection on numpy's
    eigenvalues (independent of the closed form in mstep.pd_limit)."""
    off = np.ones((len(diag), len(diag))) - np.eye(len(diag))
    lo, hi = 0.0, 1.0
    while np.linalg.eigvalsh(np.diag(diag) + hi * off).min() > 0:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.linalg.eigvalsh(np.diag(diag) + mid * off).min() > 0 else (lo, mid)
    return lo


def test_pd_limit_matches_bisection():
    rng = np.random.default_rng(0)
    for diag in (np.full(15, 1 + 100 / 15), rng.uniform(1, 300, 6), np.array([301.0, 1.01, 50])):
        np.testing.assert_allclose(
            float(pd_limit(jnp.asarray(diag))), _pd_limit_by_bisection(diag), rtol=1e-4
        )
    # equal masses n = D/P: the limit is 1 + D/P, so rho D_t is indefinite for rho > 1/P + 1/D
    np.testing.assert_allclose(float(pd_limit(jnp.full(15, 1 + 100 / 15))), 1 + 100 / 15, 1e-5)


@pytest.mark.parametrize("form", ["thesis", "mass", "released"])
def test_alpha_hat_system_solves_the_regularized_objective(form):
    """alpha_hat is the stationary point of the alpha terms minus the RVI penalty, where the
    penalty pairs personas p, q with weight c_pq (module docstring of mstep.py)."""
    rng = np.random.default_rng(2)
    t, p, k = 3, 4, 5
    tau = rng.uniform(0, 5, size=(t, p))
    tau_m = rng.normal(size=(t, p, k))
    docs = tau.sum(1)
    for rho in (0.0, 0.05, 0.3):
        cfg = DapConfig(num_topics=k, num_personas=p, rho_reg=rho, alpha_hat_form=form)
        args = [np.asarray(x, np.float32) for x in (tau, tau**2, tau_m, docs)]
        out = np.asarray(solve_alpha_hat(cfg, *args, 0.0))  # (T, K, P)
        prev = np.zeros((p, k))
        for step in range(t):
            a = out[step].T  # (P, K)
            if form == "mass":
                c = rho * np.sqrt(np.outer(tau[step], tau[step]))
            elif form == "released":
                c = np.full((p, p), rho * docs[step] / p)
            else:  # rho D_t at equal masses, mass-weighted, capped at s = 1 - rvi_floor = 0.5
                c = min(rho * p, 0.5) * np.sqrt(np.outer(tau[step], tau[step]))
            np.fill_diagonal(c, 0.0)
            # gradient of -1/2|a - prev|^2 - 1/2 sum_d tau |m - a|^2 - 1/2 sum_{p!=q} c_pq a_p a_q
            grad = -(a - prev) + tau_m[step] - tau[step][:, None] * a - c @ a
            np.testing.assert_allclose(grad, 0.0, atol=2e-4)
            prev = a


def test_thesis_rvi_has_the_thesis_strength_below_the_cap_and_stays_stable():
    """At equal persona masses c = rho D_t exactly while rho P <= 1 - rvi_floor; at the thesis's
    rho = 0.2 with 15 personas uniform rho D_t is indefinite, and the capped system keeps
    A - I >= rvi_floor diag(n), so alpha_hat stays bounded over hundreds of time steps even
    with personas that hold almost no documents (the State of the Union overflow)."""
    p, k = 3, 2
    n = np.full((1, p), 40.0, np.float32)
    cfg = DapConfig(num_topics=k, num_personas=p, rho_reg=0.1)
    m = np.random.default_rng(0).normal(size=(1, p, k)).astype(np.float32)
    out = np.asarray(solve_alpha_hat(cfg, n, n**2, n[..., None] * m, n.sum(1), 0.0))[0].T
    a_mat = np.diag(1 + n[0]) + 0.1 * 120 * (np.ones((p, p)) - np.eye(p))  # c = rho D_t = 12
    np.testing.assert_allclose(out, np.linalg.solve(a_mat, n[0][:, None] * m[0]), rtol=1e-4)
    p, t = 15, 300
    rng = np.random.default_rng(1)
    n = rng.exponential(1.0, (t, p)) ** 3  # many personas with almost no mass at a time step
    off = np.ones((p, p)) - np.eye(p)
    assert np.linalg.eigvalsh(np.diag(1 + n[0]) + 0.2 * n[0].sum() * off).min() < 0
    for floor in (0.5, 0.2):
        cfg = DapConfig(num_topics=k, num_personas=p, rho_reg=0.2, rvi_floor=floor)
        s = float(rvi_strength(cfg))
        root = np.sqrt(n[0])
        a_minus_i = np.diag(n[0]) + s * (np.outer(root, root) - np.diag(n[0]))
        eig = np.linalg.eigvalsh(a_minus_i / np.outer(root, root))
        assert eig.min() >= floor - 1e-6
        tau_m = n[..., None] * rng.normal(size=(t, p, k))
        out = np.asarray(
            solve_alpha_hat(cfg, *(x.astype(np.float32) for x in (n, n**2, tau_m, n.sum(1))), 0.0)
        )
        assert np.all(np.isfinite(out)) and np.abs(out).max() < 20


def test_rvi_makes_the_em_iteration_amplify_persona_differences():
    """Why RVI at the thesis's rho drifts on NewsArticles (mean |alpha| 0.3 -> 200 in 20 epochs):
    the alpha_hat system is positive definite, but where documents do not pin their means down
    (topics a document does not use), m_d follows its persona's alpha, and one M-step then maps a
    persona difference alpha_1 - alpha_2 to n / (1 + n (1 - s)) times itself: a gain above 1 for
    any strength s > 0 once n s > 1; without RVI the gain n / (1 + n) is below 1. rho = 0.25
    with P = 2 is the capped strength s = 0.5 (rvi_floor 0.5), as rho = 0.2 with P = 15."""
    n, p, k = 100.0, 2, 1
    tau = np.full((1, p), n, np.float32)
    for rho, gain in ((0.0, n / (1 + n)), (0.25, n / (1 + n * (1 - 0.5)))):
        cfg = DapConfig(num_topics=k, num_personas=p, rho_reg=rho)
        alpha = np.array([[0.1], [-0.1]], np.float32)  # (P, K): a small persona difference
        for _ in range(5):  # documents' means follow their persona's alpha
            new = np.asarray(solve_alpha_hat(cfg, tau, tau**2, (n * alpha)[None], tau.sum(1), 0.0))
            np.testing.assert_allclose(new[0].T, gain * alpha, rtol=1e-4)
            alpha = new[0].T
    assert n / (1 + n * 0.5) > 1.9 and abs(alpha[0, 0]) > 2.5  # 0.1 * 1.96^5: drifts apart


def test_mass_weighted_rvi_stays_well_posed_when_a_persona_is_starved():
    """A persona with almost no documents at a busy time step made the released code's system
    indefinite (and full-batch RVI diverge); the mass-weighted and the capped thesis systems are
    positive definite."""
    p, k = 4, 3
    tau = np.array([[300.0, 250.0, 200.0, 0.01]], np.float32)
    tau_m = np.random.default_rng(0).normal(size=(1, p, k)).astype(np.float32)
    docs = tau.sum(1)
    rho = 0.5
    released = np.diag(1 + tau[0]) + rho * docs[0] / p * (np.ones((p, p)) - np.eye(p))
    assert np.linalg.eigvalsh(released).min() < 0  # the released code's form: indefinite
    root = np.sqrt(tau[0])
    mass = np.diag(1 + tau[0]) + rho * (np.outer(root, root) - np.diag(tau[0]))
    assert np.linalg.eigvalsh(mass).min() >= 1.0 - 1e-6
    for form in ("mass", "thesis"):
        cfg = DapConfig(num_topics=k, num_personas=p, rho_reg=rho, alpha_hat_form=form)
        out = np.asarray(solve_alpha_hat(cfg, tau, tau**2, tau_m, docs, 0.0))
        assert np.all(np.isfinite(out)) and np.abs(out).max() < 10


def test_rho_reg_out_of_range():
    DapConfig(num_topics=3, num_personas=2, rho_reg=0.6)  # the thesis's advice, not a limit
    with pytest.raises(ValueError, match=r"rho_reg: expected a finite number >= 0, got -0.1"):
        DapConfig(num_topics=3, num_personas=2, rho_reg=-0.1)
    with pytest.raises(ValueError, match=r"rvi_floor: expected a number in \(0, 1\], got 0"):
        DapConfig(num_topics=3, num_personas=2, rvi_floor=0)
    with pytest.raises(ValueError, match="kappa"):
        DapConfig(num_topics=3, num_personas=2, kappa=0.4)

"""The thesis's held-out PWLL (sum_d log p(w_d) / sum_d N_d) against numerical integration."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from flowjax_thesis.models.dap import evaluation as ev
from flowjax_thesis.models.dap.corpus import from_token_lists
from flowjax_thesis.models.dap.state import DapConfig, DapState

DOCS = [[0, 0, 1, 2, 2, 2], [1, 1, 3]]
TW = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.5, 0.3]])


def _corpus():
    return from_token_lists(DOCS, [0, 0], [0, 0], ["a", "b", "c", "d"])


def test_lda_heldout_matches_numerical_integration():
    """K = 2: log p(w) = log int_0^1 prod_n (t beta_1w + (1-t) beta_2w) Beta(t | a, a) dt."""
    c, a = _corpus(), 0.7

    def exact(d):
        w, cnt = c.doc(d)
        f = lambda t: np.exp(  # noqa: E731
            np.sum(cnt * np.log(t * TW[0, w] + (1 - t) * TW[1, w])) + stats.beta.logpdf(t, a, a)
        )
        return np.log(integrate.quad(f, 0, 1, limit=200)[0])

    # a deliberately poor proposal for the first document: the defensive share keeps it usable
    gamma = np.array([[2.0, 5.0], [1.5, 1.2]])
    out = ev.lda_heldout_pwll(gamma, a, TW, c, num_samples=8000, chunk=2)
    np.testing.assert_allclose(out["per_doc"], [exact(0), exact(1)], atol=0.03)
    np.testing.assert_allclose(out["pwll"], out["per_doc"].sum() / 9, rtol=1e-12)


def test_lda_heldout_jitted_equals_eager(monkeypatch):
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.5, 5.0, size=(2, 2))
    jitted = ev.lda_heldout_pwll(gamma, 0.7, TW, _corpus(), num_samples=500, chunk=2)
    monkeypatch.setattr(ev, "_lda_log_marginal_jit", ev._lda_log_marginal)
    eager = ev.lda_heldout_pwll(gamma, 0.7, TW, _corpus(), num_samples=500, chunk=2)
    np.testing.assert_allclose(jitted["per_doc"], eager["per_doc"], atol=1e-5)


def test_dapper_heldout_matches_numerical_integration():
    """K = 2 topics, P = 2 personas: log p(w) = log int prod_n (softmax(theta) . beta_w)
    sum_p kappa_p N(theta | alpha_p, s I) dtheta on a grid."""
    c = _corpus()
    cfg = DapConfig(num_topics=2, num_personas=2, doc_variance=0.5)
    alpha = np.array([[[0.8, -0.5], [-0.4, 0.6]]], np.float32)  # (T, K, P)
    kappa = np.array([[0.3, 0.7]])
    state = DapState(
        lam=jnp.asarray(TW * 1e6, jnp.float32),
        delta=jnp.asarray(kappa * 1e3, jnp.float32),
        alpha_hat=jnp.asarray(alpha),
        alpha=jnp.asarray(alpha),
        alpha_var=jnp.zeros((1,)),
        doc_var=jnp.full((1,), 0.5),
        time_values=jnp.zeros((1,)),
        observed=jnp.ones((1,), bool),
        step=jnp.zeros((), jnp.int32),
    )
    grid = np.linspace(-5, 5, 801)
    t1, t2 = np.meshgrid(grid, grid, indexing="ij")
    th = np.stack([t1, t2], -1)
    probs = np.exp(th - logsumexp(th, axis=-1, keepdims=True))
    prior = sum(
        kappa[0, p] * stats.multivariate_normal(alpha[0, :, p], 0.5 * np.eye(2)).pdf(th)
        for p in range(2)
    )
    exact = []
    for d in range(2):
        w, cnt = c.doc(d)
        lik = np.exp(np.sum(cnt * np.log(probs @ TW[:, w]), axis=-1))
        exact.append(np.log(np.sum(lik * prior) * (grid[1] - grid[0]) ** 2))
    out = ev.heldout_pwll(cfg, state, c, num_samples=8000, chunk=2)
    np.testing.assert_allclose(out["per_doc"], exact, atol=0.03)
    assert out["pwll"] >= ev.elbo_pwll(cfg, state, c) - 0.01  # at least the ELBO


def test_heldout_bad_input():
    c = _corpus()
    with pytest.raises(ValueError, match=r"gamma: expected shape \(2, 2\), got \(3, 2\)"):
        ev.lda_heldout_pwll(np.ones((3, 2)), 0.5, TW, c)
    with pytest.raises(ValueError, match="num_samples: expected a positive integer, got 0"):
        ev.lda_heldout_pwll(np.ones((2, 2)), 0.5, TW, c, num_samples=0)


@pytest.mark.slow
def test_dapper_heldout_jitted_equals_eager_on_a_trained_model(monkeypatch):
    """An earlier jax gave 0.05 nats per word less under jit than eagerly (NewsArticles); the
    estimator is jitted now that both agree, and this test keeps checking that they do."""
    import jax

    from flowjax_thesis.models.dap.corpus import split_by_author
    from flowjax_thesis.models.dap.synthetic import synthetic_corpus
    from flowjax_thesis.models.dap.training import fit_dapper

    corpus, _ = synthetic_corpus(num_authors=12, docs_per_author=6)
    train, test = split_by_author(corpus, 0.25, seed=0)
    cfg = DapConfig(num_topics=5, num_personas=3, doc_variance=1.0)
    state = fit_dapper(train, cfg, key=jax.random.PRNGKey(0), epochs=3).state
    jitted = ev.heldout_pwll(cfg, state, test, num_samples=64)
    monkeypatch.setattr(ev, "_dapper_log_marginal_jit", ev._dapper_log_marginal)
    eager = ev.heldout_pwll(cfg, state, test, num_samples=64)
    np.testing.assert_allclose(jitted["per_doc"], eager["per_doc"], atol=1e-3)
    assert abs(jitted["pwll"] - eager["pwll"]) < 1e-5

"""The appendix-C variational EM baseline of DAP (flowjax_thesis.models.dap.vem)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from flowjax_thesis.models.dap import evaluation as ev
from flowjax_thesis.models.dap.corpus import from_token_lists
from flowjax_thesis.models.dap.estep import doc_e_step, doc_elbo
from flowjax_thesis.models.dap.state import DapConfig
from flowjax_thesis.models.dap.synthetic import synthetic_corpus
from flowjax_thesis.models.dap.training import fit_dapper
from flowjax_thesis.models.dap.vem import (
    doc_vem,
    fit_dap_vem,
    init_local,
    newton_max,
    vem_corpus_elbo,
    vem_sweep,
)
from flowjax_thesis.runs import Run

CFG = DapConfig(num_topics=5, num_personas=3, doc_variance=0.3, process_noise=0.1, obs_noise=0.5)
CFG4 = DapConfig(num_topics=4, num_personas=3, local_max_iter=2000, local_tol=1e-12)


def _doc(seed=3, k=4, p=3, n_words=15):
    """One document's inputs (float64): E log beta at its words, counts, alpha_t, ..."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(2.0, 1.0, size=(k, n_words)) + 0.1
    elog_beta = jax.scipy.special.digamma(lam) - jax.scipy.special.digamma(lam.sum(1))[:, None]
    counts = rng.integers(1, 6, size=n_words).astype(np.float64)
    alpha_t = 1.5 * rng.normal(size=(k, p))
    elog_kappa = np.log(rng.dirichlet(np.ones(p)))
    return tuple(jnp.asarray(x, jnp.float64) for x in (elog_beta, counts, alpha_t, 0.1, 0.6)) + (
        jnp.asarray(elog_kappa, jnp.float64),
    )


def _elbo(doc, local):
    m, v, tau, phi = local
    return doc_elbo(CFG4, m, v, tau, phi, doc[1], doc[0], *doc[2:])


@jax.jit
def _solve(doc):
    """300 sweeps from the start point: the ELBO before and after each, the last local
    parameters, the ELBO's gradient in (m, v) there and tau's and phi's closed forms."""

    def body(local, _):
        local = vem_sweep(CFG4, 5, doc, local)
        return local, _elbo(doc, local)

    start = init_local(doc)
    local, trace = jax.lax.scan(body, start, None, length=300)
    m, v, tau, phi = local
    grads = jax.grad(lambda m_, v_: _elbo(doc, (m_, v_, tau, phi)), argnums=(0, 1))(m, v)
    sq = jnp.sum((m[:, None] - doc[2]) ** 2, axis=0)
    tau_ref = jax.nn.softmax(doc[5] - (sq + jnp.sum(v) + 4 * doc[3]) / (2 * doc[4]))
    phi_ref = jax.nn.softmax(m[:, None] + doc[0], axis=0)
    elbos = jnp.concatenate([_elbo(doc, start)[None], trace])
    return elbos, grads, (tau, tau_ref), (phi, phi_ref)


def test_sweeps_never_decrease_the_document_elbo_and_reach_a_stationary_point():
    with jax.enable_x64(True):
        elbos, (g_m, g_v), taus, phis = _solve(_doc())
    elbos = np.asarray(elbos)
    diffs = np.diff(elbos)
    assert np.all(diffs > -1e-9 * abs(elbos[-1])), diffs.min()
    assert elbos[-1] > elbos[0] + 1.0
    # the fixed point: the ELBO's gradient in m and v vanishes (autodiff reference) ...
    assert np.max(np.abs(g_m)) < 1e-6 and np.max(np.abs(g_v)) < 1e-6
    # ... and tau and phi are their closed-form maximizers
    np.testing.assert_allclose(*taus, atol=1e-10)
    np.testing.assert_allclose(*phis, atol=1e-10)


def test_block_updates_match_scalar_maximization():
    """The gamma and variance blocks with zeta fixed (eq. C.6 and the v-hat equation) against
    scipy's bounded scalar maximization of each coordinate."""
    rng = np.random.default_rng(0)
    k, s, n = 6, 0.4, 80.0
    abar, c = rng.normal(size=k), rng.dirichlet(np.ones(k)) * n
    v0, m0 = rng.uniform(0.1, 2.0, size=k), rng.normal(size=k)
    log_zeta = np.log(np.sum(np.exp(m0 + v0 / 2)))
    with jax.enable_x64(True):

        def gamma_obj(x, xp=jnp, v=v0):
            return -((x - abar) ** 2) / (2 * s) + c * x - n * xp.exp(x + 0.5 * v - log_zeta)

        def var_obj(x, xp=jnp, m=m0):
            return -x / (2 * s) + 0.5 * xp.log(x) - n * xp.exp(m + 0.5 * x - log_zeta)

        m_new = np.asarray(newton_max(gamma_obj, jnp.asarray(m0), 8))
        v_new = np.asarray(newton_max(var_obj, jnp.asarray(v0), 8, positive=True))
    for i in range(k):

        def neg_gamma(x, i=i):
            return -(
                -((x - abar[i]) ** 2) / (2 * s) + c[i] * x - n * np.exp(x + v0[i] / 2 - log_zeta)
            )

        def neg_var(x, i=i):
            return -(-x / (2 * s) + 0.5 * np.log(x) - n * np.exp(m0[i] + x / 2 - log_zeta))

        ref_m = minimize_scalar(
            neg_gamma, bounds=(-20, 20), method="bounded", options={"xatol": 1e-10}
        )
        ref_v = minimize_scalar(
            neg_var, bounds=(1e-9, 20), method="bounded", options={"xatol": 1e-12}
        )
        np.testing.assert_allclose(m_new[i], ref_m.x, atol=1e-6)
        np.testing.assert_allclose(v_new[i], ref_v.x, rtol=1e-5)


def test_fixed_point_is_dappers():
    """Appendix-C coordinate ascent and DAPPER's CVI reach the same local optimum, which is why
    both are scored by the same held-out functions."""
    with jax.enable_x64(True):
        doc = _doc(seed=5)
        vem = jax.jit(doc_vem, static_argnums=(0, 1))(CFG4, 5, *doc)
        cvi_cfg = DapConfig(
            num_topics=4, num_personas=3, local_max_iter=5000, local_tol=1e-13, damping=0.9
        )
        cvi = jax.jit(doc_e_step, static_argnums=0)(cvi_cfg, *doc)
        assert int(vem[5]) < CFG4.local_max_iter
        for a, b in zip(vem[:5], cvi[:5], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_corpus(seed=0)


@pytest.fixture(scope="module")
def fitted(synthetic):
    """VEM (ELBO after every epoch) and DAPPER, 12 epochs from the same initial state."""
    corpus, _ = synthetic
    key = jax.random.PRNGKey(0)
    vem = fit_dap_vem(
        corpus, CFG, key=key, epochs=12, eval_fn=lambda s: {"elbo": vem_corpus_elbo(CFG, s, corpus)}
    )
    return {"vem": vem, "dapper": fit_dapper(corpus, CFG, key=key, epochs=12)}


def test_em_elbo_does_not_decrease(fitted):
    elbos = [r["elbo"] for r in fitted["vem"].history]
    assert len(elbos) == 12
    diffs = np.diff(elbos)
    assert np.all(diffs > -1e-5 * abs(elbos[-1])), diffs
    assert elbos[-1] > elbos[0]


def test_recovers_planted_topics_and_personas_like_dapper(synthetic, fitted):
    corpus, truth = synthetic
    rand = np.random.default_rng(0).dirichlet(np.ones(corpus.vocab_size), size=5)
    _, l1_rand = ev.match_topics(rand, truth.beta)
    res = {}
    for name, result in fitted.items():
        state = result.state
        _, l1 = ev.match_topics(ev.topic_word(state), truth.beta)
        acc = ev.persona_accuracy(ev.author_persona_probs(state).argmax(1), truth.author_persona, 3)
        res[name] = (l1.mean(), acc)
    assert res["vem"][0] < 0.6 * l1_rand.mean()
    assert res["vem"][0] < res["dapper"][0] + 0.05, res
    assert res["vem"][1] >= 0.9 and res["vem"][1] >= res["dapper"][1] - 0.1, res


def test_resumed_fit_matches_uninterrupted(synthetic, tmp_path):
    corpus, _ = synthetic
    kw = dict(key=jax.random.PRNGKey(1))
    straight = fit_dap_vem(corpus, CFG, epochs=2, **kw)
    tags = {"model": "dap-vem"}
    with Run(str(tmp_path / "run"), quiet=True) as run:
        fit_dap_vem(corpus, CFG, epochs=1, run=run, tags=tags, **kw)
    with Run(run.dir, quiet=True) as rerun:
        resumed = fit_dap_vem(corpus, CFG, epochs=2, run=rerun, tags=tags, **kw)
    assert resumed.step == 2 and [r["step"] for r in resumed.history] == [1, 2]
    for name in ("lam", "delta", "alpha", "step"):
        np.testing.assert_allclose(
            np.asarray(getattr(resumed.state, name)), np.asarray(getattr(straight.state, name))
        )


def test_bad_inputs():
    c = from_token_lists([[0, 1], [1, 1]], [0, 0], [0, 0], ["a", "b"])
    cfg = DapConfig(num_topics=2, num_personas=2)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="newton_steps: expected a positive integer, got 0"):
        fit_dap_vem(c, cfg, key=key, epochs=1, newton_steps=0)
    with pytest.raises(ValueError, match="epochs: expected >= 0, got -1"):
        fit_dap_vem(c, cfg, key=key, epochs=-1)
    with pytest.raises(ValueError, match="chunk: expected a positive number"):
        fit_dap_vem(c, cfg, key=key, epochs=1, chunk=0)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer or None"):
        fit_dap_vem(c, cfg, key=key, epochs=1, batch_size=0)

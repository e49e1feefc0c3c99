import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flowjax_thesis.models.dap import evaluation as ev
from flowjax_thesis.models.dap.corpus import from_token_lists
from flowjax_thesis.models.dap.estep import batch_stats
from flowjax_thesis.models.dap.state import DapConfig, init_state
from flowjax_thesis.models.dap.synthetic import synthetic_corpus
from flowjax_thesis.models.dap.training import corpus_elbo, dapper_transition, fit_dapper

CFG = DapConfig(num_topics=5, num_personas=3, doc_variance=0.3, process_noise=0.1, obs_noise=0.5)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_corpus(seed=0)


@pytest.fixture(scope="module")
def fitted(synthetic):
    corpus, _ = synthetic
    best = None
    for seed in range(3):  # restarts, best by ELBO
        elbos = []
        state, _ = fit_dapper(
            corpus,
            CFG,
            key=jax.random.PRNGKey(seed),
            epochs=25,
            callback=lambda e, s, r, el=elbos: el.append(corpus_elbo(CFG, s, corpus)),
        )
        if best is None or elbos[-1] > best[1][-1]:
            best = (state, elbos)
    return best


def test_recovers_planted_personas_and_topics(synthetic, fitted):
    corpus, truth = synthetic
    state, _ = fitted
    acc = ev.persona_accuracy(ev.author_persona_probs(state).argmax(1), truth.author_persona, 3)
    assert acc >= 0.9  # chance is 1/3
    _, l1 = ev.match_topics(ev.topic_word(state), truth.beta)
    rand = np.random.default_rng(0).dirichlet(np.ones(corpus.vocab_size), size=5)
    _, l1_rand = ev.match_topics(rand, truth.beta)
    assert l1.mean() < 0.6 * l1_rand.mean()
    assert np.median(l1) < 0.4


def test_full_batch_elbo_does_not_decrease(fitted):
    _, elbos = fitted
    diffs = np.diff(elbos)
    assert np.all(diffs > -1e-4 * abs(elbos[-1])), diffs


def test_transition_step_is_pure_and_jittable(synthetic):
    corpus, _ = synthetic
    tr = dapper_transition(CFG, corpus.num_docs)
    state = tr.init(jax.random.PRNGKey(0), corpus)
    batch = jax.tree.map(np.asarray, corpus.batch(np.arange(32), pad_docs_to=32))
    step = jax.jit(tr.step)
    s1, m1 = step(state, batch, jax.random.PRNGKey(1))
    s2, m2 = step(state, batch, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.asarray(s1.lam), np.asarray(s2.lam))
    assert int(s1.step) == 1 and np.isfinite(float(m1["batch_elbo_per_word"]))
    rho = float(m1["rho"])
    assert rho == pytest.approx((0 + CFG.tau0) ** -CFG.kappa, rel=1e-6)


def test_minibatch_fit_and_empty_time_step():
    """A time step without training documents is predicted by the Kalman filter (no update)."""
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 20, size=15).tolist() for _ in range(30)]
    times = [0 if d < 15 else 2 for d in range(30)]  # time step 1 has no documents
    c = from_token_lists(
        docs,
        [d % 3 for d in range(30)],
        times,
        [f"w{i}" for i in range(20)],
        time_values=[0.0, 1.0, 4.0],
    )
    cfg = DapConfig(num_topics=3, num_personas=2, local_max_iter=10)
    state, hist = fit_dapper(c, cfg, key=jax.random.PRNGKey(0), epochs=2, batch_size=8, chunk=8)
    assert not bool(state.observed[1])
    a = np.asarray(state.alpha)
    assert np.all(np.isfinite(a)) and len(hist) == 2
    # an unobserved step is the smoothed interpolation between its neighbours
    w0 = (4.0 - 1.0) / 4.0
    np.testing.assert_allclose(a[1], w0 * a[0] + (1 - w0) * a[2], atol=1e-3)


_SHARD_SCRIPT = r"""
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax
import numpy as np
from flowjax_thesis.models.dap import DapConfig, fit_dapper
from flowjax_thesis.train import data_mesh
from flowjax_thesis.models.dap.synthetic import synthetic_corpus
assert len(jax.devices()) == 8
corpus, _ = synthetic_corpus(num_authors=12, docs_per_author=6, vocab_size=60, seed=1)
cfg = DapConfig(num_topics=3, num_personas=2, local_max_iter=15)
mesh = data_mesh() if sys.argv[1] == "8" else None
state, hist = fit_dapper(corpus, cfg, key=jax.random.PRNGKey(0), epochs=2, chunk=16, mesh=mesh)
np.savez(sys.argv[2], lam=np.asarray(state.lam), delta=np.asarray(state.delta),
         alpha=np.asarray(state.alpha), elbo=hist[-1]["train_elbo_docs_per_word"])
"""


def test_one_and_eight_devices_agree(tmp_path):
    out = {}
    for n in ("1", "8"):
        path = str(tmp_path / f"r{n}.npz")
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
        subprocess.run(
            [sys.executable, "-c", _SHARD_SCRIPT, n, path], check=True, env=env, timeout=300
        )
        out[n] = dict(np.load(path))
    for key in ("lam", "delta", "alpha", "elbo"):
        # float32: the device partial sums are added in a different order
        np.testing.assert_allclose(out["1"][key], out["8"][key], rtol=1e-5, atol=1e-6)
    json.dumps({k: float(np.abs(out["1"][k] - out["8"][k]).max()) for k in out["1"]})


def test_bad_inputs_for_fit():
    with pytest.raises(ValueError, match="rho_reg"):
        DapConfig(num_topics=2, num_personas=2, rho_reg=-0.1)
    c = from_token_lists([[0, 1]], [0], [0], ["a", "b"])
    with pytest.raises(ValueError, match="no documents"):
        batch_stats(CFG, init_state(jax.random.PRNGKey(0), c, CFG), c, [], 8)

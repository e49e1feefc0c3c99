import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from flowjax_thesis.models.dap import evaluation as ev
from flowjax_thesis.models.dap.corpus import from_token_lists
from flowjax_thesis.models.dap.estep import batch_stats, e_step_jit
from flowjax_thesis.models.dap.mstep import m_step
from flowjax_thesis.models.dap.state import DapConfig, init_state
from flowjax_thesis.models.dap.synthetic import synthetic_corpus
from flowjax_thesis.models.dap.training import corpus_elbo, dapper_transition, fit_dapper
from flowjax_thesis.runs import Run

CFG = DapConfig(num_topics=5, num_personas=3, doc_variance=0.3, process_noise=0.1, obs_noise=0.5)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_corpus(seed=0)


@pytest.fixture(scope="module")
def fitted(synthetic):
    corpus, _ = synthetic
    best = None
    for seed in range(3):  # restarts, best by ELBO
        result = fit_dapper(
            corpus,
            CFG,
            key=jax.random.PRNGKey(seed),
            epochs=25,
            eval_fn=lambda s: {"elbo": corpus_elbo(CFG, s, corpus)},
        )
        elbos = [r["elbo"] for r in result.history]
        assert len(elbos) == 25 and result.step == 25
        if best is None or elbos[-1] > best[1][-1]:
            best = (result.state, elbos)
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


def test_minibatch_step_is_one_e_step_and_one_m_step(synthetic):
    """The host step streams the mini-batch in chunks; the summed chunk statistics equal one
    E-step on the whole padded batch, and the update is the M-step with rho_0 and scale D / b."""
    corpus, _ = synthetic
    tr = dapper_transition(CFG, corpus, chunk=8)
    state = tr.init(jax.random.PRNGKey(0))
    ids = np.arange(5, 29)
    s1, m1 = tr.step(state, ids, None)
    s2, _ = tr.step(state, ids, None)
    np.testing.assert_array_equal(np.asarray(s1.lam), np.asarray(s2.lam))
    rho = (0 + CFG.tau0) ** -CFG.kappa
    assert m1["rho"] == pytest.approx(rho, rel=1e-6)
    assert int(s1.step) == 1 and np.isfinite(m1["train_elbo_docs_per_word"])
    _, stats = e_step_jit(CFG, state, corpus.batch(ids))
    ref = m_step(CFG, state, stats, corpus.num_docs / len(ids), rho)
    for name in ("lam", "delta", "alpha_hat", "alpha"):
        np.testing.assert_allclose(getattr(s1, name), getattr(ref, name), rtol=2e-5, atol=1e-5)
    assert m1["train_tokens"] == pytest.approx(float(corpus.doc_lengths[ids].sum()))


def test_resumed_fit_matches_uninterrupted(synthetic, tmp_path):
    """Killed after the first epoch and rerun: the engine restores the checkpoint, the mini-batch
    order is a function of the step, so the final state and the per-step records match."""
    corpus, _ = synthetic
    kw = dict(key=jax.random.PRNGKey(4), batch_size=64, chunk=64)
    straight = fit_dapper(corpus, CFG, epochs=2, **kw)
    tags = {"model": "dapper", "restart": 0}
    with Run(str(tmp_path / "run"), quiet=True) as run:
        first = fit_dapper(corpus, CFG, epochs=1, run=run, tags=tags, **kw)
    steps_per_epoch = first.step
    assert steps_per_epoch == -(-corpus.num_docs // 64)  # the last, smaller batch is kept
    with Run(run.dir, quiet=True) as rerun:  # a new process finds the checkpoint
        resumed = fit_dapper(corpus, CFG, epochs=2, run=rerun, tags=tags, **kw)
    assert resumed.step == 2 * steps_per_epoch
    with open(os.path.join(run.dir, "log.txt")) as f:
        assert f"resumed from checkpoint at step {steps_per_epoch}" in f.read()
    # the history of a resumed training starts with the records logged before the checkpoint
    assert [r["step"] for r in resumed.history] == list(range(1, 2 * steps_per_epoch + 1))
    for name in ("lam", "delta", "alpha", "alpha_var", "step"):
        np.testing.assert_allclose(
            np.asarray(getattr(resumed.state, name)), np.asarray(getattr(straight.state, name))
        )
    ref = [r["train_elbo_docs_per_word"] for r in straight.history]
    with open(run.metrics_path) as f:
        logged = [json.loads(line) for line in f]
    steps = [r["step"] for r in logged]
    assert len(steps) == len(set(steps)) == 2 * steps_per_epoch
    got = [r["train_elbo_docs_per_word"] for r in sorted(logged, key=lambda r: r["step"])]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


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
    result = fit_dapper(c, cfg, key=jax.random.PRNGKey(0), epochs=2, batch_size=8, chunk=8)
    state = result.state
    assert not bool(state.observed[1])
    a = np.asarray(state.alpha)
    assert np.all(np.isfinite(a)) and result.step == 2 * 4 == int(state.step)
    # an unobserved step is the smoothed interpolation between its neighbours
    w0 = (4.0 - 1.0) / 4.0
    np.testing.assert_allclose(a[1], w0 * a[0] + (1 - w0) * a[2], atol=1e-3)


WORKER = os.path.join(os.path.dirname(__file__), "dapper_worker.py")


@pytest.mark.integration
def test_one_and_four_devices_agree(tmp_path):
    """Full-batch and mini-batch epochs with the E-step sharded over 4 simulated devices give the
    numbers of one device (float32: the device partial sums are added in another order)."""
    out = str(tmp_path / "out.npz")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run([sys.executable, WORKER, out], check=True, env=env, timeout=600)
    res = dict(np.load(out))
    assert res["one_elbo"].shape == (1 + 3,)
    for key in ("lam", "delta", "alpha", "elbo"):
        np.testing.assert_allclose(res[f"one_{key}"], res[f"four_{key}"], rtol=1e-5, atol=1e-6)


def test_bad_inputs_for_fit():
    with pytest.raises(ValueError, match="rho_reg"):
        DapConfig(num_topics=2, num_personas=2, rho_reg=-0.1)
    c = from_token_lists([[0, 1]], [0], [0], ["a", "b"])
    with pytest.raises(ValueError, match="no documents"):
        batch_stats(CFG, init_state(jax.random.PRNGKey(0), c, CFG), c, [], 8)
    key = jax.random.PRNGKey(0)
    cases = [
        (dict(batch_size=0), "batch_size: expected a positive integer or None, got 0"),
        (dict(epochs=-1), "epochs: expected >= 0, got -1"),
        (dict(chunk=0), "chunk: expected a positive number of documents, got 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            fit_dapper(c, CFG, key=key, **kwargs)

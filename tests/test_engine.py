"""The training engine: resume, divergence, data parallelism, multi-process."""

import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax_thesis.flows import realnvp_flow
from flowjax_thesis.objectives import max_likelihood_loss
from flowjax_thesis.runs import Run
from flowjax_thesis.train import DivergenceError, fit, fit_ml, gradient_transition

WORKER = os.path.join(os.path.dirname(__file__), "engine_worker.py")


def small_problem():
    data = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    flow = realnvp_flow(2, 2, hidden=(8,))
    transition = gradient_transition(max_likelihood_loss(flow), optax.adam(1e-2))
    return data, flow, transition, transition.init(flow.init(jax.random.PRNGKey(0)))


def assert_trees_close(a, b, atol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    data, _, transition, state = small_problem()
    kw = dict(key=jax.random.PRNGKey(3), batch_size=32, chunk_size=10, progress=False)
    straight = fit(transition, state, data, steps=60, **kw)
    ckpt = str(tmp_path / "ckpt")
    first = fit(transition, state, data, steps=30, checkpoint_dir=ckpt, checkpoint_every=10, **kw)
    assert first.step == 30
    # a new process would rebuild the initial state and find the checkpoint
    resumed = fit(transition, state, data, steps=60, checkpoint_dir=ckpt, checkpoint_every=10, **kw)
    assert resumed.step == 60
    assert_trees_close(resumed.state, straight.state)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    data, flow, _, _ = small_problem()

    def loss(params, batch, key):  # NaN as soon as the data are "poisoned"
        value = max_likelihood_loss(flow)(params, batch, key)
        return value + jnp.where(batch[0, 0] > 1e3, jnp.nan, 0.0)

    transition = gradient_transition(loss, optax.adam(1e-2))
    state = transition.init(flow.init(jax.random.PRNGKey(0)))
    ckpt = str(tmp_path / "ckpt")
    kw = dict(
        key=jax.random.PRNGKey(0),
        batch_size=200,
        chunk_size=10,
        checkpoint_dir=ckpt,
        progress=False,
    )
    good = fit(transition, state, data, steps=20, **kw)
    poisoned = data.copy()
    poisoned[:, 0] = 1e4
    with pytest.raises(DivergenceError, match=r"last good state is from step 20") as err:
        fit(transition, good.state, poisoned, steps=40, **kw)
    assert err.value.step == 20
    assert_trees_close(err.value.state, good.state)
    assert os.path.isdir(os.path.join(ckpt, "20"))


def test_metrics_and_early_stopping_are_logged(tmp_path):
    data, flow, _, _ = small_problem()
    run = Run(str(tmp_path / "run"), quiet=True)
    params, result = fit_ml(
        flow,
        data[:150],
        key=jax.random.PRNGKey(0),
        steps=400,
        batch_size=50,
        optimizer=optax.adam(5e-2),
        val_data=data[150:],
        eval_every=10,
        patience=2,
        chunk_size=10,
        run=run,
        progress=False,
    )
    run.close()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any('"val_loss"' in line for line in lines) and any('"loss"' in line for line in lines)
    # the validation loss stops improving after step 30 on this seed: two more evaluations
    vals = {h["step"]: h["val_loss"] for h in result.history if "val_loss" in h}
    assert result.stopped == "early_stopping" and result.step == result.best_step + 2 * 10
    assert (
        result.best_step == min(vals, key=vals.get) and result.best_value == vals[result.best_step]
    )
    # the returned parameters are the best ones: their validation NLL is the best value
    val_nll = -float(jnp.mean(flow.log_prob(params, data[150:])))
    assert val_nll == pytest.approx(result.best_value, rel=1e-5)


def test_bad_data_is_rejected_with_a_clear_message():
    data, flow, _, _ = small_problem()
    bad = data.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite values"):
        fit_ml(flow, bad, key=jax.random.PRNGKey(0), steps=1)
    with pytest.raises(ValueError, match=r"event shape \(2,\)"):
        fit_ml(flow, np.zeros((10, 3), np.float32), key=jax.random.PRNGKey(0), steps=1)


def _run_worker(out, env_extra, *args):
    env = dict(os.environ, **env_extra)
    env.pop("JAX_COORDINATOR_ADDRESS", None) if "JAX_COORDINATOR_ADDRESS" not in env_extra else None
    return subprocess.Popen(
        [sys.executable, WORKER, str(out), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def _params(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: (len(k), k)) if k.startswith("arr_")]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The worker's parameters on one device (one process, no mesh), shared by the tests below."""
    out = tmp_path_factory.mktemp("engine-one") / "one.npz"
    _wait(_run_worker(out, {"XLA_FLAGS": ""}))
    with np.load(out) as f:
        assert int(f["devices"]) == 1 and int(f["processes"]) == 1
    return _params(out)


@pytest.mark.integration
def test_four_simulated_devices_match_one_device(one_device, tmp_path):
    four = _run_worker(
        tmp_path / "four.npz", {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, "--mesh"
    )
    _wait(four)
    with np.load(tmp_path / "four.npz") as f:
        assert int(f["devices"]) == 4
    for a, b in zip(one_device, _params(tmp_path / "four.npz"), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_two_processes_on_loopback_match_one_process(one_device, tmp_path):
    port = _free_port()
    procs = [
        _run_worker(
            tmp_path / "multi.npz",
            {
                "XLA_FLAGS": "",
                "JAX_PLATFORMS": "cpu",
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
            "--mesh",
        )
        for i in range(2)
    ]
    for p in procs:
        _wait(p)
    with np.load(tmp_path / "multi.npz") as f:
        assert int(f["processes"]) == 2 and int(f["devices"]) == 2
    for a, b in zip(one_device, _params(tmp_path / "multi.npz"), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)

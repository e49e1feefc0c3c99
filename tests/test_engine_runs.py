"""The engine inside a run: tags, resume, metrics without duplicates, modes, batch sources,
evaluation hooks, checkpoint faults, Ctrl-C, run-directory locks and the CLI's resume checks."""

import dataclasses
import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax_thesis import cli
from flowjax_thesis.flows import realnvp_flow
from flowjax_thesis.objectives import max_likelihood_loss
from flowjax_thesis.runs import Run, RunDirectoryError
from flowjax_thesis.train import (
    Checkpointer,
    CheckpointError,
    Interrupted,
    epoch_batches,
    fit,
    gradient_transition,
)
from flowjax_thesis.train.fit import make_chunk_runner


def problem(lr=1e-2):
    data = np.random.default_rng(0).normal(size=(96, 2)).astype(np.float32)
    flow = realnvp_flow(2, 2, hidden=(8,))
    transition = gradient_transition(max_likelihood_loss(flow), optax.adam(lr))
    return data, transition, transition.init(flow.init(jax.random.PRNGKey(0)))


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_same(a, b, atol=0.0):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


KW = dict(key=jax.random.PRNGKey(3), batch_size=16, chunk_size=5, progress=False)


def test_tags_name_records_and_checkpoints_and_resume_cuts_the_log(tmp_path):
    data, transition, state = problem()
    straight = fit(transition, state, data, steps=30, **KW)
    d = str(tmp_path / "run")
    with Run(d, quiet=True) as run:
        fit(transition, state, data, steps=15, run=run, tags={"model": "a", "seed": 0}, **KW)
    # records past the checkpoint (as left by a killed run) must be cut on resume
    with Run(d, quiet=True) as run:
        run.log_metrics(20, tags={"model": "a", "seed": 0}, loss=123.0)
    assert os.path.isdir(os.path.join(d, "checkpoints", "model=a,seed=0", "15"))
    with Run(d, quiet=True) as run:
        resumed = fit(
            transition, state, data, steps=30, run=run, tags={"model": "a", "seed": 0}, **KW
        )
    assert_same(resumed.state, straight.state)
    recs = records(d)
    keys = [(json.dumps(r["tags"], sort_keys=True), r["step"]) for r in recs]
    assert len(keys) == len(set(keys)) == 6  # steps 5..30, each once
    assert all(r["loss"] != 123.0 for r in recs)
    assert [r["step"] for r in recs] == [5, 10, 15, 20, 25, 30]


def test_two_trainings_with_the_same_tags_in_one_run_are_refused(tmp_path):
    data, transition, state = problem()
    with Run(str(tmp_path / "run"), quiet=True) as run:
        fit(transition, state, data, steps=5, run=run, tags={"model": "a"}, **KW)
        with pytest.raises(ValueError, match="same tags"):
            fit(transition, state, data, steps=5, run=run, tags={"model": "a"}, **KW)


def test_finished_training_restores_without_training(tmp_path):
    data, transition, state = problem()
    d = str(tmp_path / "run")
    with Run(d, quiet=True) as run:
        first = fit(transition, state, data, steps=10, run=run, tags={"m": 1}, **KW)
    with Run(d, quiet=True) as run:
        again = fit(transition, state, data, steps=10, run=run, tags={"m": 1}, **KW)
    assert again.step == 10
    assert again.history == first.history  # read back from the run's log
    assert_same(again.state, first.state)


@pytest.mark.parametrize("mode", ["step", "host"])
def test_modes_give_the_numbers_of_the_scanned_chunks(mode):
    data, transition, state = problem()
    scanned = fit(transition, state, data, steps=12, **KW)
    other = fit(transition, state, data, steps=12, mode=mode, **KW)
    assert_same(other.state, scanned.state, atol=1e-5)
    np.testing.assert_allclose(
        [r["loss"] for r in other.history], [r["loss"] for r in scanned.history], rtol=1e-5
    )


def test_epoch_batches_cover_every_example_once_per_epoch_and_scan_equals_step():
    data, transition, state = problem()
    source = epoch_batches(data, 16, jax.random.PRNGKey(0))
    assert source.steps_per_epoch == 6
    seen = np.concatenate([source.indices(s) for s in range(6)])
    assert sorted(seen.tolist()) == list(range(96))
    assert not np.array_equal(source.indices(0), source.indices(6))  # a new order per epoch
    kw = dict(key=jax.random.PRNGKey(1), chunk_size=4, progress=False, batches=source)
    a = fit(transition, state, None, steps=8, **kw)
    b = fit(transition, state, None, steps=8, mode="step", **kw)
    assert_same(a.state, b.state, atol=1e-5)
    ragged = epoch_batches(data[:40], 16, jax.random.PRNGKey(0), drop_remainder=False)
    with pytest.raises(ValueError, match="different shapes"):
        fit(transition, state, None, steps=3, batches=ragged, chunk_size=3, key=KW["key"])


def test_on_eval_hook_replaces_the_state_and_it_is_checkpointed(tmp_path):
    data, transition, state = problem()
    seen = []

    def hook(st, values, step):
        seen.append((step, values["val"]))
        return st.replace(params=jax.tree.map(jnp.zeros_like, st.params)) if step == 10 else None

    eval_fn = lambda st: {"val": float(sum(np.sum(np.abs(x)) for x in leaves(st.params)))}
    ckpt = str(tmp_path / "c")
    res = fit(
        transition,
        state,
        data,
        steps=10,
        eval_fn=eval_fn,
        eval_every=5,
        on_eval=hook,
        checkpoint_dir=ckpt,
        **KW,
    )
    assert [s for s, _ in seen] == [5, 10]
    assert all(np.all(x == 0) for x in leaves(res.state.params))
    assert res.history[-1]["val"] == seen[-1][1]  # eval values share the step's record
    _, payload = Checkpointer(ckpt).restore(
        {"state": res.state, "best": np.zeros(()), "bad_evals": np.zeros((), np.int64)}
    )
    assert all(np.all(x == 0) for x in leaves(payload["state"].params))


def test_runner_is_compiled_once_across_stages():
    data, transition, state = problem()
    make_chunk_runner.cache_clear()
    fit(transition, state, data, steps=5, **KW)
    fit(transition, state, data, steps=5, **KW)
    assert make_chunk_runner.cache_info().misses == 1
    assert make_chunk_runner.cache_info().hits == 1


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    data, transition, state = problem()
    ckpt = str(tmp_path / "c")
    fit(transition, state, data, steps=10, checkpoint_dir=ckpt, **KW)
    ten = fit(transition, state, data, steps=10, **KW)
    fit(transition, state, data, steps=15, checkpoint_dir=ckpt, **KW)
    for root, _, files in os.walk(os.path.join(ckpt, "15")):
        for name in files:  # zero-fill every file of the newest checkpoint
            path = os.path.join(root, name)
            with open(path, "r+b") as f:
                f.write(b"\0" * os.path.getsize(path))
    with pytest.warns(UserWarning, match="could not be read"):
        res = fit(transition, state, data, steps=10, checkpoint_dir=ckpt, **KW)
    assert res.step == 10
    assert_same(res.state, ten.state)
    assert os.path.isdir(os.path.join(ckpt, "15.unreadable"))
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="could be read"):
        for step in (5, 10):
            for root, _, files in os.walk(os.path.join(ckpt, str(step))):
                for name in files:
                    open(os.path.join(root, name), "wb").close()  # truncate
        fit(transition, state, data, steps=10, checkpoint_dir=ckpt, **KW)


def test_ctrl_c_saves_a_checkpoint_and_raises_interrupted(tmp_path):
    data, transition, state = problem()

    def eval_fn(st):
        raise KeyboardInterrupt

    ckpt = str(tmp_path / "c")
    with pytest.raises(Interrupted, match="interrupted at step 5") as err:
        fit(
            transition,
            state,
            data,
            steps=20,
            eval_fn=eval_fn,
            eval_every=5,
            checkpoint_dir=ckpt,
            **KW,
        )
    assert err.value.step == 5 and os.path.isdir(os.path.join(ckpt, "5"))


@pytest.mark.parametrize(
    "kwargs, error, phrase",
    [
        (dict(steps=-1), ValueError, "steps must be >= 0"),
        (dict(steps=2.5), TypeError, "steps must be an int"),
        (dict(steps=5, batch_size=0), ValueError, "batch_size must be >= 1"),
        (dict(steps=5, mode="fast"), ValueError, "mode must be one of"),
        (dict(steps=5, key=0), TypeError, "PRNG key"),
    ],
)
def test_fit_rejects_bad_settings(kwargs, error, phrase):
    data, transition, state = problem()
    kw = dict(KW) | kwargs
    with pytest.raises(error, match=phrase):
        fit(transition, state, data, **kw)


def test_fit_rejects_empty_and_complex_data():
    _, transition, state = problem()
    with pytest.raises(ValueError, match="empty"):
        fit(transition, state, np.zeros((0, 2), np.float32), steps=3, **KW)
    with pytest.raises(TypeError, match="real"):
        fit(transition, state, np.zeros((8, 2), np.complex64), steps=3, **KW)


def test_zero_steps_returns_the_initial_state():
    data, transition, state = problem()
    res = fit(transition, state, data, steps=0, key=KW["key"], chunk_size=0)
    assert res.step == 0 and res.history == []


def test_nan_from_the_first_step_is_not_blamed_on_the_learning_rate():
    data, transition, state = problem()
    bad = data.copy()
    bad[:] = np.nan
    from flowjax_thesis.train import DivergenceError

    with pytest.raises(DivergenceError, match="not finite from the first step") as err:
        fit(transition, state, bad, steps=10, **KW)
    assert "learning rate" not in str(err.value)


def test_a_loss_that_ends_far_above_its_start_warns():
    from flowjax_thesis.train import Transition

    growing = Transition(lambda: jnp.zeros(()), lambda s, b, k: (s + 1.0, {"loss": s}))
    with pytest.warns(RuntimeWarning, match="far above where it started"):
        fit(growing, growing.init(), None, steps=20, key=KW["key"], chunk_size=5)
    steady = Transition(lambda: jnp.zeros(()), lambda s, b, k: (s, {"loss": s + 1.0}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit(steady, steady.init(), None, steps=20, key=KW["key"], chunk_size=5)


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path):
    d = str(tmp_path / "run")
    with Run(d, quiet=True):
        with pytest.raises(RunDirectoryError, match="in use by another run"):
            Run(d, quiet=True)
        assert cli.main(["run", "vi-planar-ring", "--out", d]) == 2
    Run(d, quiet=True).close()  # free again once the first run closed


def test_resume_refuses_another_experiments_directory_and_changed_settings(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    saved = {"experiment": "density-matching", "profile": "smoke"}
    (d / "config.json").write_text(json.dumps(saved))
    assert cli.main(["run", "vi-planar-ring", "--out", str(d), "--resume"]) == 2
    assert "holds a run of experiment 'density-matching'" in capsys.readouterr().err
    assert json.loads((d / "config.json").read_text()) == saved  # untouched
    exp_cfg = cli.experiments.get("density-matching").config("smoke")
    (d / "config.json").write_text(json.dumps(saved | dataclasses.asdict(exp_cfg)))
    args = ["run", "density-matching", "--out", str(d), "--resume", "--set", "steps=7"]
    assert cli.main(args) == 2
    assert "differs from the one saved" in capsys.readouterr().err
    assert cli.main(["run", "vi-planar-ring", "--out", str(tmp_path / "none"), "--resume"]) == 2

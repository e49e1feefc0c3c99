"""The engine's early-stopping state and its non-finite check: the best state survives a resume,
and infinities an optimizer keeps in its state as "no value yet" are not a divergence."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax_thesis.train import DivergenceError, Transition, fit


def walk(start=0.0):
    """x moves by +1 per step; the monitored value (x - 40)^2 is best at step 40."""

    def step(state, batch, key):
        return {"x": state["x"] + 1.0}, {"position": state["x"]}

    return Transition(lambda: {"x": jnp.float32(start)}, step)


def val(state):
    return {"val_loss": (state["x"] - 40.0) ** 2}


def test_best_state_is_checkpointed_and_restored_on_resume(tmp_path):
    tr = walk()
    kw = dict(key=np.zeros(2, np.uint32), steps=100, chunk_size=10, eval_fn=val, eval_every=10)
    kw |= dict(patience=100, checkpoint_dir=str(tmp_path), progress=False)
    first = fit(tr, tr.init(), **kw)
    assert float(first.state["x"]) == 40.0 and first.best_step == 40
    # a finished training restores instead of training: it must return the same best state
    again = fit(tr, tr.init(), **kw)
    assert float(again.state["x"]) == 40.0 and again.best_step == 40
    assert again.best_value == pytest.approx(first.best_value)


def test_best_state_survives_an_interrupted_run(tmp_path):
    tr = walk()
    kw = dict(key=np.zeros(2, np.uint32), chunk_size=10, eval_fn=val, eval_every=10)
    kw |= dict(patience=100, checkpoint_dir=str(tmp_path), progress=False)
    fit(tr, tr.init(), steps=60, **kw)  # stands in for a run killed after step 60
    resumed = fit(tr, tr.init(), steps=100, **kw)
    assert resumed.step == 100 and float(resumed.state["x"]) == 40.0 and resumed.best_step == 40


def test_infinity_in_the_optimizer_state_is_not_a_divergence():
    opt = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=2))
    inits = [leaf for leaf in __import__("jax").tree.leaves(opt.init(jnp.zeros(2)))]
    assert any(np.isinf(np.asarray(x)).any() for x in inits)  # the premise: inf "no value yet"

    def step(state, batch, key):
        grads = 2.0 * state["w"]
        updates, opt_state = opt.update(grads, state["opt"], state["w"], value=jnp.sum(grads))
        return {"w": state["w"] + updates, "opt": opt_state}, {"loss": jnp.sum(state["w"] ** 2)}

    tr = Transition(lambda: {"w": jnp.ones(2), "opt": opt.init(jnp.ones(2))}, step)
    result = fit(tr, tr.init(), key=np.zeros(2, np.uint32), steps=20, chunk_size=5, progress=False)
    assert result.step == 20 and float(result.history[-1]["loss"]) < 2.0


def test_nan_in_the_state_is_still_a_divergence():
    def step(state, batch, key):
        x = jnp.where(state["t"] >= 3, jnp.nan, state["x"])
        return {"x": x, "t": state["t"] + 1}, {"loss": jnp.float32(0.0)}

    tr = Transition(lambda: {"x": jnp.float32(1.0), "t": jnp.int32(0)}, step)
    with pytest.raises(DivergenceError):
        fit(tr, tr.init(), key=np.zeros(2, np.uint32), steps=10, chunk_size=5, progress=False)

"""Concrete dropout: the relaxed mask, the regulariser against its closed form, and the learned
rate falling with more data (Gal, Hron & Kendall 2017, section 4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import bernoulli

from flowjax_thesis.models.psr import ConcreteDropoutStudent, concrete_regularizer
from flowjax_thesis.models.psr.concrete_dropout import concrete_mask


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_relaxed_mask_drops_with_probability_p(temperature):
    """``drop > 1/2`` iff logistic noise > -logit p: probability p at every temperature."""
    p, n = 0.3, 200_000
    keep = concrete_mask(jax.random.PRNGKey(0), p, (n,), temperature)
    frac = float(jnp.mean(keep < 0.5))
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert float(keep.min()) >= 0.0 and float(keep.max()) <= 1.0


def test_regularizer_matches_the_closed_form():
    student = ConcreteDropoutStudent(2, hidden=(8, 4), rate=0.2, n_train=500, length_scale=0.3)
    params = student.init(jax.random.PRNGKey(1), 1)
    params = jax.tree.map(lambda a: a, params)
    # set the two layers' rates to known values
    inner = dict(params["params"])
    for name, p in (("cd_0", 0.2), ("cd_1", 0.45)):
        inner[name] = dict(inner[name]) | {"logit_p": jnp.asarray(np.log(p / (1 - p)))}
    params = {"params": inner}
    expected = 0.0
    for name, p in (("cd_0", 0.2), ("cd_1", 0.45)):
        w = np.asarray(inner[name]["dense"]["kernel"], np.float64)
        k = w.shape[0]
        expected += 0.3**2 / 500 * np.sum(w**2) / (1 - p) - 2 / 500 * k * bernoulli(p).entropy()
    got = float(concrete_regularizer(params, 500, 0.3))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert student.rates(params) == pytest.approx({"cd_0": 0.2, "cd_1": 0.45}, rel=1e-5)
    # zero weights: the regulariser is the negative entropy alone, minimal at p = 1/2
    g = jax.grad(lambda lp: concrete_regularizer(
        {"params": inner | {"cd_0": inner["cd_0"] | {"logit_p": lp}}}, 500, 0.0))  # fmt: skip
    assert abs(float(g(jnp.asarray(0.0)))) < 1e-6
    assert float(g(jnp.asarray(-1.0))) < 0 < float(g(jnp.asarray(1.0)))


def _learned_rate(n: int, steps: int = 1500) -> float:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (n, 1)).astype(np.float32)
    y = np.concatenate([np.sin(2 * x), np.cos(2 * x)], 1) + 0.1 * rng.standard_normal((n, 2))
    y = y.astype(np.float32)
    student = ConcreteDropoutStudent(2, hidden=(32, 32), rate=0.2, n_train=n, length_scale=1e-2)
    params = student.init(jax.random.PRNGKey(0), 1)
    opt = optax.adam(1e-2)

    @jax.jit
    def run(params):
        def step(carry, key):
            params, state = carry
            idx = jax.random.randint(key, (256,), 0, n)
            batch = (jnp.asarray(y)[idx], jnp.asarray(x)[idx])
            grads = jax.grad(student.loss)(params, batch, jax.random.fold_in(key, 1))
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        keys = jax.random.split(jax.random.PRNGKey(1), steps)
        return jax.lax.scan(step, (params, opt.init(params)), keys)[0][0]

    return student.rates(run(params))["cd_0"]


@pytest.mark.integration  # trains a model to a quality threshold
def test_learned_rate_is_lower_with_more_data():
    small, large = _learned_rate(25), _learned_rate(5000)
    assert large < small - 0.05, (small, large)
    assert large < 0.2  # moved down from its initial value


def test_concrete_student_needs_the_training_size():
    with pytest.raises(ValueError, match="n_train"):
        ConcreteDropoutStudent(2)
    with pytest.raises(ValueError, match="rate"):
        ConcreteDropoutStudent(2, rate=0.0, n_train=10)

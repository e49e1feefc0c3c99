"""Gradient boosted normalizing flows: model, weights, training stages, VI, conditional."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.bijectors import EventBijector, Layer
from flowjax_thesis.data.toy import train_val_test
from flowjax_thesis.families import FLOW_FAMILIES, component_flow, make_flow
from flowjax_thesis.flows import Flow
from flowjax_thesis.grid import grid_2d, log_normalizer_grid
from flowjax_thesis.models.gbnf import (
    GBNF,
    boost_density,
    boost_vi,
    density_rho_objective,
    rho_sgd_transition,
)
from flowjax_thesis.models.gbnf import weights as W
from flowjax_thesis.objectives import elbo
from flowjax_thesis.runs import Run
from flowjax_thesis.train import fit


def _toy(name="8gaussians", seed=0, n=(3000, 1000, 2000)):
    d = train_val_test(name, jax.random.PRNGKey(seed), *n)
    return tuple(np.asarray(d[k]) for k in ("train", "val", "test"))


@pytest.fixture(scope="module")
def additive():
    train, val, test = _toy()
    gbnf = GBNF(component_flow("realnvp", 2, 1, (32,)), 3, alternate=True)
    params, info = boost_density(
        gbnf, train, key=jax.random.PRNGKey(1), steps=300, batch_size=256, val_data=val
    )
    return gbnf, params, info, (train, val, test)


def test_bad_input_errors():
    flow = component_flow("realnvp", 2, 1, (8,))
    with pytest.raises(ValueError, match="C >= 1"):
        GBNF(flow, 0)
    with pytest.raises(ValueError, match="boosting"):
        GBNF(flow, 2, boosting="geometric")
    gbnf = GBNF(flow, 2)
    params = gbnf.set_component_weight(gbnf.init(jax.random.PRNGKey(0)), 0, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gbnf.set_component_weight(params, 1, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gbnf.set_weights(params, [1.2, -0.2])
    with pytest.raises(ValueError, match="sum to 1"):
        gbnf.set_weights(gbnf.set_component_weight(params, 1, 0.5), [0.7, 0.7])
    with pytest.raises(ValueError, match="rho_init"):
        boost_density(gbnf, np.zeros((10, 2)), key=jax.random.PRNGKey(0), steps=1, rho_init=2.0)
    cond = component_flow("realnvp", 2, 1, (8,), context_shape=(1,))
    with pytest.raises(ValueError, match="additive"):
        GBNF(cond, 2, boosting="multiplicative")


@dataclass(frozen=True)
class _ForwardOnly(Layer):
    """A shift layer that deliberately has no inverse."""

    event_ranks = (1,)

    def init(self, key, event_shape, context_shape=None):
        return {"b": jnp.zeros(event_shape)}

    def bind(self, params, context=None):
        return EventBijector(lambda z, _: (z + params["b"], jnp.zeros(())), None, 1)


def test_vi_rejects_family_without_inverse():
    gbnf = GBNF(Flow((_ForwardOnly(),), (2,)), 2)
    with pytest.raises(ValueError, match="inverse"):
        boost_vi(gbnf, lambda z: -jnp.sum(z**2), key=jax.random.PRNGKey(0), steps=1)


def test_weights_valid_and_additive_density_integrates_to_one(additive):
    gbnf, params, info, _ = additive
    w = gbnf.weights(params)
    assert np.all(w >= 0) and np.all(w <= 1)
    assert w.sum() == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= s["rho"] <= 1.0 for s in info["stages"])
    log_mass = float(log_normalizer_grid(lambda x: gbnf.log_prob(params, x), 9.0, 300))
    assert abs(log_mass) < 0.01


def test_samples_agree_with_log_prob(additive):
    """Moments of samples against moments of the density on a grid (independent paths: forward
    maps + categorical choice vs inverse maps + logsumexp)."""
    gbnf, params, _, _ = additive
    x, log_q = jax.jit(lambda p, k: gbnf.sample_and_log_prob(p, k, 40000))(
        params, jax.random.PRNGKey(5)
    )
    lim = 9.0
    pts, area = grid_2d(lim, 300)
    dens = np.exp(np.asarray(gbnf.log_prob(params, pts), np.float64)) * area
    mass = dens.sum()
    dens /= mass
    pts = np.asarray(pts, np.float64)
    mean_grid = dens @ pts
    second_grid = dens @ pts**2
    x = np.asarray(x, np.float64)
    # compare on the grid's square: 1-step components can have thin far tails that the grid
    # does not see, and their share must match the samples' share outside the square
    inside = np.all(np.abs(x) < lim, axis=1)
    assert abs(inside.mean() - mass) < 0.005
    np.testing.assert_allclose(log_q, gbnf.log_prob(params, x), atol=1e-4)
    x = x[inside]
    se = np.sqrt(second_grid / len(x))
    assert np.all(np.abs(x.mean(0) - mean_grid) < 5 * se)
    assert np.allclose((x**2).mean(0), second_grid, rtol=0.05)


def test_component_choice_follows_weights():
    gbnf = GBNF(component_flow("realnvp", 2, 1, (8,)), 3)
    params = gbnf.init(jax.random.PRNGKey(0))
    for i, rho in enumerate([1.0, 0.5, 0.2]):
        params = gbnf.set_component_weight(params, i, rho)
    w = gbnf.weights(params)
    assert np.allclose(w, [0.4, 0.4, 0.2], atol=1e-6)  # rho_j prod_{k>j} (1 - rho_k)
    lw, _ = gbnf.mixture_log_weights(params)
    _, idx = gbnf._sample_from(params, lw, jax.random.PRNGKey(1), 20000)
    freq = np.bincount(np.asarray(idx), minlength=3) / 20000
    assert np.allclose(freq, w, atol=0.015)


def test_learned_rho_beats_initial_rho_on_test_data(additive):
    gbnf, params, info, (_, _, test) = additive
    for s in info["stages"][1:]:
        c = s["component"]
        f = density_rho_objective(gbnf, params, c, test)
        init_nll, learned_nll = (float(v) for v in f(jnp.array([s["rho_init"], s["rho"]])))
        assert learned_nll <= init_nll + 1e-4, (c, s)
    # at least one stage moved rho away from 1/C and gained on the held-out set
    assert any(s["val_nll"] < s["val_nll_init"] - 1e-3 for s in info["stages"][1:])


def test_frozen_components_unchanged_when_growing(additive):
    gbnf, params, _, (train, val, _) = additive
    bigger, grown = gbnf.grow(params, jax.random.PRNGKey(9))
    assert bigger.num_components == 4 and bigger.num_active(grown) == 3
    before_new = jax.tree.map(lambda a: np.asarray(a[3]), grown["components"])
    params2, info2 = boost_density(
        bigger, train, key=jax.random.PRNGKey(2), steps=100, val_data=val, params=grown
    )
    assert [s["component"] for s in info2["stages"]] == [3]
    for old, new in zip(
        jax.tree.leaves(params["components"]), jax.tree.leaves(params2["components"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new)[:3])
    after_new = jax.tree.map(lambda a: np.asarray(a[3]), params2["components"])
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(before_new), jax.tree.leaves(after_new), strict=True)
    ]
    assert any(changed)
    assert bigger.weights(params2).sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.integration  # a whole conv/flow model: compile-dominated
def test_importance_reweighting_and_finetune_run():
    train, val, test = _toy("2spirals", n=(1500, 500, 500))
    gbnf = GBNF(component_flow("realnvp", 2, 2, (16,)), 2)
    params, info = boost_density(
        gbnf,
        train,
        key=jax.random.PRNGKey(0),
        steps=100,
        val_data=val,
        reweight="importance",
        rho_method="sgd",
        finetune_passes=1,
        finetune_steps=50,
    )
    assert [s["phase"] for s in info["stages"]] == ["boost", "boost", "finetune1", "finetune1"]
    assert np.isfinite(float(jnp.mean(gbnf.log_prob(params, test))))
    w = gbnf.weights(params)
    assert np.all((w >= 0) & (w <= 1)) and w.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.integration
def test_multiplicative_partition_function():
    train, val, _ = _toy("8gaussians", n=(1500, 500, 10))
    gbnf = GBNF(component_flow("realnvp", 2, 2, (16,)), 2, boosting="multiplicative")
    params, info = boost_density(gbnf, train, key=jax.random.PRNGKey(3), steps=150, val_data=val)
    assert info["stages"][1]["log_z_ess"] > 100
    unnorm = {**params, "log_z": jnp.zeros(())}
    log_z_grid = float(log_normalizer_grid(lambda x: gbnf.log_prob(unnorm, x), 9.0, 300))
    assert float(params["log_z"]) == pytest.approx(log_z_grid, abs=0.03)
    log_mass = float(log_normalizer_grid(lambda x: gbnf.log_prob(params, x), 9.0, 300))
    assert abs(log_mass) < 0.03
    assert 0.0 <= gbnf.weights(params)[1] <= 1.0 and gbnf.weights(params)[0] == 1.0
    # SIR samples from the product density: their mean matches the grid mean
    x = gbnf.sample(params, jax.random.PRNGKey(4), 4000)
    pts, area = grid_2d(9.0, 200)
    dens = np.exp(np.asarray(gbnf.log_prob(params, pts), np.float64))
    dens /= dens.sum()
    assert np.allclose(np.asarray(x).mean(0), dens @ np.asarray(pts), atol=0.15)


@pytest.mark.integration
def test_boosted_vi_learned_weight_improves_elbo():
    """Two-mode target, 1-step components. Algorithm 1 (SGD on rho) and the line search agree,
    and the learned rho gives a higher mixture ELBO than the initial rho = 1/C on fresh draws."""

    def log_target(z):
        a = -0.5 * jnp.sum(z**2) / 0.5
        b = -0.5 * jnp.sum((z - jnp.array([3.0, 0.0])) ** 2) / 0.5
        return jnp.logaddexp(a, b)

    gbnf = GBNF(component_flow("realnvp_actnorm", 2, 1, (16,)), 2)
    kw = dict(key=jax.random.PRNGKey(0), steps=400, num_samples=128, regularization=0.8)
    params, info = boost_vi(gbnf, log_target, rho_lr=0.05, **kw)
    _, info_ls = boost_vi(gbnf, log_target, rho_method="line_search", **kw)
    rho, rho_ls = info["stages"][1]["rho"], info_ls["stages"][1]["rho"]
    assert 0.0 <= rho <= 1.0 and abs(rho - rho_ls) < 0.1
    initial = gbnf.set_component_weight(params, 1, info["stages"][1]["rho_init"])
    k = jax.random.PRNGKey(7)
    elbo_learned = float(elbo(gbnf, params, k, log_target, 20000))
    elbo_initial = float(elbo(gbnf, initial, k, log_target, 20000))
    assert elbo_learned > elbo_initial + 0.05


def test_planar_components_vi_and_inverse():
    """Planar components need their scalar-root inverse for G(z); log_prob of samples matches
    the forward-pass log-density of the component that produced them."""
    gbnf = GBNF(component_flow("planar", 2, 4), 2)
    params, info = boost_vi(
        gbnf,
        lambda z: -0.5 * jnp.sum((z - 1.0) ** 2),
        key=jax.random.PRNGKey(1),
        steps=100,
        num_samples=64,
        rho_method="line_search",
    )
    p1 = gbnf.component(params, 1)
    z, log_q = gbnf.component_sample_and_log_prob(p1, 1, jax.random.PRNGKey(2), 500)
    assert np.allclose(gbnf.component_log_prob(p1, 1, z), log_q, atol=1e-3)
    assert gbnf.weights(params).sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.integration  # a whole conv/flow model: compile-dominated
def test_conditional_gbnf_normalised_per_context():
    key = jax.random.PRNGKey(0)
    kx, ky = jax.random.split(key)
    ctx = jax.random.uniform(kx, (2000, 1), minval=-1, maxval=1)
    y = jnp.concatenate([2 * ctx, -ctx], 1) + 0.3 * jax.random.normal(ky, (2000, 2))
    gbnf = GBNF(component_flow("realnvp", 2, 2, (16,), context_shape=(1,)), 2)
    params, info = boost_density(
        gbnf, np.asarray(y), context=np.asarray(ctx), key=jax.random.PRNGKey(1), steps=500
    )
    for c in (-0.8, 0.5):
        log_mass = log_normalizer_grid(
            lambda v, c=c: gbnf.log_prob(params, v[None], jnp.full((1, 1), c))[0], 6.0, 200
        )
        assert abs(float(log_mass)) < 0.01
    s = gbnf.sample(params, jax.random.PRNGKey(3), 4000, context=jnp.array([0.5]))
    pts, _ = grid_2d(6.0, 200)
    dens = np.exp(np.asarray(gbnf.log_prob(params, pts, jnp.full((len(pts), 1), 0.5)), float))
    dens /= dens.sum()
    assert np.allclose(np.asarray(s).mean(0), dens @ np.asarray(pts), atol=0.05)
    # and the model has learned the dependence on the context (true means 2c and -c)
    assert np.allclose(dens @ np.asarray(pts), [1.0, -0.5], atol=0.35)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_8gaussians_boosting_beats_single_component(seed):
    train, val, test = _toy(seed=seed, n=(20000, 2000, 5000))
    gbnf = GBNF(component_flow("realnvp", 2, 1, (64,)), 8, alternate=True)
    params, info = boost_density(
        gbnf, train, key=jax.random.PRNGKey(seed), steps=2000, batch_size=512, val_data=val
    )
    first = gbnf.set_weights(params, [1.0] + [0.0] * 7)
    nll = lambda p: -float(jnp.mean(gbnf.log_prob(p, test)))
    print(f"seed {seed}: test NLL first {nll(first):.3f}, C=8 {nll(params):.3f}")
    # measured (boosted objective, 2000 steps/component, seeds 0-2): gains of 1.2-1.5 nats
    assert nll(params) < nll(first) - 0.5
    # later components are used: no single boosted component's weight collapsed to ~0 for all
    assert np.sum(gbnf.weights(params)[2:] > 0.02) >= 3


def test_scan_component_map_matches_vmap():
    """``component_map="scan"`` (lax.map over components for log_prob; each draw pushed through
    its own component only, in sorted chunks, for sampling) gives the same numbers as vmap."""
    flow = component_flow("realnvp", 2, 2, (8,))
    gv = GBNF(flow, 5, alternate=True)
    gs = GBNF(flow, 5, alternate=True, component_map="scan", sample_chunk=16)
    params = gv.init(jax.random.PRNGKey(0))
    for i, rho in enumerate([1.0, 0.5, 0.3, 0.05, 0.2]):
        params = gv.set_component_weight(params, i, rho)
    x = jax.random.normal(jax.random.PRNGKey(1), (300, 2))
    np.testing.assert_allclose(gv.log_prob(params, x), gs.log_prob(params, x), atol=1e-5)
    key = jax.random.PRNGKey(2)
    for n in (5, 200):  # fewer rows than a chunk; ragged runs over many chunks
        xv, lv = jax.jit(lambda p, k, n=n: gv.sample_and_log_prob(p, k, n))(params, key)
        xs, ls = jax.jit(lambda p, k, n=n: gs.sample_and_log_prob(p, k, n))(params, key)
        np.testing.assert_allclose(xv, xs, atol=1e-5)
        np.testing.assert_allclose(lv, ls, atol=1e-4)
    with pytest.raises(ValueError, match="component_map"):
        GBNF(flow, 2, component_map="pmap")


# -- the flow-family factory ------------------------------------------------------------------


@pytest.mark.parametrize("name", FLOW_FAMILIES)
def test_make_flow_family_density_matches_its_samples(name):
    """Every family: ``log_prob`` (inverse maps) of the flow's own draws equals the density
    returned with them (forward maps), at perturbed (non-identity) params."""
    flow = make_flow(name, 3, num_layers=2, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    noisy = [
        p + 0.05 * jax.random.normal(k, p.shape) if jnp.issubdtype(p.dtype, jnp.floating) else p
        for p, k in zip(leaves, keys, strict=True)
    ]
    params = jax.tree.unflatten(tree, noisy)
    draw = jax.jit(lambda p, k: flow.sample_and_log_prob(p, k, 64))
    x, log_q = draw(params, jax.random.PRNGKey(2))
    assert x.shape == (64, 3)
    np.testing.assert_allclose(jax.jit(flow.log_prob)(params, x), log_q, atol=2e-3, rtol=1e-4)


def test_make_flow_bad_input_and_conditional():
    for kwargs, match in [
        ({"name": "nice", "dim": 2}, "unknown flow family"),
        ({"name": "realnvp", "dim": 1}, "dim >= 2"),
        ({"name": "realnvp", "dim": 0}, "dim must be"),
        ({"name": "maf", "dim": 2, "num_layers": 0}, "num_layers"),
        ({"name": "planar", "dim": 2, "context_shape": (1,)}, "unconditional"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_flow(**kwargs)
    flow = make_flow("maf", 2, num_layers=1, hidden=(8,), context_shape=(3,))
    params = flow.init(jax.random.PRNGKey(0))
    ctx = jnp.ones((5, 3))
    assert flow.log_prob(params, jnp.zeros((5, 2)), ctx).shape == (5,)
    # the elementwise affine front layer starts the flow at its base (identity at init)
    plain = make_flow("mean_field", 2)
    p = plain.init(jax.random.PRNGKey(0))
    x = jnp.array([[0.3, -1.0]])
    np.testing.assert_allclose(plain.log_prob(p, x), -jnp.sum(x**2) / 2 - jnp.log(2 * jnp.pi))


def test_gbnf_of_flows_with_a_context_dependent_base():
    """Components whose base is a function of a pytree context (a VAE posterior's Gaussian):
    per context the mixture integrates to 1, its draws have the grid's mean, and both
    component maps draw the same rows."""
    base = lambda c: distrax.MultivariateNormalDiag(c["mu"], jnp.exp(c["log_sigma"]))
    shape = {"mu": (2,), "log_sigma": (2,)}
    flow = make_flow(
        "realnvp", 2, 2, (8,), context_shape=shape, base=base, layer_context=lambda c: None
    )
    gv = GBNF(flow, 3, alternate=True)
    gs = GBNF(flow, 3, alternate=True, component_map="scan", sample_chunk=32)
    params = gv.init(jax.random.PRNGKey(0))
    leaves, tree = jax.tree.flatten(params["components"])
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    noisy = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    params = {**params, "components": jax.tree.unflatten(tree, noisy)}
    for i, rho in enumerate([1.0, 0.4, 0.3]):
        params = gv.set_component_weight(params, i, rho)
    ctx = {"mu": jnp.array([1.0, -1.0]), "log_sigma": jnp.array([-0.5, 0.2])}
    log_mass = log_normalizer_grid(lambda v: gv.log_prob(params, v, ctx), 9.0, 300)
    assert abs(float(log_mass)) < 0.01
    draw = lambda g: jax.jit(lambda p, k: g.sample_and_log_prob(p, k, 4000, ctx))
    x, log_q = draw(gv)(params, jax.random.PRNGKey(2))
    xs, _ = draw(gs)(params, jax.random.PRNGKey(2))
    np.testing.assert_allclose(x, xs, atol=1e-5)
    np.testing.assert_allclose(log_q, gv.log_prob(params, x, ctx), atol=1e-4)
    pts, _ = grid_2d(9.0, 300)
    dens = np.exp(np.asarray(gv.log_prob(params, pts, ctx), np.float64))
    mean = dens @ np.asarray(pts) / dens.sum()
    se = np.asarray(x).std(0) / np.sqrt(len(x))
    assert np.all(np.abs(np.asarray(x).mean(0) - mean) < 5 * se)


# -- Algorithm 1: projected SGD on rho --------------------------------------------------------


@pytest.mark.parametrize("target", [0.3, 1.7, -0.4])
def test_rho_sgd_is_projected_sgd_with_decaying_step(target):
    """On F(rho) = (rho - t)^2 the iterates follow rho <- clip(rho - lr/(1 + d k) F'(rho), 0, 1)
    (computed here by hand) and end at the constrained minimiser clip(t, 0, 1)."""
    lr, decay = 0.3, 0.05
    tr = rho_sgd_transition(lambda rho, batch, key: 2.0 * (rho - target), lr, decay, tol=0.0)
    result = fit(tr, tr.init(0.5), key=jax.random.PRNGKey(0), steps=300, progress=False)
    ref = 0.5
    for k in range(300):
        ref = min(max(ref - lr / (1 + decay * k) * 2.0 * (ref - target), 0.0), 1.0)
    assert float(result.state.rho) == pytest.approx(ref, abs=1e-5)
    assert float(result.state.rho) == pytest.approx(min(max(target, 0.0), 1.0), abs=1e-3)


# -- data parallelism -------------------------------------------------------------------------

WORKER = os.path.join(os.path.dirname(__file__), "gbnf_worker.py")


@pytest.mark.integration
def test_boosting_on_four_simulated_devices_matches_one(tmp_path):
    """Boosting stages and the rho SGD on a 4-device mesh (batches sharded) give the params of
    the single-device run (one subprocess with 4 simulated devices runs both)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COORDINATOR")}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    out = tmp_path / "params.npz"
    proc = subprocess.run(
        [sys.executable, WORKER, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        one = {k[4:]: f[k] for k in f.files if k.startswith("one_")}
        four = {k[5:]: f[k] for k in f.files if k.startswith("four_")}
    assert one.keys() == four.keys() and len(one) > 4
    assert 0.0 < float(one["rho"]) < 1.0
    for k in one:
        np.testing.assert_allclose(one[k], four[k], atol=2e-5, err_msg=k)


def test_boosting_resumes_stage_by_stage_from_run_checkpoints(tmp_path):
    """Inside a run every stage and every rho fit checkpoints under its own tags: a second run
    into the same directory restores finished stages without training, retrains a stage whose
    checkpoints are gone, and ends with the same params and weights; no (tags, step) record
    is duplicated in metrics.jsonl."""
    train, val, _ = _toy(n=(512, 256, 10))
    gbnf = GBNF(component_flow("realnvp", 2, 1, (8,)), 3, alternate=True)
    kw = dict(
        key=jax.random.PRNGKey(0),
        steps=40,
        batch_size=64,
        val_data=val,
        rho_method="sgd",
        rho_steps=20,
        tags={"model": "gbnf"},
    )
    with Run(str(tmp_path / "run"), quiet=True) as run:
        p1, i1 = boost_density(gbnf, train, run=run, **kw)
        ckpt_dir = run.checkpoint_dir
    names = sorted(os.listdir(ckpt_dir))
    assert sum("-rho" in n for n in names) == 2 and len(names) == 5, names
    for name in names:  # "kill" the run during the third stage
        if "component=2" in name:
            shutil.rmtree(os.path.join(ckpt_dir, name))
    with Run(str(tmp_path / "run"), quiet=True) as run:
        p2, i2 = boost_density(gbnf, train, run=run, **kw)
        records = run.read_metrics()
    with open(os.path.join(str(tmp_path / "run"), "log.txt")) as f:
        resumed = [line for line in f if "resumed from checkpoint at step 40" in line]
    stages = [f"component={c},phase=boost]" for c in range(3)]
    assert [any(s in line for line in resumed) for s in stages] == [True, True, False]
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert [s["rho"] for s in i1["stages"]] == pytest.approx([s["rho"] for s in i2["stages"]])
    keys = [(json.dumps(r.get("tags"), sort_keys=True), r["step"]) for r in records]
    assert len(keys) == len(set(keys)) and len(keys) > 0


def test_a_component_with_weight_zero_is_out_of_the_mixture():
    """Weight 0 (from ``set_weights`` or from ``rho = 0`` / ``rho = 1``) contributes nothing,
    even at a point where that component's log-density is 1,000 nats above the others' (a
    floor of log 1e-30 = -69 nats let it dominate: overfitted tabular flows differ by more)."""
    gbnf = GBNF(component_flow("realnvp", 2, 1, (8,)), 3)
    params = gbnf.set_component_weight(gbnf.init(jax.random.PRNGKey(0)), 0, 1.0)
    params = gbnf.set_component_weight(params, 1, 0.5)
    params = gbnf.set_component_weight(params, 2, 0.0)  # rho = 0: weight 0
    lp = jnp.array([[-1500.0], [-1000.0], [0.0]])  # component 2 far above the others
    mask, has = W.others(params)
    expected = np.logaddexp(np.log(0.5) - 1500.0, np.log(0.5) - 1000.0)
    np.testing.assert_allclose(W.combine(params, lp, mask, has), [expected], rtol=1e-6)
    first_only = gbnf.set_weights(params, [1.0, 0.0, 0.0])  # the "first component" read-out
    np.testing.assert_allclose(W.combine(first_only, lp, mask, has), [-1500.0], rtol=1e-6)
    assert np.all(np.isfinite(first_only["log_weights"]))  # the engine's state stays finite
    np.testing.assert_array_equal(gbnf.weights(first_only), [1.0, 0.0, 0.0])


def test_draw_indices_follows_the_weights_and_never_draws_a_zero_weight():
    p = np.array([0.5, 0.0, 0.3, 0.2])
    log_w = jnp.asarray(np.where(p > 0, np.log(np.maximum(p, 1e-300)), W.ZERO_LOG_WEIGHT))
    n = 200_000
    idx = np.asarray(W.draw_indices(jax.random.PRNGKey(0), log_w + 3.0, n))  # unnormalised
    freq = np.bincount(idx, minlength=4) / n
    assert freq[1] == 0.0
    np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(0.25 / n))

"""Probabilistic super-resolution (chapter 6): teachers, PSR flows, students, metrics, notebook."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.flows import Flow
from flowjax_thesis.grid import log_normalizer_grid
from flowjax_thesis.models.psr import (
    DropoutStudent,
    GPStudent,
    JointPSR,
    bin_centres,
    dequantize,
    downsample_nearest,
    emd,
    features,
    image_nll,
    image_psr_flow,
    psnr,
    psr_optimizer,
    psr_scale,
    ridge_norm,
    rmse,
    train_psr,
    upsample_bicubic,
    upsample_nearest,
    vector_psr_flow,
)
from flowjax_thesis.models.teachers import (
    TEACHERS,
    bin_log_mass,
    conditional_log_prob,
    get_teacher,
    quantize,
)
from flowjax_thesis.train import gradient_transition

# -- teachers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_teacher_integrates_to_one(name):
    t = get_teacher(name)
    log_z = float(log_normalizer_grid(t.log_prob, t.lim + 1.5, 600))
    assert abs(log_z) < 2e-3


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_teacher_samples_match_log_density(name):
    """Cell probabilities from the density (fine grid) match sample frequencies, and the
    sample mean of -log p matches the grid entropy."""
    t = get_teacher(name)
    n = 100_000
    y = np.asarray(t.sample(jax.random.PRNGKey(1), n))
    lim, cells, sub = t.lim, 6, 60
    edges = np.linspace(-lim, lim, cells + 1)
    counts, _, _ = np.histogram2d(y[:, 0], y[:, 1], bins=[edges, edges])
    h = 2 * lim / (cells * sub)
    c = -lim + (np.arange(cells * sub) + 0.5) * h
    g1, g2 = np.meshgrid(c, c, indexing="ij")
    logp = np.asarray(t.log_prob(jnp.stack([g1, g2], -1)), np.float64)
    p = np.exp(logp) * h * h
    probs = p.reshape(cells, sub, cells, sub).sum((1, 3))
    assert np.max(np.abs(counts / n - probs)) < 6e-3
    entropy = -np.sum(np.where(p > 0, p * logp, 0.0))
    lp = np.asarray(t.log_prob(jnp.asarray(y)))
    assert np.all(np.isfinite(lp))
    assert abs(-lp.mean() - entropy) < 0.03


def test_conditional_teacher_density_is_normalised_on_its_strip():
    t = get_teacher("two_moons")
    bw, centre = 1.0, 0.5
    a = np.linspace(0.0, 1.0, 401)[:-1] + 1 / 800
    b = np.linspace(-t.lim, t.lim, 801)[:-1] + t.lim / 800
    ga, gb = np.meshgrid(a, b, indexing="ij")
    y = np.stack([ga.ravel(), gb.ravel()], -1)
    lp = conditional_log_prob(t, y, np.full(len(y), centre), bw)
    mass = np.exp(lp).sum() * (1 / 400) * (2 * t.lim / 800)
    assert abs(mass - 1) < 5e-3
    # outside the bin of x the conditional density is zero
    assert conditional_log_prob(t, np.array([[1.5, 0.0]]), np.array([centre]), bw)[0] == -np.inf
    # bin mass matches the sample frequency
    ys = np.asarray(t.sample(jax.random.PRNGKey(0), 100_000))
    freq = np.mean(np.asarray(quantize(ys[:, 0], bw)) == centre)
    assert abs(np.exp(bin_log_mass(t, [centre], bw)[0]) - freq) < 5e-3


def test_quantize():
    np.testing.assert_allclose(
        quantize(jnp.array([-0.1, 0.0, 0.99, 2.3]), 1.0), [-0.5, 0.5, 0.5, 2.5]
    )
    with pytest.raises(ValueError, match="positive"):
        quantize(jnp.zeros(2), 0.0)


# -- vector PSR flow --------------------------------------------------------------------------


def _perturbed(params, scale, seed=1):
    """Parameters moved off the identity initialisation, so no layer is trivial."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, leaves)


def _vector_model():
    flow = vector_psr_flow(2, 1, num_layers=2, hidden=(16,), features=4)
    return flow, _perturbed(flow.init(jax.random.PRNGKey(0)), 0.1)


def test_vector_psr_is_a_flow_with_the_encoder_in_its_params():
    flow, params = _vector_model()
    assert isinstance(flow, Flow) and flow.context_shape == (1,)
    # the encoder is trained with the flow: the density depends on its parameters
    y, x = jnp.array([[0.3, -0.2]]), jnp.array([[0.5]])
    moved = jax.tree.map(lambda a: a, params)
    moved[0]["encoder"] = _perturbed(params[0]["encoder"], 0.5, seed=7)
    assert abs(float(flow.log_prob(moved, y, x)[0] - flow.log_prob(params, y, x)[0])) > 1e-4


def test_vector_psr_density_is_normalised_and_matches_samples():
    flow, params = _vector_model()
    # a shared context (no batch dims) is broadcast over the grid
    lp = lambda y: flow.log_prob(params, y, jnp.array([0.5]))
    assert abs(float(log_normalizer_grid(lp, 12.0, 500))) < 5e-3
    xs = jnp.full((64, 1), 0.5)
    y, log_q = flow.sample_and_log_prob(params, jax.random.PRNGKey(2), context=xs)
    assert y.shape == (64, 2)  # one draw per context row
    np.testing.assert_allclose(log_q, flow.log_prob(params, y, xs), rtol=1e-4, atol=1e-4)
    # the context changes the density
    other = flow.log_prob(params, y, jnp.full((64, 1), -1.5))
    assert float(jnp.max(jnp.abs(other - log_q))) > 1e-3
    # n draws for one shared context
    assert flow.sample(params, jax.random.PRNGKey(3), 5, context=jnp.array([0.5])).shape == (5, 2)


def test_vector_psr_temperature():
    flow, params = _vector_model()
    xs = jnp.full((5, 1), 0.5)
    a = flow.sample(params, jax.random.PRNGKey(0), context=xs, temperature=0.0)
    b = flow.sample(params, jax.random.PRNGKey(1), context=xs, temperature=0.0)
    np.testing.assert_allclose(a, b)
    # T = 0 is the image of the base mean, f(0; x), whatever the key
    z0 = flow.bijector(params, xs).forward(jnp.zeros((5, 2)))
    np.testing.assert_allclose(a, z0, atol=1e-6)
    # at T = 0.5 the draw is f(0.5 z; x) for the z of the T = 1 draw with the same key
    key = jax.random.PRNGKey(4)
    y1 = flow.sample(params, key, context=xs)
    y_half = flow.sample(params, key, context=xs, temperature=0.5)
    z = flow.bijector(params, xs).inverse(y1)
    np.testing.assert_allclose(y_half, flow.bijector(params, xs).forward(0.5 * z), atol=1e-4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, p: f.log_prob(p, jnp.zeros((4, 2)), jnp.zeros((4, 3))), r"context of shape"),
        (lambda f, p: f.log_prob(p, jnp.zeros((4, 2)), jnp.zeros((5, 1))), r"batch shape"),
        (lambda f, p: f.log_prob(p, jnp.zeros((4, 3)), jnp.zeros((4, 1))), r"data of shape"),
        (lambda f, p: f.sample(p, jax.random.PRNGKey(0), context=jnp.zeros((4, 2))), r"context"),
        (lambda f, p: vector_psr_flow(1, 1), r"event_dim >= 2"),
        (lambda f, p: vector_psr_flow(2, 0), r"context_dim must be >= 1"),
        (lambda f, p: vector_psr_flow(2, 1, num_layers=0), r"num_layers must be >= 1"),
    ],
    ids=["context-width", "batch", "data-width", "sample-context", "event", "context", "layers"],
)
def test_vector_psr_bad_inputs(call, match):
    flow, params = _vector_model()
    with pytest.raises(ValueError, match=match):
        call(flow, params)


# -- image PSR flow ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_model():
    flow = image_psr_flow((8, 8, 1), scale=2, num_levels=2, steps_per_scale=1, conv_width=8,
                          features=4, encoder_features=8, growth=4)  # fmt: skip
    params = _perturbed(jax.jit(flow.init)(jax.random.PRNGKey(0)), 0.05)
    y_int = jax.random.randint(jax.random.PRNGKey(2), (3, 8, 8, 1), 0, 17)
    y = dequantize(jax.random.PRNGKey(3), y_int, 17)
    x = bin_centres(downsample_nearest(y_int, 2), 17)
    return flow, params, y, x


@pytest.mark.integration  # a whole conv/flow model: compile-dominated
def test_image_psr_log_det_matches_jacobian(image_model):
    flow, params, y, x = image_model
    bij = flow.bijector(params, x[:1])
    z, ld = jax.jit(bij.inverse_and_log_det)(y[:1])
    inverse = lambda v: bij.inverse(v.reshape(1, 8, 8, 1)).reshape(-1)
    jac = jax.jit(jax.jacfwd(inverse))(y[:1].reshape(-1))
    np.testing.assert_allclose(np.linalg.slogdet(np.asarray(jac))[1], ld[0], rtol=1e-4, atol=1e-3)
    back, ld_f = jax.jit(bij.forward_and_log_det)(z)
    np.testing.assert_allclose(back, y[:1], atol=1e-5)
    np.testing.assert_allclose(ld_f, -ld, rtol=1e-5, atol=1e-4)


@pytest.mark.integration  # a whole conv/flow model: compile-dominated
def test_image_psr_sample_log_prob_and_context(image_model):
    flow, params, y, x = image_model
    assert psr_scale(flow) == 2 and flow.context_shape == (4, 4, 1)
    sample_and_log_prob = jax.jit(lambda p, k, c: flow.sample_and_log_prob(p, k, context=c))
    log_prob = jax.jit(flow.log_prob)
    s, log_q = sample_and_log_prob(params, jax.random.PRNGKey(4), x)
    assert s.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(log_q, log_prob(params, s, x), rtol=1e-4, atol=1e-3)
    other = log_prob(params, y, jnp.flip(x, 0))
    assert float(jnp.max(jnp.abs(other - log_prob(params, y, x)))) > 1e-4
    coldest = jax.jit(lambda p, k, c: flow.sample(p, k, context=c, temperature=0.0))
    a = coldest(params, jax.random.PRNGKey(0), x)
    b = coldest(params, jax.random.PRNGKey(1), x)
    np.testing.assert_allclose(a, b)
    # the per-scale contexts have the shapes of the latent at each scale
    shapes = [c.shape for c in features(flow, params, x)]
    assert shapes == [(3, 8, 8, 4), (3, 4, 4, 4), (3, 2, 2, 4)]
    # n draws for one LR image
    assert flow.sample(params, jax.random.PRNGKey(5), 2, context=x[0]).shape == (2, 8, 8, 1)


@pytest.mark.integration  # a whole conv/flow model: compile-dominated
def test_image_nll_is_the_dequantised_log_likelihood(image_model):
    flow, params, y, x = image_model
    y_int = jnp.floor(y * 17).astype(jnp.int32)
    x_int = y_int[:, ::2, ::2]
    key = jax.random.PRNGKey(9)
    expected = -jnp.mean(flow.log_prob(params, dequantize(key, y_int, 17), bin_centres(x_int, 17)))
    np.testing.assert_allclose(image_nll(flow, 17)(params, (y_int, x_int), key), expected)
    u = dequantize(key, y_int, 17) * 17 - y_int
    assert float(u.min()) >= 0 and float(u.max()) < 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f, p, y, x: f.log_prob(p, y, jnp.zeros((3, 2, 2, 1))), r"context of shape"),
        (lambda f, p, y, x: f.log_prob(p, jnp.zeros((3, 6, 6, 1)), x), r"data of shape"),
        (lambda f, p, y, x: f.log_prob(p, y, x[:2]), r"batch shape"),
        (lambda f, p, y, x: f.sample(p, jax.random.PRNGKey(0), context=y), r"context of shape"),
        (lambda f, p, y, x: image_psr_flow((12, 12, 1), scale=8), r"divisible by the scale"),
        (lambda f, p, y, x: image_psr_flow((9, 9, 1), scale=3), r"power of 2"),
        (lambda f, p, y, x: image_psr_flow((8, 8), scale=2), r"\(H, W, C\)"),
        (lambda f, p, y, x: image_psr_flow((12, 12, 1), num_levels=3), r"divisible by 8"),
        (lambda f, p, y, x: downsample_nearest(jnp.zeros((1, 6, 6, 1)), 4), r"not divisible"),
    ],
    ids=["lr-shape", "hr-shape", "batch", "sample-lr", "scale-div", "scale-pow2", "rank",
         "levels", "downsample"],
)  # fmt: skip
def test_image_psr_bad_inputs(call, match):
    """Shapes are checked before any parameter is used: abstract parameters (no compile)."""
    flow = image_psr_flow((8, 8, 1), scale=2, num_levels=2, steps_per_scale=1, conv_width=8,
                          features=4, encoder_features=8, growth=4)  # fmt: skip
    params = jax.eval_shape(flow.init, jax.random.PRNGKey(0))
    y, x = jnp.zeros((3, 8, 8, 1)), jnp.zeros((3, 4, 4, 1))
    with pytest.raises(ValueError, match=match):
        call(flow, params, y, x)


@pytest.mark.integration
def test_image_psr_training_lowers_loss():
    from flowjax_thesis.data.images import load_digits

    data = load_digits()
    nb = data.num_bins
    flow = image_psr_flow((8, 8, 1), scale=2, num_levels=1, steps_per_scale=1, conv_width=8,
                          features=4, encoder_features=8, growth=4)  # fmt: skip
    y_int = data.train[:256]
    x_int = y_int[:, ::2, ::2]
    params = flow.init(jax.random.PRNGKey(0))
    params = flow.data_init(
        params, dequantize(jax.random.PRNGKey(1), y_int, nb), bin_centres(x_int, nb)
    )
    loss = image_nll(flow, nb)
    key = jax.random.PRNGKey(2)
    before = float(loss(params, (y_int, x_int), key))
    transition = gradient_transition(loss, psr_optimizer(3e-3, 60))
    result = train_psr(
        transition, params, (y_int, x_int), key=key, steps=60, batch_size=64, mode="step"
    )
    after = float(loss(result.state.params, (y_int, x_int), key))
    assert np.isfinite(after) and after < before - 5.0


@pytest.mark.integration  # a whole conv/flow model: compile-dominated
def test_joint_psr_log_prob_and_sampling(image_model):
    flow, _, y, x = image_model
    joint = JointPSR(flow, 17, ridge=1e-3, prior_steps=1, prior_width=8)
    params = jax.jit(joint.init)(jax.random.PRNGKey(0))
    params = jax.jit(joint.data_init)(params, y, x)
    # each side jitted on its own (one compile each; float32 sums may differ in the last bits)
    total, cond, prior = jax.jit(joint.log_prob)(params, y, x)
    np.testing.assert_allclose(total, cond + prior, rtol=1e-6)
    direct = jax.jit(flow.log_prob)(params["conditional"], y, x)
    np.testing.assert_allclose(cond, direct, rtol=1e-5)
    np.testing.assert_allclose(
        prior, jax.jit(joint.prior_flow.log_prob)(params["prior"], x), rtol=1e-5
    )
    y_int = jnp.floor(y * 17).astype(jnp.int32)
    x_int = y_int[:, ::2, ::2]
    key = jax.random.PRNGKey(0)
    with_ridge = jax.jit(joint.loss)(params, (y_int, x_int), key)
    no_ridge = jax.jit(JointPSR(flow, 17, ridge=0.0, prior_steps=1, prior_width=8).loss)(
        params, (y_int, x_int), key
    )
    np.testing.assert_allclose(with_ridge - no_ridge, 1e-3 * ridge_norm(params), rtol=1e-4)
    sample = jax.jit(lambda p, k, pt, t: joint.sample(p, k, 4, prior_temperature=pt, temperature=t))
    xs, ys = sample(params, jax.random.PRNGKey(1), 0.5, 0.8)
    assert xs.shape == (4, 4, 4, 1) and ys.shape == (4, 8, 8, 1)
    assert np.all(np.isfinite(np.asarray(ys)))
    # temperature 0 for both: the images of the base means, deterministic
    coldest = jax.jit(lambda p, k: joint.sample(p, k, 2, prior_temperature=0.0, temperature=0.0))
    x0, y0 = coldest(params, jax.random.PRNGKey(2))
    e = jnp.zeros((2,) + joint.prior_base_shape)
    z = jnp.zeros((2, 8, 8, 1))
    x0_, y0_ = jax.jit(joint.sample_from_latents)(params, e, z)
    np.testing.assert_allclose(y0, y0_, atol=1e-5)
    np.testing.assert_allclose(y0_[0], y0_[1])
    with pytest.raises(ValueError, match="prior base draws"):
        joint.sample_from_latents(params, jnp.zeros((2, 3)), z)


# -- students and metrics ---------------------------------------------------------------------


def test_emd_pot_and_assignment_agree():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 2))
    b = rng.normal(size=(60, 2)) + np.array([3.0, 0.0])
    from scipy.optimize import linear_sum_assignment

    cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
    r, c = linear_sum_assignment(cost)
    d, solver = emd(a, b)
    assert solver in ("pot", "scipy-assignment")
    np.testing.assert_allclose(d, cost[r, c].mean(), rtol=1e-6)
    assert emd(a, a)[0] < 1e-9
    # a pure shift moves every point by 3 at least on average
    assert 2.0 < d < 4.0


def test_psnr_rmse_and_upsampling():
    y = np.zeros((2, 4, 4, 1))
    y_hat = y + 0.1
    np.testing.assert_allclose(psnr(y, y_hat), 20.0, rtol=1e-6)
    assert abs(rmse(y, y_hat) - 0.1) < 1e-9
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    up = upsample_nearest(x, 2)
    np.testing.assert_allclose(downsample_nearest(up, 2), x)
    assert upsample_bicubic(x, 2).shape == (1, 4, 4, 1)


def test_ssim_identical_images():
    pytest.importorskip("skimage")
    from flowjax_thesis.models.psr import ssim

    y = np.random.default_rng(0).uniform(size=(2, 8, 8, 1))
    np.testing.assert_allclose(ssim(y, y), 1.0, atol=1e-9)
    assert np.all(ssim(y, 1 - y) < 0.5)


@pytest.mark.integration  # trains a model to a quality threshold
def test_gp_and_dropout_students_fit_a_line():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(200, 1)).astype(np.float32)
    y = np.concatenate([2 * x, -x], 1) + 0.05 * rng.normal(size=(200, 2)).astype(np.float32)
    gp = GPStudent().fit(x, y)
    xt = np.array([[0.5], [-1.0]], np.float32)
    np.testing.assert_allclose(gp.predict(xt), [[1.0, -0.5], [-2.0, 1.0]], atol=0.1)
    assert gp.sample(rng, xt).shape == (2, 2)

    drop = DropoutStudent(2, (32, 32), 0.1)
    transition = gradient_transition(drop.loss, psr_optimizer(1e-2, 600))
    params = train_psr(
        transition,
        drop.init(jax.random.PRNGKey(0), 1),
        (y, x),
        key=jax.random.PRNGKey(1),
        steps=600,
        batch_size=64,
    ).state.params
    pred = np.asarray(drop.predict(params, jax.random.PRNGKey(2), jnp.asarray(xt)))
    np.testing.assert_allclose(pred, [[1.0, -0.5], [-2.0, 1.0]], atol=0.35)
    # MC dropout passes differ (the network is stochastic at prediction time)
    m, _ = drop.passes(params, jax.random.PRNGKey(3), jnp.asarray(xt), 4)
    assert float(jnp.std(m, 0).mean()) > 0


def test_dropout_student_log_prob_is_the_gaussian_predictive():
    from scipy.stats import norm

    drop = DropoutStudent(2, (8,), 0.0)  # no dropout: every pass is the same Gaussian
    params = _perturbed(drop.init(jax.random.PRNGKey(0), 1), 0.5)
    x = jnp.array([[0.3], [-1.2], [2.0]])
    y = jnp.array([[0.1, 0.4], [-0.5, 2.0], [1.0, -1.0]])
    mean, log_var = drop.net.apply(params, x, deterministic=True)
    expected = norm.logpdf(np.asarray(y), np.asarray(mean), np.exp(0.5 * np.asarray(log_var)))
    lp = drop.log_prob(params, jax.random.PRNGKey(1), y, x, num_passes=3)
    np.testing.assert_allclose(lp, expected.sum(-1), rtol=1e-5, atol=1e-5)
    loss = drop.loss(params, (y, x), jax.random.PRNGKey(2))
    np.testing.assert_allclose(loss, -expected.sum(-1).mean(), rtol=1e-5)


# -- the student-teacher claim, trained (slow) ------------------------------------------------


@pytest.mark.slow
def test_psr_student_beats_gp_and_dropout_on_two_moons():
    from flowjax_thesis.experiments.psr_vectors import (
        PsrStudentTeacherSettings,
        run_student_teacher_density,
    )

    cfg = PsrStudentTeacherSettings(
        n_train=20000, n_eval=1000, steps=3000, batch_size=256, lr=2e-3, flow_steps=6,
        hidden=(64, 64), features=16, gp_n=500, matern_nu=1.5, dropout_rate=0.1,
        bin_width=1.0, temperature=0.8, seed=0,
    )  # fmt: skip
    res = run_student_teacher_density("two_moons", cfg, jax.random.PRNGKey(0))
    m = res["metrics"]
    assert m["PSR NF tau=0.8"]["emd"] < min(m["GP"]["emd"], m["Dropout"]["emd"])
    assert res["corr_teacher_samples"] > 0.7


# -- data -------------------------------------------------------------------------------------


def test_psr_images_use_the_package_container_and_fall_back_offline(monkeypatch):
    from flowjax_thesis.data.images import GreyImages
    from flowjax_thesis.models import psr_data

    data = psr_data.load_images("digits")
    assert isinstance(data, GreyImages) and data.num_bins == 17
    assert data.train.shape[1:] == (8, 8, 1) and int(data.train.max()) <= 16

    def unavailable(name, max_examples):
        raise ImportError("no tensorflow-datasets")

    monkeypatch.setattr(psr_data, "_load_tfds", unavailable)
    svhn = psr_data.load_images("svhn")
    assert "requested 'svhn' via TFDS was not available: ImportError" in svhn.source
    np.testing.assert_array_equal(svhn.test, data.test)
    with pytest.raises(ValueError, match="unknown image data set 'nope'"):
        psr_data.load_images("nope")


# -- data parallelism -------------------------------------------------------------------------


@pytest.mark.integration
def test_four_simulated_devices_match_one_device(tmp_path):
    """Every kind of chapter-6 training (vector flow, dropout student, image flow in
    ``mode="step"``) gives the same parameters on a 1-device and a 4-device mesh (batches
    sharded), in a subprocess with 4 simulated CPU devices."""
    import os
    import subprocess
    import sys

    worker = os.path.join(os.path.dirname(__file__), "psr_worker.py")
    out = tmp_path / "params.npz"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, worker, str(out)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        one = {k[len("devices1_") :]: f[k] for k in f.files if k.startswith("devices1_")}
        four = {k[len("devices4_") :]: f[k] for k in f.files if k.startswith("devices4_")}
        start = {k[len("start_") :]: f[k] for k in f.files if k.startswith("start_")}
    assert one.keys() == four.keys() == start.keys() and len(one) > 10
    for k in one:
        np.testing.assert_allclose(one[k], four[k], atol=2e-5, err_msg=k)
    # the trainings moved every model's parameters (so the agreement is not of untouched inits)
    for model in ("0", "1", "2"):
        moved = [np.abs(one[k] - start[k]).max() for k in one if k.split("_")[0] == model]
        assert max(moved) > 1e-4, model

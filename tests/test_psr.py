"""Probabilistic super-resolution (chapter 6): teachers, PSR flows, students, metrics, notebook."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_thesis.grid import log_normalizer_grid
from flowjax_thesis.models.psr import (
    DropoutStudent,
    GPStudent,
    ImagePSR,
    JointPSR,
    VectorPSR,
    downsample_nearest,
    emd,
    psnr,
    rmse,
    upsample_bicubic,
    upsample_nearest,
)
from flowjax_thesis.models.teachers import (
    TEACHERS,
    bin_log_mass,
    conditional_log_prob,
    get_teacher,
    quantize,
)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


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


def _vector_model():
    model = VectorPSR(2, 1, num_steps=2, hidden=(16,), features=4)
    params = model.init(jax.random.PRNGKey(0))
    # perturb so that no layer is the identity
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    leaves = [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return model, jax.tree.unflatten(tree, leaves)


def test_vector_psr_density_is_normalised_and_matches_samples():
    model, params = _vector_model()
    x = jnp.array([0.5])
    lp = lambda y: model.log_prob(params, y, jnp.broadcast_to(x, y.shape[:-1] + (1,)))
    assert abs(float(log_normalizer_grid(lp, 12.0, 500))) < 5e-3
    xs = jnp.full((64, 1), 0.5)
    y, log_q = model.sample_and_log_prob(params, jax.random.PRNGKey(2), xs, 1.0)
    np.testing.assert_allclose(log_q, model.log_prob(params, y, xs), rtol=1e-4, atol=1e-4)
    # the context changes the density
    other = model.log_prob(params, y, jnp.full((64, 1), -1.5))
    assert float(jnp.max(jnp.abs(other - log_q))) > 1e-3


def test_vector_psr_temperature_zero_is_deterministic():
    model, params = _vector_model()
    xs = jnp.full((5, 1), 0.5)
    a = model.sample(params, jax.random.PRNGKey(0), xs, 0.0)
    b = model.sample(params, jax.random.PRNGKey(1), xs, 0.0)
    np.testing.assert_allclose(a, b)


def test_vector_psr_bad_context():
    model, params = _vector_model()
    with pytest.raises(ValueError, match="context x of shape"):
        model.log_prob(params, jnp.zeros((4, 2)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="same batch shape"):
        model.log_prob(params, jnp.zeros((4, 2)), jnp.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"shape \(n, 1\)"):
        model.sample(params, jax.random.PRNGKey(0), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="event_dim"):
        VectorPSR(1, 1)


# -- image PSR flow ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_model():
    model = ImagePSR((8, 8, 1), scale=2, num_levels=2, steps_per_scale=1, conv_width=8,
                     features=4, encoder_features=8, growth=4, num_bins=17)  # fmt: skip
    params = model.init(jax.random.PRNGKey(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    leaves = [a + 0.05 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    params = jax.tree.unflatten(tree, leaves)
    y_int = jax.random.randint(jax.random.PRNGKey(2), (3, 8, 8, 1), 0, 17)
    y = model.dequantize(jax.random.PRNGKey(3), y_int)
    x = model.to_unit(downsample_nearest(y_int, 2))
    return model, params, y, x


def test_image_psr_log_det_matches_jacobian(image_model):
    model, params, y, x = image_model
    bij = model.bijector(params, x[:1])
    z, ld = bij.inverse_and_log_det(y[:1])
    jac = jax.jacfwd(lambda v: bij.inverse(v.reshape(1, 8, 8, 1)).reshape(-1))(y[:1].reshape(-1))
    np.testing.assert_allclose(np.linalg.slogdet(np.asarray(jac))[1], ld[0], rtol=1e-4, atol=1e-3)
    back, ld_f = bij.forward_and_log_det(z)
    np.testing.assert_allclose(back, y[:1], atol=1e-5)
    np.testing.assert_allclose(ld_f, -ld, rtol=1e-5, atol=1e-4)


def test_image_psr_sample_log_prob_and_context(image_model):
    model, params, y, x = image_model
    s, log_q = model.sample_and_log_prob(params, jax.random.PRNGKey(4), x, 1.0)
    assert s.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(log_q, model.log_prob(params, s, x), rtol=1e-4, atol=1e-3)
    other = model.log_prob(params, y, jnp.flip(x, 0))
    assert float(jnp.max(jnp.abs(other - model.log_prob(params, y, x)))) > 1e-4
    a = model.sample(params, jax.random.PRNGKey(0), x, 0.0)
    b = model.sample(params, jax.random.PRNGKey(1), x, 0.0)
    np.testing.assert_allclose(a, b)
    # the per-scale contexts have the shapes of the latent at each scale
    shapes = [c.shape for c in model.contexts(params, x)]
    assert shapes == [(3, 8, 8, 4), (3, 4, 4, 4), (3, 2, 2, 4)]


def test_image_psr_bad_inputs(image_model):
    model, params, y, x = image_model
    with pytest.raises(ValueError, match="low-resolution x of shape"):
        model.log_prob(params, y, jnp.zeros((3, 2, 2, 1)))  # a 4x LR for a 2x model
    with pytest.raises(ValueError, match="high-resolution y of shape"):
        model.log_prob(params, jnp.zeros((3, 6, 6, 1)), x)
    with pytest.raises(ValueError, match="same batch shape"):
        model.log_prob(params, y, x[:2])
    with pytest.raises(ValueError, match="low-resolution"):
        model.sample(params, jax.random.PRNGKey(0), jnp.zeros((2, 3, 3, 1)))
    with pytest.raises(ValueError, match="divisible by the scale factor"):
        ImagePSR((12, 12, 1), scale=8)
    with pytest.raises(ValueError, match="power of 2"):
        ImagePSR((9, 9, 1), scale=3)
    with pytest.raises(ValueError, match="not divisible"):
        downsample_nearest(jnp.zeros((1, 6, 6, 1)), 4)


def test_image_psr_training_lowers_loss():
    from flowjax_thesis.experiments.psr_vectors import train_params
    from flowjax_thesis.models.psr_data import load_digits_images

    data = load_digits_images()
    model = ImagePSR((8, 8, 1), scale=2, num_levels=1, steps_per_scale=1, conv_width=8,
                     features=4, encoder_features=8, growth=4, num_bins=data.num_bins)  # fmt: skip
    y_int = data.train[:256]
    x_int = y_int[:, ::2, ::2]
    params = model.init(jax.random.PRNGKey(0))
    params = model.data_init(
        params, model.dequantize(jax.random.PRNGKey(1), y_int), model.to_unit(x_int)
    )
    key = jax.random.PRNGKey(2)
    before = float(model.loss(params, y_int, x_int, key))
    params, _ = train_params(
        lambda p, b, k: model.loss(p, b[0], b[1], k),
        params,
        (y_int, x_int),
        key=key,
        steps=60,
        batch_size=64,
        lr=3e-3,
        scan=False,
    )
    after = float(model.loss(params, y_int, x_int, key))
    assert np.isfinite(after) and after < before - 5.0


def test_joint_psr_log_prob_and_sampling(image_model):
    model, _, y, x = image_model
    joint = JointPSR(model, ridge=1e-3, prior_steps=1, prior_width=8)
    params = joint.init(jax.random.PRNGKey(0))
    params = joint.data_init(params, y, x)
    total, cond, prior = joint.log_prob(params, y, x)
    np.testing.assert_allclose(total, cond + prior, rtol=1e-6)
    np.testing.assert_allclose(cond, model.log_prob(params["conditional"], y, x), rtol=1e-6)
    y_int = jnp.round(y * 17 - 0.5).astype(jnp.int32)
    x_int = y_int[:, ::2, ::2]
    with_ridge = joint.loss(params, y_int, x_int, jax.random.PRNGKey(0))
    no_ridge = JointPSR(model, ridge=0.0, prior_steps=1, prior_width=8).loss(
        params, y_int, x_int, jax.random.PRNGKey(0)
    )
    assert float(with_ridge) > float(no_ridge)
    xs, ys = joint.sample(params, jax.random.PRNGKey(1), 4, prior_temperature=0.5, temperature=0.8)
    assert xs.shape == (4, 4, 4, 1) and ys.shape == (4, 8, 8, 1)
    assert np.all(np.isfinite(np.asarray(ys)))
    # temperature 0 for both: deterministic
    e = jnp.zeros((2,) + joint.prior_base_shape)
    z = jnp.zeros((2, 8, 8, 1))
    x0, y0 = joint.sample_from_latents(params, e, z)
    np.testing.assert_allclose(y0[0], y0[1])


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


def test_gp_and_dropout_students_fit_a_line():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(200, 1)).astype(np.float32)
    y = np.concatenate([2 * x, -x], 1) + 0.05 * rng.normal(size=(200, 2)).astype(np.float32)
    gp = GPStudent().fit(x, y)
    xt = np.array([[0.5], [-1.0]], np.float32)
    np.testing.assert_allclose(gp.predict(xt), [[1.0, -0.5], [-2.0, 1.0]], atol=0.1)
    assert gp.sample(rng, xt).shape == (2, 2)

    from flowjax_thesis.experiments.psr_vectors import train_params

    drop = DropoutStudent(2, (32, 32), 0.1)
    params = drop.init(jax.random.PRNGKey(0), 1)
    params, _ = train_params(
        drop.loss, params, (y, x), key=jax.random.PRNGKey(1), steps=600, batch_size=64, lr=1e-2
    )
    pred = np.asarray(drop.predict(params, jax.random.PRNGKey(2), jnp.asarray(xt)))
    np.testing.assert_allclose(pred, [[1.0, -0.5], [-2.0, 1.0]], atol=0.35)
    # MC dropout passes differ (the network is stochastic at prediction time)
    m, _ = drop.passes(params, jax.random.PRNGKey(3), jnp.asarray(xt), 4)
    assert float(jnp.std(m, 0).mean()) > 0


# -- the student-teacher claim, trained (slow) ------------------------------------------------


@pytest.mark.slow
def test_psr_student_beats_gp_and_dropout_on_two_moons():
    from flowjax_thesis.experiments.psr_vectors import run_student_teacher_density

    cfg = dict(
        n_train=20000, n_eval=1000, steps=3000, batch_size=256, lr=2e-3, flow_steps=6,
        hidden=[64, 64], features=16, gp_n=500, matern_nu=1.5, dropout_rate=0.1,
        bin_width=1.0, temperature=0.8, seed=0,
    )  # fmt: skip
    res = run_student_teacher_density("two_moons", cfg, jax.random.PRNGKey(0))
    m = res["metrics"]
    assert m["PSR NF tau=0.8"]["emd"] < min(m["GP"]["emd"], m["Dropout"]["emd"])
    assert res["corr_teacher_samples"] > 0.7


# -- notebook ---------------------------------------------------------------------------------


def test_super_resolution_notebook_runs(monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("NOTEBOOK_STEPS", "40")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / "05_super_resolution.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    for text in ("teacher log Z", "EMD", "PSNR", "bits/dim", "data:"):
        assert text in outputs

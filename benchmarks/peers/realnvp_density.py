"""RealNVP density-estimation training steps, written with peer libraries.

Model: ``n_layers`` affine coupling layers that alternate which half of the features
conditions the other (the first ``dim // 2`` features, then the rest), each conditioner
an MLP with two hidden ReLU layers of width ``hidden``; standard normal base; maximum
likelihood (mean negative log-likelihood) on batches of ``batch`` points drawn uniformly
with replacement from a fixed, standardized data set; Adam, lr 1e-3.

Data (:func:`make_data`): for ``dim == 2`` two moons (``sklearn.datasets.make_moons``,
10,000 points, noise 0.05); otherwise a correlated Gaussian sample (20,000 points) with a
fixed random covariance. Both are standardized per feature and depend only on ``seed``.

Configurations from the issue: ``REALNVP_CONFIGS["d2"]`` (8 couplings, hidden 64) and
``REALNVP_CONFIGS["d43"]`` (5 couplings, hidden 430).

Each peer keeps its own library's idiom where the libraries differ:

* flowjax: ``flowjax.flows.coupling_flow`` (its ``Affine`` transformer with softplus
  scale; its default permutation between couplings -- a flip for d=2, a fixed random
  permutation otherwise -- in place of alternating halves), ``nn_depth=2``, frozen base,
  jitted optax step in a Python loop.
* distrax: ``distrax.MaskedCoupling`` + ``distrax.ScalarAffine`` (shift, log-scale), the
  MLP written by hand in ``jax.numpy`` (input ``dim``: distrax feeds the masked full
  vector), last layer zero-initialised, jitted optax step in a Python loop.
* zuko: ``zuko.flows.GeneralCouplingTransform`` (its monotonic affine transform) with
  explicit half masks, ``hidden_features=(hidden, hidden)``, inside ``zuko.flows.Flow``.
* normflows: ``AffineCouplingBlock`` (exp scale, channel split) with ``nets.MLP``
  (``init_zeros=True``) and ``Permute(mode="swap")`` between blocks, ``forward_kld``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.peers._common import (
    Stopwatch,
    check_steps,
    require,
    result,
    setup_torch,
    version,
)

REALNVP_CONFIGS: dict[str, dict[str, int]] = {
    "d2": {"dim": 2, "n_layers": 8, "hidden": 64},
    "d43": {"dim": 43, "n_layers": 5, "hidden": 430},
}
LR = 1e-3


def make_data(dim: int, seed: int = 0) -> np.ndarray:
    """The fixed, standardized float32 training sample for ``dim``."""
    if dim == 2:
        from sklearn.datasets import make_moons

        x, _ = make_moons(n_samples=10_000, noise=0.05, random_state=seed)
    else:
        rng = np.random.default_rng(seed)
        a = rng.normal(size=(dim, dim))
        cov = a @ a.T / dim + 0.1 * np.eye(dim)
        mean = rng.normal(size=dim)
        x = rng.multivariate_normal(mean, cov, size=20_000, method="cholesky")
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)


def half_masks(dim: int, n_layers: int) -> list[np.ndarray]:
    """Boolean masks, True = conditioning (identity) features; alternating halves."""
    first = np.arange(dim) < dim // 2
    return [first if i % 2 == 0 else ~first for i in range(n_layers)]


def _check_config(dim: int, n_layers: int, hidden: int, batch: int) -> None:
    if dim < 2:
        raise ValueError(f"dim must be >= 2 for a coupling flow, got {dim}")
    if n_layers < 1 or hidden < 1 or batch < 1:
        raise ValueError("n_layers, hidden and batch must be >= 1")


# ---------------------------------------------------------------------- JAX peers
def _time_jax_loop(
    train_step: Any, state: tuple, steps: int, warmup: int
) -> tuple[float, Stopwatch, float, float, tuple]:
    """Run ``state = train_step(*state)``; the loss is the state's last element."""
    jax = require("jax")
    first = first_loss = None
    for i in range(max(warmup, 1)):
        with Stopwatch() as sw:
            state = train_step(*state)
            state[-1].block_until_ready()
        if i == 0:
            first, first_loss = sw.seconds, float(state[-1])
    with Stopwatch() as sw:
        for _ in range(steps):
            state = train_step(*state)
        jax.block_until_ready(state)
    return first, sw, float(state[-1]), first_loss, state


def _jax_ml_step(loss_fn: Any, optimizer: Any, batch: int, n_data: int) -> Any:
    """One jitted step: draw a batch on device, value_and_grad, Adam update."""
    jax = require("jax")
    jr = require("jax.random")
    optax = require("optax")

    @jax.jit
    def train_step(params, opt_state, key, data, _loss):
        key, sub = jr.split(key)
        x = data[jr.randint(sub, (batch,), 0, n_data)]
        loss, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, key, data, loss

    return train_step


def flowjax_realnvp(
    steps: int,
    dim: int,
    n_layers: int,
    hidden: int,
    batch: int = 512,
    seed: int = 0,
    warmup: int = 5,
) -> dict[str, Any]:
    """flowjax ``coupling_flow`` (Affine transformer), jitted optax Adam step loop."""
    check_steps(steps, warmup)
    _check_config(dim, n_layers, hidden, batch)
    jax = require("jax")
    jnp = require("jax.numpy")
    jr = require("jax.random")
    eqx = require("equinox")
    optax = require("optax")
    paramax = require("paramax")
    require("flowjax")
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow

    key = jr.key(seed)
    init_key, train_key = jr.split(key)
    flow = coupling_flow(
        init_key,
        base_dist=Normal(jnp.zeros(dim)),
        flow_layers=n_layers,
        nn_width=hidden,
        nn_depth=2,
        nn_activation=jax.nn.relu,
        invert=True,  # fast log_prob (the density-estimation direction)
    )
    flow = eqx.tree_at(lambda d: d.base_dist, flow, replace_fn=paramax.non_trainable)
    params, static = eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda x: isinstance(x, paramax.NonTrainable)
    )
    optimizer = optax.adam(LR)

    def loss_fn(params, x):
        return -jnp.mean(eqx.combine(params, static).log_prob(x))

    data = jnp.asarray(make_data(dim, seed))
    step = _jax_ml_step(loss_fn, optimizer, batch, data.shape[0])
    state = (params, optimizer.init(params), train_key, data, jnp.zeros(()))
    first, seconds, final, first_loss, _ = _time_jax_loop(step, state, steps, warmup)
    return result(
        "flowjax_realnvp",
        version("flowjax"),
        steps,
        seconds,
        first,
        final,
        dim=dim,
        n_layers=n_layers,
        hidden=hidden,
        batch=batch,
        jax=version("jax"),
        first_loss=first_loss,
    )


def distrax_realnvp(
    steps: int,
    dim: int,
    n_layers: int,
    hidden: int,
    batch: int = 512,
    seed: int = 0,
    warmup: int = 5,
) -> dict[str, Any]:
    """distrax ``MaskedCoupling`` + ``ScalarAffine`` with a hand-written jnp MLP."""
    check_steps(steps, warmup)
    _check_config(dim, n_layers, hidden, batch)
    jax = require("jax")
    jnp = require("jax.numpy")
    jr = require("jax.random")
    optax = require("optax")
    distrax = require("distrax")

    def init_mlp(key, sizes):
        layers = []
        keys = jr.split(key, len(sizes) - 1)
        for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
            if i == len(sizes) - 2:  # zero-init output: each coupling starts at identity
                w = jnp.zeros((n_in, n_out))
            else:
                w = jr.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in)
            layers.append((w, jnp.zeros(n_out)))
        return layers

    def mlp(layers, x):
        for w, b in layers[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = layers[-1]
        return x @ w + b

    def bijector_fn(out):
        shift, log_scale = jnp.split(out, 2, axis=-1)
        return distrax.ScalarAffine(shift=shift, log_scale=log_scale)

    masks = [jnp.asarray(m) for m in half_masks(dim, n_layers)]

    def make_flow(params):
        layers = [
            distrax.MaskedCoupling(
                mask=mask,
                conditioner=lambda x, p=p: mlp(p, x),
                bijector=bijector_fn,
            )
            for mask, p in zip(masks, params, strict=True)
        ]
        base = distrax.MultivariateNormalDiag(jnp.zeros(dim), jnp.ones(dim))
        return distrax.Transformed(base, distrax.Chain(layers))

    def loss_fn(params, x):
        return -jnp.mean(make_flow(params).log_prob(x))

    key = jr.key(seed)
    init_key, train_key = jr.split(key)
    params = [init_mlp(k, [dim, hidden, hidden, 2 * dim]) for k in jr.split(init_key, n_layers)]
    optimizer = optax.adam(LR)
    data = jnp.asarray(make_data(dim, seed))
    step = _jax_ml_step(loss_fn, optimizer, batch, data.shape[0])
    state = (params, optimizer.init(params), train_key, data, jnp.zeros(()))
    first, seconds, final, first_loss, _ = _time_jax_loop(step, state, steps, warmup)
    return result(
        "distrax_realnvp",
        version("distrax"),
        steps,
        seconds,
        first,
        final,
        dim=dim,
        n_layers=n_layers,
        hidden=hidden,
        batch=batch,
        jax=version("jax"),
        first_loss=first_loss,
    )


# -------------------------------------------------------------------- torch peers
def _time_torch_ml(
    torch: Any, loss_fn: Any, parameters: Any, data: Any, steps: int, batch: int, warmup: int
) -> tuple[float, Stopwatch, float, float]:
    optimiser = torch.optim.Adam(parameters, lr=LR)
    n = data.shape[0]

    def train_step():
        x = data[torch.randint(n, (batch,))]
        loss = loss_fn(x)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss

    first = first_loss = None
    for i in range(max(warmup, 1)):
        with Stopwatch() as sw:
            loss = train_step()
        if i == 0:
            first, first_loss = sw.seconds, float(loss.item())
    with Stopwatch() as sw:
        for _ in range(steps):
            loss = train_step()
        final = float(loss.item())
    return first, sw, final, first_loss


def zuko_realnvp(
    steps: int,
    dim: int,
    n_layers: int,
    hidden: int,
    batch: int = 512,
    seed: int = 0,
    warmup: int = 5,
) -> dict[str, Any]:
    """zuko ``GeneralCouplingTransform`` stack (RealNVP) with half masks."""
    check_steps(steps, warmup)
    _check_config(dim, n_layers, hidden, batch)
    torch = setup_torch(seed)
    require("zuko")
    from zuko.distributions import DiagNormal
    from zuko.flows import Flow, GeneralCouplingTransform, UnconditionalDistribution

    transforms = [
        GeneralCouplingTransform(
            features=dim, mask=torch.as_tensor(m), hidden_features=(hidden, hidden)
        )
        for m in half_masks(dim, n_layers)
    ]
    base = UnconditionalDistribution(
        DiagNormal, loc=torch.zeros(dim), scale=torch.ones(dim), buffer=True
    )
    flow = Flow(transforms, base)

    def loss_fn(x):
        return -flow().log_prob(x).mean()

    data = torch.from_numpy(make_data(dim, seed))
    first, seconds, final, first_loss = _time_torch_ml(
        torch, loss_fn, flow.parameters(), data, steps, batch, warmup
    )
    return result(
        "zuko_realnvp",
        version("zuko"),
        steps,
        seconds,
        first,
        final,
        dim=dim,
        n_layers=n_layers,
        hidden=hidden,
        batch=batch,
        torch=version("torch"),
        first_loss=first_loss,
    )


def normflows_realnvp(
    steps: int,
    dim: int,
    n_layers: int,
    hidden: int,
    batch: int = 512,
    seed: int = 0,
    warmup: int = 5,
) -> dict[str, Any]:
    """normflows ``AffineCouplingBlock`` + ``nets.MLP`` with swap permutations."""
    check_steps(steps, warmup)
    _check_config(dim, n_layers, hidden, batch)
    torch = setup_torch(seed)
    nf = require("normflows")

    n_cond = (dim + 1) // 2  # torch.chunk(2) puts the larger half first
    n_trans = dim - n_cond
    flows = []
    for i in range(n_layers):
        net = nf.nets.MLP([n_cond, hidden, hidden, 2 * n_trans], init_zeros=True)
        flows.append(nf.flows.AffineCouplingBlock(net, scale=True, scale_map="exp"))
        if i < n_layers - 1:
            flows.append(nf.flows.Permute(dim, mode="swap"))
    base = nf.distributions.DiagGaussian(dim, trainable=False)
    model = nf.NormalizingFlow(q0=base, flows=flows)

    data = torch.from_numpy(make_data(dim, seed))
    first, seconds, final, first_loss = _time_torch_ml(
        torch, model.forward_kld, model.parameters(), data, steps, batch, warmup
    )
    return result(
        "normflows_realnvp",
        version("normflows"),
        steps,
        seconds,
        first,
        final,
        dim=dim,
        n_layers=n_layers,
        hidden=hidden,
        batch=batch,
        torch=version("torch"),
        first_loss=first_loss,
    )


REALNVP_PEERS = {
    "flowjax_realnvp": flowjax_realnvp,
    "distrax_realnvp": distrax_realnvp,
    "zuko_realnvp": zuko_realnvp,
    "normflows_realnvp": normflows_realnvp,
}

"""Planar-flow variational inference on the blog's ring energy, written with peers.

The reference is the blog post's PyTorch code (itself Edvard Hulten's planar flow):
``ring_density`` (an energy, i.e. minus the unnormalised log density), ``VariationalLoss``
(``mean(base_log_prob - (-ring_energy(zk)) - sum_log_det)``), ``PlanarTransform`` with
``get_u_hat`` and the ``1e-4`` inside the log-determinant, ``PlanarFlow`` with ``K``
layers, Adam (lr 6e-4) on batches of 128 draws from ``N(0, I)``.

Peers:

* :func:`torch_blog` -- the blog's code, written the way the blog writes it.
* :func:`normflows_planar` -- ``normflows.flows.Planar`` + ``NormalizingFlow.reverse_kld``.
* :func:`flowjax_planar` -- a flowjax ``Planar`` stack (``Scan`` by default, or an
  unrolled ``Chain``) under a fixed ``Normal`` base, the same reverse KL written by hand
  and one ``jax.jit``-ed optax Adam step called in a Python loop.
* :func:`flowjax_fit_helper` -- flowjax's own ``fit_to_key_based_loss`` + ``ElboLoss``.
* :func:`flowjax_planar_scan` -- flowjax's fastest path: the same model and loss, ``chunk``
  optax steps inside one jitted ``jax.lax.scan`` per call.

Answer quality (issue 17): :func:`torch_blog_full_run` trains the blog's code for the whole run
and evaluates its ELBO on many draws. The blog's ``PlanarTransform`` uses the raw ``u`` and
replaces it (in place) by ``u_hat`` only when ``w.u < -1``; normflows and flowjax use ``u_hat``
always (flowjax with ``m(x) = -1 + log(1 + softplus(x))``), so they train a different
parameterisation and are compared on speed only.
"""

from __future__ import annotations

import functools
from typing import Any

from benchmarks.peers._common import (
    Stopwatch,
    check_steps,
    require,
    result,
    setup_torch,
    version,
)

DIM = 2


# --------------------------------------------------------------------------- targets
def ring_energy_torch(z: Any) -> Any:
    """The blog's ``ring_density`` (an energy: lower is more probable), batch (B, 2)."""
    torch = require("torch")
    exp1 = torch.exp(-0.5 * ((z[:, 0] - 2) / 0.8) ** 2)
    exp2 = torch.exp(-0.5 * ((z[:, 0] + 2) / 0.8) ** 2)
    u = 0.5 * ((torch.norm(z, 2, dim=1) - 4) / 0.4) ** 2
    u = u - torch.log(exp1 + exp2 + 1e-6)
    return u


def ring_energy_jax(z: Any) -> Any:
    """Same energy in jax.numpy; works on one point (2,) or a batch (..., 2)."""
    jnp = require("jax.numpy")
    exp1 = jnp.exp(-0.5 * ((z[..., 0] - 2) / 0.8) ** 2)
    exp2 = jnp.exp(-0.5 * ((z[..., 0] + 2) / 0.8) ** 2)
    u = 0.5 * ((jnp.linalg.norm(z, axis=-1) - 4) / 0.4) ** 2
    return u - jnp.log(exp1 + exp2 + 1e-6)


# ------------------------------------------------------------- torch, as in the blog
@functools.cache
def _blog_classes() -> tuple[type, type, type]:
    """The blog's three modules, defined once torch is importable."""
    torch = require("torch")
    nn = torch.nn
    Tensor = torch.Tensor
    MultivariateNormal = torch.distributions.MultivariateNormal

    class VariationalLoss(nn.Module):
        def __init__(self, distribution):
            super().__init__()
            self.distr = distribution
            self.base_distr = MultivariateNormal(torch.zeros(2), torch.eye(2))

        def forward(self, z0: Tensor, z: Tensor, sum_log_det_J: float) -> float:
            base_log_prob = self.base_distr.log_prob(z0)
            target_density_log_prob = -self.distr(z)
            return (base_log_prob - target_density_log_prob - sum_log_det_J).mean()

    class PlanarTransform(nn.Module):
        """f(z) = z + u * h(dot(w.T, z) + b), Section 4.1 of Rezende & Mohamed (2015)."""

        def __init__(self, dim: int = 2):
            super().__init__()
            self.w = nn.Parameter(torch.randn(1, dim).normal_(0, 0.1))
            self.b = nn.Parameter(torch.randn(1).normal_(0, 0.1))
            self.u = nn.Parameter(torch.randn(1, dim).normal_(0, 0.1))

        def forward(self, z: Tensor) -> Tensor:
            if torch.mm(self.u, self.w.T) < -1:
                self.get_u_hat()

            return z + self.u * nn.Tanh()(torch.mm(z, self.w.T) + self.b)

        def log_det_J(self, z: Tensor) -> Tensor:
            if torch.mm(self.u, self.w.T) < -1:
                self.get_u_hat()
            a = torch.mm(z, self.w.T) + self.b
            psi = (1 - nn.Tanh()(a) ** 2) * self.w
            abs_det = (1 + torch.mm(self.u, psi.T)).abs()
            log_det = torch.log(1e-4 + abs_det)

            return log_det

        def get_u_hat(self) -> None:
            """Enforce w^T u >= -1 (sufficient for invertibility with tanh, App. A.1)."""
            wtu = torch.mm(self.u, self.w.T)
            m_wtu = -1 + torch.log(1 + torch.exp(wtu))
            self.u.data = self.u + (m_wtu - wtu) * self.w / torch.norm(self.w, p=2, dim=1) ** 2

    class PlanarFlow(nn.Module):
        def __init__(self, dim: int = 2, K: int = 6):
            super().__init__()
            self.layers = [PlanarTransform(dim) for _ in range(K)]
            self.model = nn.Sequential(*self.layers)

        def forward(self, z: Tensor) -> tuple[Tensor, float]:
            log_det_J = 0

            for layer in self.layers:
                log_det_J += layer.log_det_J(z)
                z = layer(z)

            return z, log_det_J

    return VariationalLoss, PlanarTransform, PlanarFlow


def _time_torch_loop(
    train_step: Any, steps: int, warmup: int
) -> tuple[float | None, Stopwatch, float, list[float]]:
    """first-call seconds, timed seconds, final loss, warm-up losses."""
    first = None
    warm_losses: list[float] = []
    for i in range(warmup):
        with Stopwatch() as sw:
            loss = train_step()
        if i == 0:
            first = sw.seconds
        warm_losses.append(float(loss.item()))
    with Stopwatch() as sw:
        for _ in range(steps):
            loss = train_step()
        final = float(loss.item())
    return first, sw, final, warm_losses


def _blog_training(K: int, batch: int, lr: float, seed: int) -> tuple[Any, Any, Any, Any]:
    """The blog's model, loss and one training step (its own code): ``(torch, model, bound,
    train_step)``."""
    torch = setup_torch(seed)
    VariationalLoss, _, PlanarFlow = _blog_classes()
    model = PlanarFlow(DIM, K=K)
    bound = VariationalLoss(ring_energy_torch)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    def train_step():
        # Get batch from N(0,I).
        z0 = torch.zeros(size=(batch, 2)).normal_(mean=0, std=1)
        # Pass batch through flow.
        zk, log_jacobians = model(z0)
        # Compute loss under target distribution.
        loss = bound(z0, zk, log_jacobians)

        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss

    return torch, model, bound, train_step


def torch_blog(
    steps: int,
    K: int = 32,
    batch: int = 128,
    lr: float = 6e-4,
    seed: int = 0,
    warmup: int = 10,
) -> dict[str, Any]:
    """The blog's PyTorch planar flow (nn.Module per layer, Python loop over layers)."""
    check_steps(steps, warmup)
    _, _, _, train_step = _blog_training(K, batch, lr, seed)
    first, seconds, final, warm = _time_torch_loop(train_step, steps, warmup)
    return result(
        "torch_blog",
        version("torch"),
        steps,
        seconds,
        first,
        final,
        K=K,
        batch=batch,
        first_loss=warm[0] if warm else None,
    )


def torch_blog_full_run(
    steps: int = 20000,
    K: int = 32,
    batch: int = 128,
    lr: float = 6e-4,
    seed: int = 0,
    eval_draws: int = 50000,
) -> dict[str, Any]:
    """The blog's whole run (``steps`` Adam steps, wall time) and the ELBO it reaches, estimated
    on ``eval_draws`` base draws with the blog's own loss (``-loss``; its ``1e-4`` inside the
    log-determinant changes the value by less than ``K * 1e-4`` nats)."""
    check_steps(steps, 0)
    torch, model, bound, train_step = _blog_training(K, batch, lr, seed)
    _, sw, final, _ = _time_torch_loop(train_step, steps, 0)
    with torch.no_grad():
        z0 = torch.zeros(size=(eval_draws, 2)).normal_(mean=0, std=1)
        zk, log_jacobians = model(z0)
        elbo = -float(bound(z0, zk, log_jacobians).item())
    return result(
        "torch_blog_full_run",
        version("torch"),
        steps,
        sw,
        None,
        final,
        K=K,
        batch=batch,
        seed=seed,
        elbo=elbo,
        eval_draws=eval_draws,
        rule="project (raw u; u_hat in place where w.u < -1)",
    )


# ------------------------------------------------------------------------ normflows
def normflows_planar(
    steps: int,
    K: int = 32,
    batch: int = 128,
    lr: float = 6e-4,
    seed: int = 0,
    warmup: int = 10,
) -> dict[str, Any]:
    """normflows' ``Planar`` flows and its ``reverse_kld`` objective on the ring energy."""
    check_steps(steps, warmup)
    torch = setup_torch(seed)
    nf = require("normflows")

    class RingTarget(nf.distributions.Target):
        def __init__(self):
            super().__init__()
            self.n_dims = DIM
            self.max_log_prob = 0.0

        def log_prob(self, z):
            return -ring_energy_torch(z)

    base = nf.distributions.DiagGaussian(DIM, trainable=False)
    flows = [nf.flows.Planar((DIM,)) for _ in range(K)]
    model = nf.NormalizingFlow(q0=base, flows=flows, p=RingTarget())
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    def train_step():
        loss = model.reverse_kld(num_samples=batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss

    first, seconds, final, warm = _time_torch_loop(train_step, steps, warmup)
    return result(
        "normflows_planar",
        version("normflows"),
        steps,
        seconds,
        first,
        final,
        K=K,
        batch=batch,
        torch=version("torch"),
        first_loss=warm[0] if warm else None,
    )


# -------------------------------------------------------------------------- flowjax
def _flowjax_planar_dist(key: Any, K: int, stack: str) -> Any:
    """A flowjax ``Transformed`` with a frozen N(0, I) base and K ``Planar`` layers.

    No permutations between layers, as in the blog. ``stack="scan"`` vmaps the layer
    construction and runs them with ``Scan`` (one compiled layer body); ``"chain"``
    unrolls them in a ``Chain``.
    """
    eqx = require("equinox")
    jnp = require("jax.numpy")
    jr = require("jax.random")
    paramax = require("paramax")
    require("flowjax")
    from flowjax.bijections import Chain, Planar, Scan
    from flowjax.distributions import Normal, Transformed

    keys = jr.split(key, K)
    if stack == "scan":
        bijection = Scan(eqx.filter_vmap(lambda k: Planar(k, dim=DIM))(keys))
    elif stack == "chain":
        bijection = Chain([Planar(k, dim=DIM) for k in keys])
    else:
        raise ValueError(f"stack must be 'scan' or 'chain', got {stack!r}")
    dist = Transformed(Normal(jnp.zeros(DIM)), bijection)
    # The blog's base distribution is fixed: freeze it (flowjax's documented idiom).
    return eqx.tree_at(lambda d: d.base_dist, dist, replace_fn=paramax.non_trainable)


def _is_non_trainable(leaf: Any) -> bool:
    paramax = require("paramax")
    return isinstance(leaf, paramax.NonTrainable)


def flowjax_planar(
    steps: int,
    K: int = 32,
    batch: int = 128,
    lr: float = 6e-4,
    seed: int = 0,
    warmup: int = 10,
    stack: str = "scan",
) -> dict[str, Any]:
    """flowjax's fastest path: hand-written reverse KL, one jitted optax step in a loop."""
    check_steps(steps, warmup)
    jax = require("jax")
    jnp = require("jax.numpy")
    jr = require("jax.random")
    eqx = require("equinox")
    optax = require("optax")

    key = jr.key(seed)
    init_key, train_key = jr.split(key)
    dist = _flowjax_planar_dist(init_key, K, stack)
    params, static = eqx.partition(dist, eqx.is_inexact_array, is_leaf=_is_non_trainable)
    optimizer = optax.adam(lr)
    opt_state = optimizer.init(params)

    def loss_fn(params, key):
        flow = eqx.combine(params, static)
        # zk = f(z0), log q(zk) = base_log_prob(z0) - sum_log_det
        zk, log_q = flow.sample_and_log_prob(key, (batch,))
        return jnp.mean(log_q + ring_energy_jax(zk))

    @jax.jit
    def train_step(params, opt_state, key):
        key, sub = jr.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(params, sub)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, key, loss

    first = None
    first_loss = None
    for i in range(max(warmup, 1)):
        with Stopwatch() as sw:
            params, opt_state, train_key, loss = train_step(params, opt_state, train_key)
            loss.block_until_ready()
        if i == 0:
            first, first_loss = sw.seconds, float(loss)
    with Stopwatch() as sw:
        for _ in range(steps):
            params, opt_state, train_key, loss = train_step(params, opt_state, train_key)
        jax.block_until_ready((params, opt_state, loss))
    return result(
        "flowjax_planar",
        version("flowjax"),
        steps,
        sw,
        first,
        float(loss),
        K=K,
        batch=batch,
        stack=stack,
        jax=version("jax"),
        first_loss=first_loss,
    )


def flowjax_fit_helper(
    steps: int,
    K: int = 32,
    batch: int = 128,
    lr: float = 6e-4,
    seed: int = 0,
    warmup: int = 10,
    stack: str = "scan",
) -> dict[str, Any]:
    """flowjax's own VI loop: ``fit_to_key_based_loss`` with ``ElboLoss``.

    The warm-up call and the timed call share the optimizer and loss objects, so the
    timed call reuses the compiled step (the helper's ``filter_jit`` keys on them).
    """
    check_steps(steps, warmup)
    jax = require("jax")
    jr = require("jax.random")
    require("flowjax")
    from flowjax.train import fit_to_key_based_loss
    from flowjax.train.losses import ElboLoss

    optax = require("optax")

    key = jr.key(seed)
    init_key, warm_key, train_key = jr.split(key, 3)
    dist = _flowjax_planar_dist(init_key, K, stack)
    optimizer = optax.adam(lr)
    loss_fn = ElboLoss(lambda z: -ring_energy_jax(z), num_samples=batch)

    with Stopwatch() as first:
        dist, warm_losses = fit_to_key_based_loss(
            warm_key,
            dist,
            loss_fn=loss_fn,
            steps=max(warmup, 1),
            optimizer=optimizer,
            show_progress=False,
        )
    with Stopwatch() as sw:
        dist, losses = fit_to_key_based_loss(
            train_key,
            dist,
            loss_fn=loss_fn,
            steps=steps,
            optimizer=optimizer,
            show_progress=False,
        )
        jax.block_until_ready(dist)
    return result(
        "flowjax_fit_helper",
        version("flowjax"),
        steps,
        sw,
        first.seconds,
        losses[-1],
        K=K,
        batch=batch,
        stack=stack,
        jax=version("jax"),
        first_loss=warm_losses[0],
        note="compile_seconds is the whole warm-up fit call (compile + warmup steps)",
    )


def flowjax_planar_scan(
    steps: int,
    K: int = 32,
    batch: int = 128,
    lr: float = 6e-4,
    seed: int = 0,
    warmup: int = 10,
    stack: str = "scan",
    chunk: int = 500,
) -> dict[str, Any]:
    """flowjax's fastest path: ``chunk`` optax steps in one jitted ``lax.scan`` per call.

    Exactly ``steps`` steps are timed: full chunks, then one shorter scan for the remainder
    (both compiled during the warm-up, which runs each once and is not timed). ``warmup`` is
    accepted for the common signature; the warm-up is one call of each compiled scan.
    """
    check_steps(steps, warmup)
    jax = require("jax")
    jnp = require("jax.numpy")
    jr = require("jax.random")
    eqx = require("equinox")
    optax = require("optax")

    key = jr.key(seed)
    init_key, train_key = jr.split(key)
    dist = _flowjax_planar_dist(init_key, K, stack)
    params, static = eqx.partition(dist, eqx.is_inexact_array, is_leaf=_is_non_trainable)
    optimizer = optax.adam(lr)
    opt_state = optimizer.init(params)

    def loss_fn(params, key):
        flow = eqx.combine(params, static)
        zk, log_q = flow.sample_and_log_prob(key, (batch,))
        return jnp.mean(log_q + ring_energy_jax(zk))

    def one_step(carry, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @functools.partial(jax.jit, static_argnums=3)
    def run_scan(params, opt_state, key, n):
        (params, opt_state), losses = jax.lax.scan(one_step, (params, opt_state), jr.split(key, n))
        return params, opt_state, losses

    chunk = min(int(chunk), steps)
    full, rest = divmod(steps, chunk)
    sizes = [chunk] * full + ([rest] if rest else [])
    with Stopwatch() as first:
        warm = run_scan(params, opt_state, jr.fold_in(train_key, 10**6), chunk)
        jax.block_until_ready(warm)
    if rest:
        jax.block_until_ready(run_scan(params, opt_state, jr.fold_in(train_key, 10**6 + 1), rest))
    params, opt_state = warm[0], warm[1]
    first_loss = float(warm[2][0])
    with Stopwatch() as sw:
        for i, n in enumerate(sizes):
            params, opt_state, losses = run_scan(params, opt_state, jr.fold_in(train_key, i), n)
        jax.block_until_ready((params, opt_state, losses))
    return result(
        "flowjax_planar_scan",
        version("flowjax"),
        steps,
        sw,
        first.seconds,
        float(losses[-1]),
        K=K,
        batch=batch,
        stack=stack,
        chunk=chunk,
        jax=version("jax"),
        first_loss=first_loss,
        note="compile_seconds is the first scan call (compile + one chunk of steps)",
    )


PLANAR_PEERS = {
    "torch_blog": torch_blog,
    "normflows_planar": normflows_planar,
    "flowjax_planar": flowjax_planar,
    "flowjax_fit_helper": flowjax_fit_helper,
    "flowjax_planar_scan": flowjax_planar_scan,
}

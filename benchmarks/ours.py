"""Our side of the speed benchmarks: the same training steps as the peers, with flowjax_thesis.

Timing excludes compilation (measured separately as ``compile_seconds``) and uses the engine's
own chunked runner (``lax.scan`` over ``chunk`` steps per host call), which is how ``fit`` runs.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
import optax

from benchmarks.peers._common import Stopwatch, result, version
from benchmarks.peers.planar_vi import ring_energy_jax
from benchmarks.peers.realnvp_density import make_data
from flowjax_thesis.flows import planar_flow, realnvp_flow
from flowjax_thesis.grid import log_normalizer_grid
from flowjax_thesis.objectives import elbo, max_likelihood_loss, reverse_kl_loss
from flowjax_thesis.train import fit_vi, gradient_transition
from flowjax_thesis.train.fit import make_chunk_runner


def ring_log_density(z):
    """The peers' ring energy, negated: the same arithmetic as theirs."""
    return -ring_energy_jax(z)


def time_runner(runner, state, data, key, steps: int, chunk: int):
    """Times ``runner`` (the engine's ``(state, data, key, start, n) -> (state, metrics,
    finite)``): one warm-up call of ``chunk`` steps (compile + run), then ``steps`` timed steps in
    calls of ``chunk``. Returns (state, last metrics, timed steps, the timed Stopwatch, the
    warm-up seconds)."""
    with Stopwatch() as first:
        state, metrics, _ = runner(state, data, key, np.int32(0), chunk)
        jax.block_until_ready(state)
    done = 0
    with Stopwatch() as sw:
        while done < steps:
            state, metrics, _ = runner(state, data, key, np.int32(chunk + done), chunk)
            done += chunk
        jax.block_until_ready((state, metrics))
    return state, metrics, done, sw, first.seconds


def _time_chunks(transition, state, data, batch, steps, chunk, seed):
    n_data = None if data is None else len(data)
    runner = make_chunk_runner(transition, batch if data is not None else None, n_data)
    key = np.asarray(jax.random.PRNGKey(seed))
    _, metrics, done, sw, first = time_runner(runner, state, data, key, steps, chunk)
    return done, sw, first, float(np.asarray(metrics["loss"])[-1])


def planar(
    steps: int = 2000,
    K: int = 32,
    batch: int = 128,
    lr: float = 6e-4,
    seed: int = 0,
    chunk: int = 500,
    unroll: int = 1,
    constraint: str = "project",
) -> dict[str, Any]:
    """The blog's planar VI step (K layers, batch 128, Adam 6e-4) on the ring energy, with the
    blog's constraint on u by default (``constraint="project"``; issue 17)."""
    flow = planar_flow(2, K, unroll=unroll, constraint=constraint)
    transition = gradient_transition(reverse_kl_loss(flow, ring_log_density, batch), optax.adam(lr))
    state = transition.init(flow.init(jax.random.PRNGKey(seed)))
    done, sw, compile_s, loss = _time_chunks(transition, state, None, None, steps, chunk, seed)
    return result(
        "flowjax_thesis_planar",
        version("flowjax_thesis"),
        done,
        sw,
        compile_s,
        loss,
        K=K,
        batch=batch,
        chunk=chunk,
        unroll=unroll,
        constraint=constraint,
        jax=version("jax"),
    )


def planar_full_run(
    steps: int = 20000,
    K: int = 32,
    batch: int = 128,
    lr: float = 6e-4,
    seed: int = 0,
    constraint: str = "project",
    eval_draws: int = 50000,
) -> dict[str, Any]:
    """The whole blog run through the public API (``fit_vi``), compile included, and the ELBO
    it reaches on ``eval_draws`` draws (with the peers' ring energy)."""
    flow = planar_flow(2, K, constraint=constraint)
    t0 = time.perf_counter()
    params, fit_result = fit_vi(
        flow,
        ring_log_density,
        key=jax.random.PRNGKey(seed),
        steps=steps,
        num_samples=batch,
        optimizer=optax.adam(lr),
        chunk_size=1000,
        progress=False,
    )
    jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 10**6)
    value = jax.jit(lambda p: elbo(flow, p, key, ring_log_density, eval_draws))(params)
    return result(
        "flowjax_thesis_fit_vi_total",
        version("flowjax_thesis"),
        steps,
        seconds,
        None,
        fit_result.history[-1]["loss"],
        K=K,
        batch=batch,
        seed=seed,
        constraint=constraint,
        elbo=float(value),
        eval_draws=eval_draws,
        includes_compile=True,
    )


def ring_log_z(lim: float = 7.0, n: int = 1000) -> float:
    """log Z of the peers' ring energy by grid integration (the ELBO's upper bound)."""
    return float(log_normalizer_grid(ring_log_density, lim, n))


def realnvp(
    steps: int = 300,
    dim: int = 2,
    n_layers: int = 8,
    hidden: int = 64,
    batch: int = 512,
    seed: int = 0,
    chunk: int = 100,
    unroll: int = 1,
) -> dict[str, Any]:
    """RealNVP maximum-likelihood steps with the peers' architecture (two ReLU hidden layers)."""
    data = make_data(dim, seed)
    flow = realnvp_flow(dim, n_layers, hidden=(hidden, hidden), activation="relu", unroll=unroll)
    transition = gradient_transition(max_likelihood_loss(flow), optax.adam(1e-3))
    state = transition.init(flow.init(jax.random.PRNGKey(seed)))
    done, sw, compile_s, loss = _time_chunks(transition, state, data, batch, steps, chunk, seed)
    return result(
        "flowjax_thesis_realnvp",
        version("flowjax_thesis"),
        done,
        sw,
        compile_s,
        loss,
        dim=dim,
        n_layers=n_layers,
        hidden=hidden,
        batch=batch,
        chunk=chunk,
        unroll=unroll,
    )


def compile_time(depths: tuple[int, ...] = (4, 32), batch: int = 128) -> dict[str, Any]:
    """Compile time of one jitted planar-VI training step at several depths (scan over layers)."""
    out = {}
    for K in depths:
        flow = planar_flow(2, K)
        transition = gradient_transition(
            reverse_kl_loss(flow, ring_log_density, batch), optax.adam(1e-3)
        )
        state = transition.init(flow.init(jax.random.PRNGKey(0)))
        step = jax.jit(transition.step)
        t0 = time.perf_counter()
        step.lower(state, None, jax.random.PRNGKey(1)).compile()
        out[f"K{K}"] = time.perf_counter() - t0
    return {
        "peer": "flowjax_thesis_compile",
        "compile_seconds": out,
        "ratio_deepest_to_shallowest": out[f"K{max(depths)}"] / out[f"K{min(depths)}"],
    }

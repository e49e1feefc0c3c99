"""GBNF speed: C components in one vmapped call vs C separate single-component calls.

``gbnf_vmap(**settings) -> dict``: times ``log_prob`` and ``sample`` of a C=8 boosted RealNVP
(all components evaluated by one ``vmap`` inside one jitted call) against C jitted
single-component calls made one after another (what a Python loop over components costs), and
reports ``ratio = separate / vmapped`` (> 1 means the vmapped call is faster).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def _best_of(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def gbnf_vmap(
    components: int = 8,
    layers: int = 4,
    hidden: int = 64,
    dim: int = 2,
    batch: int = 1024,
    repeats: int = 20,
    seed: int = 0,
) -> dict:
    from flowjax_thesis.models.gbnf import GBNF, component_flow

    gbnf = GBNF(component_flow("realnvp", dim, layers, (hidden,)), components)
    params = gbnf.init(jax.random.PRNGKey(seed))
    for i in range(components):
        params = gbnf.set_component_weight(params, i, 1.0 / (i + 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, dim))
    key = jax.random.PRNGKey(2)
    flow = gbnf.flow
    rows = [gbnf.component(params, i) for i in range(components)]

    vm_logp = jax.jit(gbnf.log_prob)
    one_logp = jax.jit(flow.log_prob)
    vm_sample = jax.jit(lambda p, k: gbnf.sample(p, k, batch))
    n_each = batch // components
    one_sample = jax.jit(lambda p, k: flow.sample(p, k, n_each))

    t_vm_logp = _best_of(lambda: vm_logp(params, x), repeats)
    t_sep_logp = _best_of(lambda: [one_logp(r, x) for r in rows], repeats)
    t_vm_sample = _best_of(lambda: vm_sample(params, key), repeats)
    t_sep_sample = _best_of(
        lambda: [one_sample(r, jax.random.fold_in(key, i)) for i, r in enumerate(rows)], repeats
    )
    return {
        "settings": dict(components=components, layers=layers, hidden=hidden, dim=dim, batch=batch),
        "log_prob_vmapped_s": t_vm_logp,
        "log_prob_separate_s": t_sep_logp,
        "log_prob_ratio_separate_over_vmapped": t_sep_logp / t_vm_logp,
        "sample_vmapped_s": t_vm_sample,
        "sample_separate_s": t_sep_sample,
        "sample_ratio_separate_over_vmapped": t_sep_sample / t_vm_sample,
        "note": "separate log_prob: each of the C components on the whole batch (the mixture "
        "needs every component at every point); separate sample: batch/C draws per component. "
        "The vmapped sample pushes the whole batch through every component and keeps the "
        "chosen rows (C times the flops of the separate calls, one dispatch).",
        "device": str(jnp.zeros(()).devices()),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(gbnf_vmap(), indent=2))

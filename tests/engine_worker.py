"""Trains a small flow and saves its final parameters; run as a subprocess by test_engine.py.

    python tests/engine_worker.py OUT.npz [--mesh]

With ``JAX_COORDINATOR_ADDRESS`` etc. set it joins a multi-process run first. The data, key and
settings are fixed, so every configuration must end with the same parameters.
"""

import sys

from flowjax_thesis.train import maybe_initialize_distributed

distributed = maybe_initialize_distributed()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from flowjax_thesis.flows import realnvp_flow  # noqa: E402
from flowjax_thesis.objectives import max_likelihood_loss  # noqa: E402
from flowjax_thesis.train import data_mesh, fit, gradient_transition  # noqa: E402
from flowjax_thesis.train.sharding import to_host  # noqa: E402


def main(out: str, use_mesh: bool) -> None:
    data = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32) * [1.0, 0.5] + 1.0
    flow = realnvp_flow(2, 2, hidden=(16,))
    transition = gradient_transition(max_likelihood_loss(flow), optax.adam(1e-2))
    state = transition.init(flow.init(jax.random.PRNGKey(0)))
    mesh = data_mesh() if use_mesh else None
    result = fit(
        transition,
        state,
        data,
        key=jax.random.PRNGKey(1),
        steps=30,
        batch_size=64,
        chunk_size=10,
        progress=False,
        mesh=mesh,
    )
    leaves = [np.asarray(x) for x in jax.tree.leaves(to_host(result.state.params))]
    if jax.process_index() == 0:
        np.savez(out, *leaves, devices=len(jax.devices()), processes=jax.process_count())


if __name__ == "__main__":
    main(sys.argv[1], "--mesh" in sys.argv[2:])

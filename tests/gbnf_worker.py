"""Boosts a small GBNF on fixed data and saves its final params; run by test_gbnf.py.

    python tests/gbnf_worker.py OUT.npz [--mesh]

Two components (the second trained against the first on the boosted objective) and its weight
fitted by Algorithm 1 (projected SGD on held-out minibatches), so both transitions of a density
boosting run go through the engine on the mesh when ``--mesh`` is given.
"""

import sys

import jax
import numpy as np
import optax

from flowjax_thesis.families import component_flow
from flowjax_thesis.models.gbnf import GBNF, boost_density
from flowjax_thesis.train import data_mesh


def main(out: str, use_mesh: bool) -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[-2.0, 0.0], [2.0, 0.5]], np.float32)
    data = centres[rng.integers(0, 2, 384)] + 0.4 * rng.normal(size=(384, 2)).astype(np.float32)
    gbnf = GBNF(component_flow("realnvp", 2, 2, (8,)), 2, alternate=True)
    params, info = boost_density(
        gbnf,
        data[:256],
        val_data=data[256:],
        key=jax.random.PRNGKey(1),
        steps=20,
        batch_size=64,
        optimizer=optax.adam(1e-2),
        rho_method="sgd",
        rho_steps=10,
        mesh=data_mesh() if use_mesh else None,
    )
    leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
    np.savez(out, *leaves, devices=len(jax.devices()), rho=info["stages"][1]["rho"])


if __name__ == "__main__":
    main(sys.argv[1], "--mesh" in sys.argv[2:])

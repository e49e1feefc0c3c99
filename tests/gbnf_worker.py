"""Boosts a small GBNF on fixed data on one device (no mesh) and on a 4-device mesh and saves
both results; run by test_gbnf.py in one process with 4 simulated devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``).

    python tests/gbnf_worker.py OUT.npz

Two components (the second trained against the first on the boosted objective) and its weight
fitted by Algorithm 1 (projected SGD on held-out minibatches), so both transitions of a density
boosting run go through the engine on the mesh.
"""

import sys

import jax
import numpy as np
import optax

from flowjax_thesis.families import component_flow
from flowjax_thesis.models.gbnf import GBNF, boost_density
from flowjax_thesis.train import data_mesh


def boost(mesh):
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
        mesh=mesh,
    )
    return [np.asarray(x) for x in jax.tree.leaves(params)], info["stages"][1]["rho"]


def main(out: str) -> None:
    devices = jax.devices()
    assert len(devices) == 4, f"run with 4 simulated devices, got {len(devices)}"
    arrays = {}
    for name, mesh in (("one", None), ("four", data_mesh(devices))):
        leaves, rho = boost(mesh)
        arrays[f"{name}_rho"] = rho
        arrays.update({f"{name}_{i}": a for i, a in enumerate(leaves)})
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
